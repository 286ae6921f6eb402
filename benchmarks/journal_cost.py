"""What ``fallback_journal`` costs: turns served from memory during an outage, with and without
the journal, side by side in one run.

    python -m benchmarks.journal_cost [--turns N] [--conversations N] [--rounds N] [--dir DIR]

A private redis-server is started and killed, so every turn is served by the in-memory tier;
with the journal each turn's writes are appended and fdatasync'ed to a segment in ``--dir``
(default: a temporary directory, on the disk the benchmark runs on). Sync turns run one
conversation after another, async ones ``--conversations`` at a time. Each row alternates with
its twin for ``--rounds`` rounds; the best round is reported with its ratio to the row without the
journal. While Redis answers the journal is not written at all. Results go to
``benchmarks/results/journal_cost.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import command_line, percentile, progress, table, utc_stamp, write_results
from benchmarks.workload import arun_turns, build_graph, run_turns
from redis_checkpoint import AsyncRedisSaver, RedisSaver
from redis_checkpoint.testing import RedisServer


def options(journal: Path | None) -> dict[str, Any]:
    # A dead server: every turn is the tier's, and closing does not wait for Redis.
    return {"require_redis": False, "fallback_journal": journal, "close_timeout": 0}


def sync_round(url: str, journal: Path | None, turns: int) -> tuple[float, list[float], int]:
    with RedisSaver.from_conn_string(url, key_prefix="jc", **options(journal)) as saver:
        graph = build_graph(saver)
        start = time.perf_counter()
        durations = run_turns(graph, "sync", 0, range(turns))
        rate = turns / (time.perf_counter() - start)
        size = saver.journal.path.stat().st_size if saver.journal is not None else 0
    return rate, durations, size


async def async_round(
    url: str, journal: Path | None, turns: int, conversations: int
) -> tuple[float, list[float], int]:
    async with AsyncRedisSaver.from_conn_string(url, key_prefix="jc", **options(journal)) as saver:
        graph = build_graph(saver)
        start = time.perf_counter()
        runs = await asyncio.gather(
            *(arun_turns(graph, f"c{i}", i, range(turns)) for i in range(conversations))
        )
        rate = turns * conversations / (time.perf_counter() - start)
        size = saver.journal.path.stat().st_size if saver.journal is not None else 0
    return rate, [d for run in runs for d in run], size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    server = RedisServer().start()
    url = server.url
    server.close()  # nothing listens there any more
    base = args.dir or Path(tempfile.mkdtemp(prefix="rc-journal-bench-"))
    best: dict[str, tuple[float, list[float], int]] = {}
    for r in range(args.rounds):
        for journaled in (False, True):
            # A new directory each round: the killed-process segments of none to adopt.
            journal = base / f"r{r}-{journaled}" if journaled else None
            label = "with journal" if journaled else "no journal"
            progress(f"round {r + 1}/{args.rounds}: sync, {label}")
            result = sync_round(url, journal and journal / "sync", args.turns)
            if f"sync {journaled}" not in best or result[0] > best[f"sync {journaled}"][0]:
                best[f"sync {journaled}"] = result
            progress(f"round {r + 1}/{args.rounds}: async, {label}")
            aresult = asyncio.run(
                async_round(url, journal and journal / "async", args.turns, args.conversations)
            )
            if f"async {journaled}" not in best or aresult[0] > best[f"async {journaled}"][0]:
                best[f"async {journaled}"] = aresult

    rows = []
    payload: dict[str, Any] = {"turns": args.turns, "conversations": args.conversations}
    for mode in ("sync", "async"):
        plain = best[f"{mode} False"][0]
        for journaled in (False, True):
            rate, durations, size = best[f"{mode} {journaled}"]
            label = ("RedisSaver" if mode == "sync" else "AsyncRedisSaver") + (
                ", fallback_journal" if journaled else ""
            )
            p50 = percentile(durations, 0.5) * 1000
            p99 = percentile(durations, 0.99) * 1000
            rows.append(
                [
                    label,
                    f"{rate:.1f}",
                    f"{rate / plain:.2f}x",
                    f"{p50:.2f}",
                    f"{p99:.2f}",
                    f"{size / 1024:.0f}" if journaled else "-",
                ]
            )
            payload[f"{mode}_journal{int(journaled)}"] = {
                "turns_per_s": rate,
                "p50_ms": p50,
                "p99_ms": p99,
                "journal_bytes": size,
            }
    stamp = utc_stamp()
    options = ["--turns", str(args.turns), "--conversations", str(args.conversations)]
    command = command_line("benchmarks.journal_cost", [*options, "--rounds", str(args.rounds)])
    headers = ["saver (Redis down)", "turns/s", "vs no journal", "turn p50 ms", "turn p99 ms"]
    text = table([*headers, "journal KiB"], rows)
    report = (
        f"# The cost of fallback_journal\n\nRun {stamp} by `{command}`: "
        "Redis killed, every turn served by the in-memory tier, the graph of "
        f"benchmarks/workload.py, best of {args.rounds} alternating rounds; the journal on "
        f"{base}. Async: {args.conversations} concurrent conversations.\n\n{text}\n"
    )
    print(report)
    write_results("journal_cost", report, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
