"""``RedisClusterServers``: a throw-away Redis Cluster, and the CLUSTER NODES parsing it needs."""

from __future__ import annotations

import contextlib
import subprocess
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.cluster
import redis.exceptions
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from redis_checkpoint.client import reply_text
from redis_checkpoint.testing._process import (
    HOST,
    QUICK_SYNC,
    NotReady,
    ProcessState,
    Started,
    cleanup_all,
    poll,
)
from redis_checkpoint.testing.binaries import find_redis_cli
from redis_checkpoint.testing.ports import free_cluster_port
from redis_checkpoint.testing.server import RedisServer, describe_each, server_on_port

__all__ = ["RedisClusterServers"]

_C = TypeVar("_C", bound="RedisClusterServers")


def _fields(text: str) -> dict[str, str]:
    """``key:value`` lines (CLUSTER INFO) as a dict."""
    result = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            result[key.strip()] = value.strip()
    return result


_SlotRanges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _ClusterEntry:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: _SlotRanges

    @property
    def primary(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool({"fail", "fail?"} & self.flags)

    def serves(self, lo: int, hi: int) -> bool:
        # CLUSTER NODES merges contiguous slots, so a block one node owns is in one range.
        return any(a <= lo and hi <= b for a, b in self.slots)


def _parse_cluster_nodes(text: str) -> list[_ClusterEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id, address, flags, master = fields[:4]
        # ip:port@cport[,hostname]; ":0@0" for a node without an address yet.
        port_text = address.split(",", 1)[0].split("@", 1)[0].rpartition(":")[2]
        slots = []
        for item in fields[8:]:
            if item.startswith("["):
                continue  # a slot being migrated or imported
            lo, _, hi = item.partition("-")
            slots.append((int(lo), int(hi or lo)))
        entries.append(
            _ClusterEntry(
                node_id,
                int(port_text or 0),
                frozenset(flags.split(",")),
                None if master == "-" else master,
                tuple(slots),
            )
        )
    return entries


def _cluster_nodes(client: Any) -> list[_ClusterEntry]:
    return _parse_cluster_nodes(reply_text(client.execute_command("CLUSTER", "NODES")))


class RedisClusterServers(Started):
    """A Redis Cluster of 3 primaries on 127.0.0.1, each with ``replicas`` replicas.

    Built with ``redis-cli --cluster create``. Roles are not fixed: after a
    failover a replica serves its old primary's slots, so ``primaries()``,
    ``replicas_of()`` and ``primary_for_key()`` ask a live node each time.
    ``kill()``/``restart()``/``wait_failover()`` drive crash drills. A
    finalizer kills every node if the object is dropped or Python exits.
    """

    size = 3  # primaries

    def __init__(
        self,
        replicas: int = 0,
        *,
        node_timeout_ms: int = 5000,
        args: Sequence[str] = (),
        appendonly: bool = False,
        binary: str | None = None,
        cli: str | None = None,
    ) -> None:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, not {replicas}")
        self.replicas = replicas
        self.args: tuple[str, ...] = tuple(args)
        self.appendonly = appendonly
        self._binary = binary
        self._cli = cli
        self._node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisServer] = []
        # The slots each killed primary served, for wait_failover().
        self._killed_slots: dict[int, _SlotRanges] = {}
        self._states: list[ProcessState] = []
        self._finalizer = weakref.finalize(self, cleanup_all, self._states)

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        if not self.nodes:
            raise RuntimeError("cluster not started")
        return f"redis+cluster://{HOST}:{self.nodes[0].port}"

    @property
    def startup_nodes(self) -> list[redis.cluster.ClusterNode]:
        return [
            redis.cluster.ClusterNode(HOST, port)  # type: ignore[no-untyped-call]
            for port in self.ports
        ]

    @property
    def running(self) -> bool:
        return bool(self.nodes) and all(node.running for node in self.nodes)

    # --- lifecycle --------------------------------------------------------------------

    def start(self: _C) -> _C:
        """Start the nodes, assign all slots, attach the replicas and wait until settled.

        Settled: every node reports cluster_state:ok, all nodes agree on every
        node's role and slots, and every replica's link is up with its initial
        sync done. Calling it again restarts any node that is down.
        """
        if self.nodes:
            for node in self.nodes:
                if not node.running:
                    node.start()
            self._wait_settled(30.0, "the cluster did not settle")
            return self
        cli = self._cli or find_redis_cli()
        if cli is None:
            raise RuntimeError(
                "redis-cli not found: install it (apt-get install redis-server) "
                "or set REDIS_CLI_BIN"
            )
        taken: set[int] = set()
        try:
            for _ in range(self.size * (1 + self.replicas)):
                port = free_cluster_port(taken)
                taken.update((port, port + 10000))
                node = RedisServer(
                    port,
                    binary=self._binary,
                    appendonly=self.appendonly,
                    args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(self._node_timeout_ms),
                        *QUICK_SYNC,
                        *self.args,
                    ],
                )  # fmt: skip
                self.nodes.append(node)
                self._states.append(node._state)
                node.start()
            self._create(cli)
            self._wait_settled(30.0, "the new cluster did not settle")
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self, cli: str) -> None:
        cmd = [cli, "--cluster", "create"]
        cmd += [f"{HOST}:{port}" for port in self.ports]
        cmd += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def stop(self) -> None:
        """Stop every node and remove their directories."""
        for node in self.nodes:
            node.close()
        self.nodes = []
        self._states.clear()
        self._killed_slots.clear()

    # --- topology ---------------------------------------------------------------------

    def _node_at(self, port: int) -> RedisServer:
        return server_on_port(self.nodes, port, "cluster")

    def _view(self, exclude: RedisServer | None = None) -> list[_ClusterEntry]:
        """CLUSTER NODES as the first live node answering sees it."""
        errors = []
        for node in self.nodes:
            if node is exclude or not node.running:
                continue
            try:
                with node.client() as client:
                    return _cluster_nodes(client)
            except redis.exceptions.RedisError as exc:
                errors.append(f"{node.port}: {exc}")
        raise RuntimeError(f"no live cluster node answered CLUSTER NODES ({errors})")

    def primaries(self) -> list[RedisServer]:
        """The nodes currently serving slots, in slot order (a live node's view).

        A killed primary stays listed until a replica has taken over its slots.
        """
        masters = [e for e in self._view() if e.primary and e.slots]
        masters.sort(key=lambda e: e.slots[0][0])
        return [self._node_at(e.port) for e in masters]

    def replicas_of(self, node: RedisServer) -> list[RedisServer]:
        """The nodes that replicate ``node`` now, in port order (a live node's view)."""
        entries = self._view()
        ids = {e.node_id for e in entries if e.port == node.port}
        return sorted(
            (self._node_at(e.port) for e in entries if e.master_id in ids),
            key=lambda n: n.port,
        )

    def primary_for_key(self, key: str | bytes) -> RedisServer:
        """The node that serves ``key``'s hash slot now (CLUSTER KEYSLOT + CLUSTER NODES)."""
        errors = []
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with node.client() as client:
                    slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                    entries = _cluster_nodes(client)
            except redis.exceptions.RedisError as exc:
                errors.append(f"{node.port}: {exc}")
                continue
            for entry in entries:
                if entry.primary and entry.serves(slot, slot):
                    return self._node_at(entry.port)
            raise RuntimeError(f"slot {slot} of {key!r} is served by no node:\n{self._describe()}")
        raise RuntimeError(f"no live cluster node answered ({errors})")

    # --- drills -----------------------------------------------------------------------

    def kill(self, node: RedisServer) -> None:
        """SIGKILL ``node`` (a crash); its directory and nodes.conf are kept."""
        with contextlib.suppress(redis.exceptions.RedisError, RuntimeError):
            # The node's own view of its slots is authoritative while it runs.
            mine = [e for e in self._view() if e.port == node.port]
            if mine and mine[0].primary and mine[0].slots:
                self._killed_slots[node.port] = mine[0].slots
        node.kill()

    def restart(self, node: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Start ``node`` again on its port and directory; it rejoins as the cluster decides.

        Returns once it answers and the cluster has settled again (a former
        primary whose slots moved comes back as a replica and resyncs).
        """
        if node.running:
            node.stop(keep_dir=True)
        node.start()
        self._killed_slots.pop(node.port, None)
        self._wait_settled(timeout, f"the cluster did not settle after restarting {node.port}")
        return node

    def wait_failover(self, dead: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Wait until another node serves the slots ``dead`` served; return that node.

        Also waits until the cluster has settled: cluster_state:ok on every
        live node, one agreed view of the roles, replicas in sync.
        """
        if dead.running:
            raise ValueError(f"node {dead.port} is still running: kill() it first")
        slots = self._killed_slots.get(dead.port)
        if slots is None:
            mine = [e for e in self._view(exclude=dead) if e.port == dead.port]
            slots = mine[0].slots if mine and mine[0].primary else ()
        if not slots:
            raise ValueError(
                f"node {dead.port} served no slots (it was a replica, or was not "
                "killed through kill() and has already been replaced)"
            )

        def taken_over() -> RedisServer:
            owners = set()
            for entries in self._check_settled():
                for lo, hi in slots:
                    owner = [e.port for e in entries if e.primary and e.serves(lo, hi)]
                    owners.add(owner[0] if owner else None)
            if len(owners) != 1 or None in owners or dead.port in owners:
                raise NotReady(f"the slots of {dead.port} are served by {sorted(map(str, owners))}")
            port = owners.pop()
            assert port is not None
            return self._node_at(port)

        new = poll(
            taken_over,
            timeout,
            f"no replica took over the slots of killed node {dead.port}",
            self._describe,
        )
        self._killed_slots.pop(dead.port, None)
        return new

    # --- settling ---------------------------------------------------------------------

    def _wait_settled(self, timeout: float, what: str) -> None:
        poll(self._check_settled, timeout, what, self._describe)

    def _check_settled(self) -> list[list[_ClusterEntry]]:
        """Every live node's CLUSTER NODES, or NotReady if the cluster has not settled."""
        live = [node for node in self.nodes if node.running]
        if not live:
            raise NotReady("no node is running")
        live_ports = {node.port for node in live}
        all_ports = {node.port for node in self.nodes}
        views = []
        agreed: dict[int, tuple[bool, int | None, _SlotRanges]] | None = None
        for node in live:
            with node.client() as client:
                info = _fields(reply_text(client.execute_command("CLUSTER", "INFO")))
                entries = _cluster_nodes(client)
            state = info.get("cluster_state")
            if state != "ok":
                raise NotReady(f"node {node.port} reports cluster_state:{state}")
            known = {e.port for e in entries if not {"handshake", "noaddr"} & e.flags}
            if known != all_ports:
                raise NotReady(f"node {node.port} knows {sorted(known)}, not {sorted(all_ports)}")
            port_of = {e.node_id: e.port for e in entries}
            roles = {}
            for e in entries:
                if e.port not in live_ports:
                    continue
                if e.failing:
                    raise NotReady(f"node {node.port} flags {e.port} {','.join(sorted(e.flags))}")
                master = port_of.get(e.master_id) if e.master_id else None
                roles[e.port] = (e.primary, master, e.slots)
            if agreed is None:
                agreed = roles
            elif roles != agreed:
                raise NotReady(f"nodes {live[0].port} and {node.port} disagree on the roles")
            views.append(entries)
        assert agreed is not None
        for port, (primary, master, _) in agreed.items():
            if primary:
                continue
            with self._node_at(port).client() as client:
                repl = client.info("replication")
            link = repl.get("master_link_status")
            syncing = repl.get("master_sync_in_progress")
            if repl.get("master_port") != master or link != "up" or syncing != 0:
                raise NotReady(
                    f"replica {port} of {master}: master_port:{repl.get('master_port')} "
                    f"master_link_status:{link} master_sync_in_progress:{syncing}"
                )
        return views

    def _describe(self) -> str:
        """cluster_state and CLUSTER NODES of every live node, for error messages."""

        def account(node: RedisServer, client: Any) -> str:
            info = _fields(reply_text(client.execute_command("CLUSTER", "INFO")))
            state = info.get("cluster_state")
            nodes = reply_text(client.execute_command("CLUSTER", "NODES")).strip()
            return f"--- node {node.port} (cluster_state:{state}) CLUSTER NODES ---\n{nodes}"

        return describe_each(self.nodes, "node", account)

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A synchronous cluster client (bytes replies, one quick retry)."""
        options: dict[str, Any] = {
            "socket_connect_timeout": 1.0,
            "socket_timeout": 5.0,
            "retry": Retry(ExponentialBackoff(cap=0.1, base=0.005), 1),
        }
        options.update(kwargs)
        return redis.cluster.RedisCluster(startup_nodes=self.startup_nodes, **options)
