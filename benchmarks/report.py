"""What every benchmark reports with: one percentile, Markdown tables, progress lines, the
machine description, and the results files under ``benchmarks/results/`` with the date and the
command of the run."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"

TIMES = "\u00d7"  # multiplication sign
DASH = "\u2013"  # en dash
GE = "\u2265"
LE = "\u2264"

_T0 = time.perf_counter()


def since_start() -> float:
    """Seconds since the benchmark started (this module is imported first thing)."""
    return time.perf_counter() - _T0


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


LOADAVG_START = loadavg()


def progress(message: str) -> None:
    """A progress line on stderr, so stdout holds only the report."""
    print(f"[{since_start():6.1f}s] {message}", file=sys.stderr, flush=True)


# -- statistics ---------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile (0 <= q <= 1) by linear interpolation between the two nearest ranks
    (NumPy's default): the median of 1..10 is 5.5, p0 the minimum, p100 the maximum."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within [0, 1], not {q}")
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def load_summary(latencies: Sequence[float], elapsed: float, errors: int) -> dict[str, Any]:
    """What a load run of HTTP requests gives: requests, requests/s, p50/p99/mean ms, errors."""
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "errors": errors,
    }


def ms(seconds: float, digits: int = 2) -> str:
    return f"{seconds * 1000:.{digits}f}"


# -- tables and sections ------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = ()) -> str:
    """A Markdown table, columns padded to their widest cell; ``right`` columns right-aligned."""
    aligned = set(right)
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in aligned else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = ["-" * (w - 1) + ":" if i in aligned else "-" * w for i, w in enumerate(widths)]
    return "\n".join([line(headers), "| " + " | ".join(rule) + " |", *(line(r) for r in rows)])


@dataclass
class Report:
    """Sections of a Markdown report, printed as they are added, and the JSON data beside it."""

    sections: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, title: str, body: str) -> None:
        text = f"## {title}\n\n{body}\n"
        self.sections.append(text)
        print("\n" + text, flush=True)


# -- the run: date, command, machine ------------------------------------------------------------


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command of this run as the results record it (``argv``: the options; default the
    process's)."""
    options = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", "-m", module, *options])


def machine_info(server_version: str, packages: Sequence[str]) -> dict[str, Any]:
    """Date, load, CPU, platform, redis-server and the installed versions of ``packages``."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    binary = shutil.which("redis-server")
    redis_server = ""
    if binary:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
        redis_server = out.stdout.strip()
    versions = {}
    for dist in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {
        "date": utc_stamp(),
        "loadavg_start": LOADAVG_START,
        "loadavg_end": loadavg(),
        "nproc": nproc,
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": redis_server,
        "private_server_version": server_version,
        "packages": versions,
    }


def write_results(name: str, markdown: str, payload: dict[str, Any]) -> None:
    """``benchmarks/results/<name>.md`` and ``.json``, each replaced whole (a run that dies
    half-way leaves the previous results)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for path, content in (
        (RESULTS_DIR / f"{name}.md", markdown),
        (RESULTS_DIR / f"{name}.json", json.dumps(payload, indent=2, default=str) + "\n"),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(path)
    progress(f"wrote {RESULTS_DIR / name}.md and .json")
