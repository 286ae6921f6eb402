"""``RedisSentinelGroup``: a throw-away primary, its replicas and the Sentinels that watch them."""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from typing import Any, TypeVar

import redis.exceptions

from redis_checkpoint.client import reply_text
from redis_checkpoint.testing import _process as process
from redis_checkpoint.testing.server import RedisServer, describe_each, server_on_port

__all__ = ["RedisSentinelGroup"]

_G = TypeVar("_G", bound="RedisSentinelGroup")


class _SentinelServer(RedisServer):
    """A ``redis-server --sentinel`` process, its config file in its own directory.

    The file is written on the first start only: Sentinel rewrites it with
    what it learns (replicas, other sentinels, epochs), which a restart keeps.
    """

    def __init__(self, config: Sequence[str], *, binary: str | None = None) -> None:
        super().__init__(binary=binary)
        self.config: tuple[str, ...] = tuple(config)

    def _leading_args(self, data_dir: str) -> list[str]:
        path = os.path.join(data_dir, "sentinel.conf")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write("\n".join(self.config) + "\n")
        return [path, "--sentinel"]


def _sentinel_fields(reply: Any) -> dict[str, str]:
    """A SENTINEL MASTER/REPLICAS entry (a RESP3 map or a RESP2 flat list) as a dict."""
    if isinstance(reply, dict):
        return {reply_text(key): reply_text(value) for key, value in reply.items()}
    items = [reply_text(item) for item in reply]
    return dict(zip(items[::2], items[1::2], strict=False))


