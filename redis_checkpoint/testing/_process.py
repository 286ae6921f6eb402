"""What every throw-away server shares: the address, the timeouts, process cleanup and polling."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import redis.exceptions

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
# Redis 7 waits 5 s before a diskless full sync, hoping more replicas ask for one.
QUICK_SYNC = ("--repl-diskless-sync-delay", "0")

_P = TypeVar("_P", bound="Started")
_T = TypeVar("_T")


class Started:
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

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProcessState:
    """What the finalizer needs: kept apart from the server so it can be collected."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.data_dir: str | None = None

    def cleanup(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)
        self.proc = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


def cleanup_all(states: list[ProcessState]) -> None:
    """The finalizer of a group of servers: kill each process, remove each directory."""
    for state in states:
        state.cleanup()


class NotReady(Exception):
    """Raised by a poll probe: the awaited state is not there yet (and why)."""


def poll(
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
        except (NotReady, redis.exceptions.RedisError) as exc:
            reason = f"{exc}" if isinstance(exc, NotReady) else f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            message = f"{what} within {timeout:g}s; last: {reason}"
            if details is not None:
                message += "\n" + details()
            raise RuntimeError(message)
        time.sleep(0.05)
