"""Throw-away real Redis servers for tests, benchmarks and demos.

Each server binds 127.0.0.1 on its own port with its own temporary
directory, so nothing here ever touches a Redis someone else is running.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis
import redis.cluster
import redis.exceptions
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

__all__ = [
    "RedisClusterServers",
    "RedisServer",
    "find_redis_cli",
    "find_redis_server",
    "free_port",
]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_HOST = "127.0.0.1"

_S = TypeVar("_S", bound="RedisServer")
_C = TypeVar("_C", bound="RedisClusterServers")


def find_redis_server() -> str | None:
    """Path of the redis-server binary: $REDIS_SERVER_BIN, else the one on PATH."""
    configured = os.environ.get("REDIS_SERVER_BIN")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("redis-server")


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


class RedisServer:
    """One redis-server process on 127.0.0.1 with its own temporary directory.

    ``stop()`` keeps the directory when ``appendonly=True`` (so ``restart()``
    finds the data) and removes it otherwise; ``kill()`` always keeps it;
    ``close()``/``__exit__`` always remove it. A finalizer kills the process
    and removes the directory if the object is dropped or Python exits.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        appendonly: bool = False,
        args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        self._fixed_port = port is not None
        self._port = port
        self.appendonly = appendonly
        self.args: tuple[str, ...] = tuple(args)
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
        return f"redis://{_HOST}:{self.port}/0"

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
            "--port", str(self.port),
            "--bind", _HOST,
            "--dir", data_dir,
            "--logfile", "redis.log",
            "--daemonize", "no",
            "--save", "",
        ]  # fmt: skip
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

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        probe = redis.Redis(
            host=_HOST,
            port=self.port,
            socket_connect_timeout=0.25,
            socket_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
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
        }
        options.update(kwargs)
        return redis.Redis(host=_HOST, port=self.port, **options)

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RedisServer(port={self._port}, {state})"


class _AddressInUse(Exception):
    pass


class RedisClusterServers:
    """A 3-primary Redis Cluster (no replicas) on 127.0.0.1, built with redis-cli."""

    size = 3

    def __init__(
        self,
        *,
        binary: str | None = None,
        cli: str | None = None,
        node_timeout_ms: int = 5000,
    ) -> None:
        self._binary = binary
        self._cli = cli
        self._node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisServer] = []

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

    def start(self: _C) -> _C:
        """Start the nodes, assign all slots and wait for cluster_state:ok."""
        if self.running:
            return self
        cli = self._cli or find_redis_cli()
        if cli is None:
            raise RuntimeError(
                "redis-cli not found: install it (apt-get install redis-server) "
                "or set REDIS_CLI_BIN"
            )
        taken: set[int] = set()
        try:
            for _ in range(self.size):
                port = _free_cluster_port(taken)
                taken.update((port, port + 10000))
                node = RedisServer(
                    port,
                    binary=self._binary,
                    args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(self._node_timeout_ms),
                    ],
                )  # fmt: skip
                self.nodes.append(node)
                node.start()
            self._create(cli)
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self, cli: str) -> None:
        cmd = [cli, "--cluster", "create"]
        cmd += [f"{_HOST}:{port}" for port in self.ports]
        cmd += ["--cluster-replicas", "0", "--cluster-yes"]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + 30.0
        pending = list(self.nodes)
        while pending:
            node = pending[0]
            with node.client() as client:
                info = client.execute_command("CLUSTER", "INFO")
            if isinstance(info, bytes):
                info = info.decode()
            ok = (
                info.get("cluster_state") == "ok"
                if isinstance(info, dict)
                else "cluster_state:ok" in str(info)
            )
            if ok:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"cluster node {node.port} never reached cluster_state:ok: {info!r}"
                )
            time.sleep(0.05)

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A synchronous cluster client (bytes replies, one quick retry)."""
        options: dict[str, Any] = {
            "socket_connect_timeout": 1.0,
            "socket_timeout": 5.0,
            "retry": Retry(ExponentialBackoff(cap=0.1, base=0.005), 1),
        }
        options.update(kwargs)
        return redis.cluster.RedisCluster(startup_nodes=self.startup_nodes, **options)

    def stop(self) -> None:
        """Stop every node and remove their directories."""
        for node in self.nodes:
            node.close()
        self.nodes = []

    close = stop

    def __enter__(self: _C) -> _C:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