class RedisSentinelGroup(process.Started):
    """One primary, ``replicas`` replicas and ``sentinels`` Sentinels on 127.0.0.1.

    ``servers`` are the data nodes (``servers[0]`` is the first primary),
    ``sentinels`` the Sentinel processes; which server is the primary is
    whatever the Sentinels say (``primary()``). A finalizer kills every
    process if the object is dropped or Python exits.
    """

    def __init__(
        self,
        replicas: int = 1,
        sentinels: int = 3,
        service: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        appendonly: bool = False,
        *,
        args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        if replicas < 0 or sentinels < 1:
            raise ValueError(f"need replicas >= 0 and sentinels >= 1, not {replicas}/{sentinels}")
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.service = service
        self.quorum = sentinels // 2 + 1
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.appendonly = appendonly
        self.args: tuple[str, ...] = tuple(args)
        self._binary = binary
        self.servers: list[RedisServer] = []
        self.sentinels: list[RedisServer] = []
        self._states: list[process.ProcessState] = []
        self._finalizer = weakref.finalize(self, process.cleanup_all, self._states)

    # --- properties -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:p1,.../<service>``, as ``create_client`` takes it."""
        if not self.sentinels:
            raise RuntimeError("sentinel group not started")
        hosts = ",".join(f"{process.HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``[(host, port), ...]`` for ``redis.sentinel.Sentinel``."""
        return [(process.HOST, s.port) for s in self.sentinels]

    @property
    def running(self) -> bool:
        processes = self.servers + self.sentinels
        return bool(processes) and all(p.running for p in processes)

    # --- lifecycle --------------------------------------------------------------------

    def start(self: _G) -> _G:
        """Start the servers, wait for the replicas' sync, then the Sentinels' discovery."""
        if self.servers:
            raise RuntimeError("sentinel group already started; stop() it first")
        try:
            primary = self._add(self.servers, RedisServer(**self._server_options()))
            for _ in range(self.replica_count):
                options = self._server_options()
                options["args"] = ["--replicaof", process.HOST, str(primary.port), *options["args"]]
                self._add(self.servers, RedisServer(**options))
            process.poll(self._check_replicas_synced, 30.0, "the replicas did not sync")
            config = [
                "sentinel resolve-hostnames no",
                f"sentinel monitor {self.service} {process.HOST} {primary.port} {self.quorum}",
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {self.service} 1",
            ]
            for _ in range(self.sentinel_count):
                self._add(self.sentinels, _SentinelServer(config, binary=self._binary))
            process.poll(
                self._check_discovered,
                30.0,
                "the sentinels did not discover the group",
                self._describe,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _server_options(self) -> dict[str, Any]:
        return {
            "appendonly": self.appendonly,
            "binary": self._binary,
            "args": [*process.QUICK_SYNC, *self.args],
        }

    def _add(self, group: list[RedisServer], server: RedisServer) -> RedisServer:
        group.append(server)
        self._states.append(server._state)
        return server.start()

    def stop(self) -> None:
        """Stop the Sentinels, then the servers, and remove every directory."""
        for server in self.sentinels + self.servers:
            server.close()
        self.sentinels = []
        self.servers = []
        self._states.clear()

    # --- topology and drills ----------------------------------------------------------

    def _server_at(self, port: int) -> RedisServer:
        return server_on_port(self.servers, port, "group")

    def _reported_primary(self, sentinel: RedisServer) -> int:
        with sentinel.client() as client:
            reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        if not reply:
            raise process.NotReady(f"sentinel {sentinel.port} does not know {self.service!r}")
        return int(reply[1])

    def primary(self) -> RedisServer:
        """The server a Sentinel names as primary (SENTINEL GET-MASTER-ADDR-BY-NAME)."""
        errors = []
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            try:
                return self._server_at(self._reported_primary(sentinel))
            except (redis.exceptions.RedisError, process.NotReady) as exc:
                errors.append(f"{sentinel.port}: {exc}")
        raise RuntimeError(f"no sentinel named the primary of {self.service!r} ({errors})")

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary (its directory is kept); return it."""
        primary = self.primary()
        primary.kill()
        return primary

    def wait_failover(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Wait until the Sentinels have promoted a server other than ``old``; return it.

        Done when every running Sentinel names the same new primary, it
        answers ROLE as master, and every other running server replicates
        from it with its link connected.
        """

        def promoted() -> RedisServer:
            named = {self._reported_primary(s) for s in self.sentinels if s.running}
            if len(named) != 1 or old.port in named:
                raise process.NotReady(
                    f"the sentinels name {sorted(named)} (old primary {old.port})"
                )
            new = self._server_at(named.pop())
            with new.client() as client:
                role = client.execute_command("ROLE")
            if reply_text(role[0]) != "master":
                raise process.NotReady(f"{new.port} answers ROLE {reply_text(role[0])}")
            for server in self.servers:
                if server is new or not server.running:
                    continue
                with server.client() as client:
                    role = client.execute_command("ROLE")
                state = [reply_text(item) for item in role[:4]]
                if state[0] != "slave" or int(state[2]) != new.port or state[3] != "connected":
                    raise process.NotReady(f"{server.port} answers ROLE {state}")
            return new

        return process.poll(
            promoted,
            timeout,
            f"the sentinels did not replace primary {old.port}",
            self._describe,
        )

    # --- settling ---------------------------------------------------------------------

    def _check_replicas_synced(self) -> None:
        primary = self.servers[0]
        for replica in self.servers[1:]:
            with replica.client() as client:
                repl = client.info("replication")
            link = repl.get("master_link_status")
            syncing = repl.get("master_sync_in_progress")
            if repl.get("master_port") != primary.port or link != "up" or syncing != 0:
                raise process.NotReady(
                    f"replica {replica.port}: master_port:{repl.get('master_port')} "
                    f"master_link_status:{link} master_sync_in_progress:{syncing}"
                )

    def _check_discovered(self) -> None:
        want_replicas = {server.port for server in self.servers[1:]}
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                master = _sentinel_fields(
                    client.execute_command("SENTINEL", "MASTER", self.service)
                )
                replicas = [
                    _sentinel_fields(r)
                    for r in client.execute_command("SENTINEL", "REPLICAS", self.service)
                ]
                others = [
                    _sentinel_fields(s)
                    for s in client.execute_command("SENTINEL", "SENTINELS", self.service)
                ]
            if master.get("flags") != "master":
                raise process.NotReady(
                    f"sentinel {sentinel.port}: primary flags {master.get('flags')}"
                )
            ready = {
                int(r["port"])
                for r in replicas
                if r.get("flags") == "slave" and r.get("master-link-status") == "ok"
            }
            if ready != want_replicas:
                raise process.NotReady(
                    f"sentinel {sentinel.port} sees replicas {sorted(ready)} ready, "
                    f"not {sorted(want_replicas)}"
                )
            peers = [s for s in others if s.get("flags") == "sentinel"]
            if len(peers) != self.sentinel_count - 1:
                raise process.NotReady(
                    f"sentinel {sentinel.port} knows {len(peers)} other sentinels, "
                    f"not {self.sentinel_count - 1}"
                )

    def _describe(self) -> str:
        """Each Sentinel's view of the primary and its recent log, for error messages."""

        def account(sentinel: RedisServer, client: Any) -> str:
            master = _sentinel_fields(client.execute_command("SENTINEL", "MASTER", self.service))
            view = {k: master.get(k) for k in ("port", "flags", "failover-state", "num-slaves")}
            return f"--- sentinel {sentinel.port}: {view} ---\n{sentinel.log_tail(12)}"

        return describe_each(self.sentinels, "sentinel", account)
