"""What the in-memory tier costs in real memory while Redis is healthy: a soak of many threads.

    python -m benchmarks.tier_soak [--threads 1000] [--turns 13] [--concurrency 20] [--quick]

The tier mirrors what the process writes and reads, under ``fallback_max_bytes``. This runs the
benchmark graph (``workload.build_graph``) on ``AsyncRedisSaver`` for ``--threads`` threads,
``--turns`` turns each (a turn of every thread, then the next turn of every thread), on a private
``redis-server`` that stays up the whole time, and reads the process's resident set (RSS, from
``/proc/self/statm`` after a ``gc.collect()``) after each round of turns. Each row runs in its own
child process, so rows do not share a heap: ``fallback=False`` (no tier: what the graph and the
client cost), the default budget, and an 8 MiB budget. Results go to
``benchmarks/results/tier_soak.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks.report import command_line, progress, table, utc_stamp, write_results
from benchmarks.workload import arun_turns, build_graph
from redis_checkpoint import AsyncRedisSaver
from redis_checkpoint.checkpoint.base import DEFAULT_FALLBACK_BYTES
from redis_checkpoint.testing import RedisServer

MIB = 1024 * 1024
#: (label, saver options) of each row; each runs in a child process of its own.
ROWS: dict[str, dict[str, Any]] = {
    "fallback=False": {"fallback": False},
    f"default budget ({DEFAULT_FALLBACK_BYTES // MIB} MiB)": {},
    "fallback_max_bytes=8 MiB": {"fallback_max_bytes": 8 * MIB},
}


def rss_bytes() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE")


async def soak(url: str, label: str, threads: int, turns: int, concurrency: int) -> dict[str, Any]:
    options = ROWS[label]
    async with AsyncRedisSaver.from_conn_string(
        url, key_prefix=f"soak{os.getpid()}", **options
    ) as saver:
        graph = build_graph(saver)
        await arun_turns(graph, "warm-up", 0, range(2))  # scripts loaded, connection open
        start = rss_bytes()
        marks = []
        for turn in range(turns):
            for first in range(0, threads, concurrency):
                await asyncio.gather(
                    *(
                        arun_turns(graph, f"t{i}", i, range(turn, turn + 1))
                        for i in range(first, min(first + concurrency, threads))
                    )
                )
            tier = saver.memory.size if saver.memory is not None else 0
            marks.append(
                {"turns": (turn + 1) * threads, "rss_growth": rss_bytes() - start, "tier": tier}
            )
            grown = marks[-1]["rss_growth"] / MIB
            progress(
                f"[{label}] {(turn + 1) * threads:,} turns: RSS +{grown:.1f} MiB, "
                f"tier estimate {tier / MIB:.1f} MiB"
            )
    return {"label": label, "marks": marks}


def run_child(url: str, label: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.tier_soak",
        "--child",
        label,
        "--url",
        url,
        "--threads",
        str(args.threads),
        "--turns",
        str(args.turns),
        "--concurrency",
        str(args.concurrency),
    ]
    done = subprocess.run(command, stdout=subprocess.PIPE, check=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def markdown(args: argparse.Namespace, results: list[dict[str, Any]], argv: Sequence[str]) -> str:
    first = results[0]["marks"]
    headers = ["setup", *(f"RSS after {m['turns']:,} turns" for m in first), "tier estimate"]
    rows = []
    for result in results:
        rows.append(
            [
                result["label"],
                *(f"+{m['rss_growth'] / MIB:.1f} MiB" for m in result["marks"]),
                f"{result['marks'][-1]['tier'] / MIB:.1f} MiB",
            ]
        )
    return "\n".join(
        [
            "# The in-memory tier in real memory (Redis up the whole time)",
            "",
            f"- date: {utc_stamp()}",
            f"- command: `{command_line('benchmarks.tier_soak', argv)}`",
            f"- {args.threads:,} threads x {args.turns} turns, {args.concurrency} at once; "
            "RSS growth since the first turn, each row in a process of its own",
            "",
            table(headers, rows, right=range(1, len(headers))),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=13)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="200 threads x 3 turns")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    if args.quick:
        args.threads, args.turns = 200, 3
    if args.child:
        result = asyncio.run(soak(args.url, args.child, args.threads, args.turns, args.concurrency))
        print(json.dumps(result))
        return 0
    results = []
    with RedisServer() as server:
        for label in ROWS:
            progress(f"{label}: {args.threads:,} threads x {args.turns} turns")
            results.append(run_child(server.url, label, args))
    text = markdown(args, results, raw)
    print(text)
    if not args.no_write:
        write_results("tier_soak", text, {"args": vars(args), "rows": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
