"""What ``wait_replicas`` costs: the saver with and without WAIT, side by side in one run.

    python -m benchmarks.wait_cost [--turns N] [--conversations N] [--rounds N]

A private primary and one replica (redis-server processes started here, on loopback) serve the
benchmark graph of ``benchmarks/workload.py``: sync turns one conversation after another, and
async turns with ``--conversations`` concurrent conversations. Each row alternates with its twin
for ``--rounds`` rounds and the best round is reported, with the ratio to the row without WAIT.
Results go to ``benchmarks/results/wait_cost.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from benchmarks.report import command_line, percentile, progress, table, utc_stamp, write_results
from benchmarks.workload import arun_turns, build_graph, run_turns
from redis_checkpoint import AsyncRedisSaver, RedisSaver
from redis_checkpoint.testing import RedisServer


def start_pair() -> tuple[RedisServer, RedisServer]:
    primary = RedisServer().start()
    replica = RedisServer(args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    with replica.client() as client:
        for _ in range(1000):
            info = client.info("replication")
            if info.get("master_link_status") == "up" and not info.get("master_sync_in_progress"):
                return primary, replica
            time.sleep(0.01)
    raise RuntimeError("the replica never synced")


def sync_round(url: str, wait: int, prefix: str, turns: int) -> tuple[float, list[float]]:
    with RedisSaver.from_conn_string(url, key_prefix=prefix, wait_replicas=wait) as saver:
        graph = build_graph(saver)
        start = time.perf_counter()
        durations = run_turns(graph, "sync", 0, range(turns))
        return turns / (time.perf_counter() - start), durations


async def async_round(
    url: str, wait: int, prefix: str, turns: int, conversations: int
) -> tuple[float, list[float], float]:
    async with AsyncRedisSaver.from_conn_string(
        url, key_prefix=prefix, wait_replicas=wait
    ) as saver:
        graph = build_graph(saver)
        start = time.perf_counter()
        runs = await asyncio.gather(
            *(arun_turns(graph, f"c{i}", i, range(turns)) for i in range(conversations))
        )
        elapsed = time.perf_counter() - start
        per_turn = saver.round_trips / (turns * conversations)
        return turns * conversations / elapsed, [d for run in runs for d in run], per_turn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    primary, replica = start_pair()
    best: dict[str, tuple[float, list[float], float]] = {}
    try:
        for r in range(args.rounds):
            for wait in (0, 1):
                progress(f"round {r + 1}/{args.rounds}: sync, wait_replicas={wait}")
                rate, durations = sync_round(primary.url, wait, f"ws{r}{wait}", args.turns)
                key = f"sync {wait}"
                if key not in best or rate > best[key][0]:
                    best[key] = (rate, durations, 9.0)
                progress(f"round {r + 1}/{args.rounds}: async, wait_replicas={wait}")
                arate, adurations, trips = asyncio.run(
                    async_round(primary.url, wait, f"wa{r}{wait}", args.turns, args.conversations)
                )
                key = f"async {wait}"
                if key not in best or arate > best[key][0]:
                    best[key] = (arate, adurations, trips)
        with primary.client() as client:
            waits = client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
    finally:
        replica.close()
        primary.close()

    rows = []
    payload: dict[str, Any] = {"turns": args.turns, "conversations": args.conversations}
    for mode in ("sync", "async"):
        base = best[f"{mode} 0"][0]
        for wait in (0, 1):
            rate, durations, _ = best[f"{mode} {wait}"]
            label = f"{'RedisSaver' if mode == 'sync' else 'AsyncRedisSaver'}" + (
                ", wait_replicas=1" if wait else ""
            )
            p50 = percentile(durations, 0.5) * 1000
            p99 = percentile(durations, 0.99) * 1000
            rows.append([label, f"{rate:.1f}", f"{rate / base:.2f}x", f"{p50:.2f}", f"{p99:.2f}"])
            payload[f"{mode}_wait{wait}"] = {"turns_per_s": rate, "p50_ms": p50, "p99_ms": p99}
    stamp = utc_stamp()
    options = ["--turns", str(args.turns), "--conversations", str(args.conversations)]
    command = command_line("benchmarks.wait_cost", [*options, "--rounds", str(args.rounds)])
    text = table(["saver", "turns/s", "vs no WAIT", "turn p50 ms", "turn p99 ms"], rows)
    report = (
        f"# The cost of wait_replicas\n\nRun {stamp} by `{command}`: "
        "a private primary and one replica on loopback, the graph of benchmarks/workload.py, "
        f"best of {args.rounds} alternating rounds. Async: {args.conversations} concurrent "
        f"conversations. The primary answered {waits} WAIT commands.\n\n{text}\n"
    )
    print(report)
    write_results("wait_cost", report, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
