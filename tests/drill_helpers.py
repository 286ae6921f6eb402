"""Instruments of the outage drills: reports, a probe-aware breaker, instrumented savers and
engines, and a TCP proxy that can delay or swallow traffic."""

from __future__ import annotations

import contextlib
import contextvars
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.report import percentile
from redis_checkpoint import AsyncCacheEngine, AsyncRedisSaver, CircuitBreaker

REPORT_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "drills.md"

#: True in the task of an operation that began while its breaker was open.
STARTED_OPEN: contextvars.ContextVar[bool] = contextvars.ContextVar("started_open", default=False)
#: True in the task whose call the breaker let through as its half-open probe.
IS_PROBE: contextvars.ContextVar[bool] = contextvars.ContextVar("is_probe", default=False)


@dataclass
class DrillReport:
    name: str
    operations: int = 0
    caller_errors: int = 0
    lost_checkpoints: int | None = None
    latencies_down_ms: list[float] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        lines = [
            f"### {self.name}",
            "",
            "| measure | value |",
            "|---|---|",
            f"| operations | {self.operations} |",
            f"| errors seen by callers | {self.caller_errors} |",
        ]
        if self.lost_checkpoints is not None:
            lines.append(f"| lost checkpoints | {self.lost_checkpoints} |")
        if self.latencies_down_ms:
            down = self.latencies_down_ms
            lines.append(
                f"| latency while down (n={len(down)}) | p50 {percentile(down, 0.5):.3f} ms, "
                f"p99 {percentile(down, 0.99):.3f} ms, max {max(down):.3f} ms |"
            )
        lines += [f"| {key} | {value} |" for key, value in self.facts.items()]
        return "\n".join(lines) + "\n"


class DrillLog:
    """Collects the reports of a run; writes the markdown when DRILLS_REPORT names a file or
    is 1 (then benchmarks/results/drills.md)."""

    def __init__(self) -> None:
        self.reports: dict[str, DrillReport] = {}

    def add(self, report: DrillReport) -> None:
        self.reports[report.name] = report

    def write(self) -> Path | None:
        target = os.environ.get("DRILLS_REPORT", "")
        if not target or not self.reports:
            return None
        path = REPORT_PATH if target == "1" else Path(target)
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        body = [
            "# Outage drills",
            "",
            f"Run {stamp} by `DRILLS_REPORT=1 pytest tests/test_drills.py` on real redis-server "
            "processes started by the tests (loopback; 2 shared CPU cores). Latencies are "
            "measured, not asserted: the tests assert counts and states (no round trip by an "
            "operation that starts while the breaker is open).",
            "",
            *(r.text() for r in self.reports.values()),
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(body))
        return path


class ProbeMarkingBreaker(CircuitBreaker):
    """Marks the task that gets the half-open probe, and counts the failures recorded while
    closed before the first opening."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures_before_first_open = 0
        self.opened_at: float | None = None
        self.probes = 0
        self.timeline: list[tuple[float, str]] = []

    def _notify(self, transition: tuple[str, str] | None) -> None:
        if transition is not None:
            self.timeline.append((time.monotonic(), transition[1]))
        super()._notify(transition)

    def allow_request(self) -> bool:
        before = self.state
        allowed = super().allow_request()
        if allowed and before != "closed":
            self.probes += 1
            IS_PROBE.set(True)
        return allowed

    def record_failure(self) -> None:
        if self.opened_count == 0 and self.state == "closed":
            self.failures_before_first_open += 1
        super().record_failure()
        if self.opened_at is None and self.state == "open":
            self.opened_at = time.monotonic()


class OpMeter:
    """Times operations and counts round trips sent by operations that began while open."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.operations = 0
        self.latencies_down_ms: list[float] = []
        self.sends_by_open_ops = 0  # excluding the breaker's probes
        self.probe_latencies_ms: list[float] = []
        self.down = False  # set by the drill while the server is dead

    async def timed(self, call: Callable[[], Any]) -> Any:
        open_at_start = self.breaker.state == "open"
        STARTED_OPEN.set(open_at_start)
        IS_PROBE.set(False)
        start = time.perf_counter()
        try:
            return await call()
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1000
            self.operations += 1
            if open_at_start and self.down:
                # The breaker's probes try Redis on purpose: timed apart.
                probe = IS_PROBE.get()
                (self.probe_latencies_ms if probe else self.latencies_down_ms).append(elapsed_ms)
            STARTED_OPEN.set(False)

    def sending(self) -> None:
        if STARTED_OPEN.get() and not IS_PROBE.get():
            self.sends_by_open_ops += 1


class MeteredSaver(AsyncRedisSaver):
    """AsyncRedisSaver whose operations are timed and whose round trips are attributed."""

    meter: OpMeter
    written: set[tuple[str, str]]

    def attach(self, meter: OpMeter) -> None:
        self.meter = meter
        self.written = set()

    async def aget_tuple(self, config: Any) -> Any:
        return await self.meter.timed(lambda: super(MeteredSaver, self).aget_tuple(config))

    async def aput(self, config: Any, *args: Any) -> Any:
        saved = await self.meter.timed(lambda: super(MeteredSaver, self).aput(config, *args))
        self.written.add(
            (saved["configurable"]["thread_id"], saved["configurable"]["checkpoint_id"])
        )
        return saved

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        await self.meter.timed(lambda: super(MeteredSaver, self).aput_writes(*args, **kwargs))

    async def _send_all(self, items: Any) -> list[Any]:
        self.meter.sending()
        return await super()._send_all(items)


class MeteredEngine(AsyncCacheEngine):
    """AsyncCacheEngine whose round trips are attributed to the operation that sent them."""

    meter: OpMeter

    async def _execute(self, commands: Any) -> list[Any]:
        self.meter.sending()
        return await super()._execute(commands)


class TcpProxy:
    """A TCP proxy in front of Redis: ``mode`` is ``pass``, ``delay`` (hold each chunk
    ``delay`` seconds) or ``blackhole`` (accept and read, never forward nor answer)."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.mode = "pass"
        self.delay = 0.0
        self.connections = 0
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()
            return
        self._sockets.append(upstream)
        peers = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.mode == "blackhole":
                        continue  # swallowed
                    if self.mode == "delay":
                        time.sleep(self.delay)
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._thread.join(timeout=2)
