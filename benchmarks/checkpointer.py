"""Checkpoint savers side by side on one LangGraph workload.

Run from the project root::

    python -m benchmarks.checkpointer [--turns N] [--conversations N] [--quick]

The workload (``benchmarks/workload.py``) is a small chat graph (``retrieve -> agent ->
summarize``, no LLM, deterministic text) run on InMemorySaver, SqliteSaver, PostgresSaver (when
reachable), the peers on Redis (langgraph-checkpoint-aws's ValkeySaver, langgraph-checkpoint-
plainredis, langgraph-checkpoint-redis on a Valkey with the search modules) and our RedisSaver
(also with ``max_history=10``) in the same process, plus their async twins. It prints and writes
(``benchmarks/results/checkpointer.md`` and ``.json``):

1. sync turns/s, conversations one after another, ratio to the fastest peer and InMemorySaver;
2. async turns/s with ``--conversations`` concurrent conversations, ratio to InMemorySaver;
3. p50/p95 latency of ``get_tuple`` (latest, by id) and ``list(limit=50)``;
4. Redis round trips per operation of our saver (``saver.round_trips`` read before/after a call;
   ``checkpointer_round_trips.py``);
5. Redis bytes per turn of our saver (``INFO memory``) against the bytes of the messages the turn
   added, with InMemorySaver's stored bytes as the naive reference (``checkpointer_bytes.py``);
6. one long conversation (``--long-turns``, default 100) per sync saver: turns/s and the mean ms
   of its first and last 10 turns, so the cost of a growing history shows;
7. Redis bytes after every turn of one ``--growth-turns`` conversation on ours and on each peer
   on Redis (``checkpointer_bytes.py``).

With the results it draws ``checkpointer_bytes.png`` and ``checkpointer_throughput.png``
(``benchmarks/plots.py``).

All Redis measurements use private ``redis-server`` processes started here (and a private
valkey-server with RediSearch and RedisJSON for langgraph-checkpoint-redis); the script never
touches any other Redis. Targets are printed next to measured values, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig

from benchmarks import plots
from benchmarks.checkpointer_bytes import phase_growth, phase_growth_by_saver
from benchmarks.checkpointer_round_trips import (
    OpResult,
    explicit_ops_async,
    phase_round_trips_sync,
    report_round_trips,
)
from benchmarks.report import (
    DASH,
    GE,
    TIMES,
    Report,
    command_line,
    machine_info,
    ms,
    percentile,
    progress,
    since_start,
    table,
    write_results,
)
from benchmarks.workload import (
    DEFAULT_POSTGRES_URL,
    MAX_HISTORY,
    OURS_KEY,
    Entry,
    PostgresTarget,
    ServerTarget,
    arun_turns,
    first_line,
    module_server_target,
    open_async_savers,
    open_sync_savers,
    postgres_schema,
    round_trips,
    run_turns,
    settled_heap,
    thread_config,
)
from redis_checkpoint.testing import RedisServer

# Printed next to the measured values; never asserted.
TARGET_SYNC_PEER_RATIO = 1.25  # sync turns/s of ours over the fastest peer's
TARGET_ASYNC_RATIO = 0.85  # async turns/s of ours over InMemorySaver's
# The versions the results name.
PACKAGES = (
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint-postgres",
    "langgraph-checkpoint-aws",
    "langgraph-checkpoint-plainredis",
    "langgraph-checkpoint-redis",
    "redisvl",
    "redis",
    "valkey",
    "hiredis",
    "psycopg",
)


def ratio_text(value: float, base: float | None, target: float | None = None) -> str:
    if base is None or base <= 0:
        return "n/a"
    text = f"{value / base:.2f}{TIMES}"
    if target is not None:
        text += f" (target {GE} {target:.2f}{TIMES})"
    return text


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass
class Settings:
    turns: int
    sync_conversations: int
    rounds: int
    async_rounds: int
    async_conversations: int
    async_turns: int
    latency_calls: int
    growth_turns: int
    long_turns: int
    warmup_turns: int
    quick: bool
    postgres_url: str
    write: bool
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, help="turns per conversation (default 30, quick 8)")
    parser.add_argument(
        "--conversations",
        type=int,
        help="concurrent conversations in the async phase (default 20)",
    )
    parser.add_argument(
        "--sync-conversations",
        type=int,
        help="conversations run one after another per sync round (default 4, quick 2)",
    )
    parser.add_argument("--rounds", type=int, help="sync rounds, best kept (default 2, quick 1)")
    parser.add_argument(
        "--async-turns",
        type=int,
        help="turns per conversation in the async phase (default: --turns, at most 20)",
    )
    parser.add_argument(
        "--async-rounds",
        type=int,
        help="async rounds; later rounds rerun only the rows with a ratio target (default 2)",
    )
    parser.add_argument("--latency-calls", type=int, help="calls per latency op (default 200)")
    parser.add_argument(
        "--growth-turns", type=int, help="turns of the bytes-per-turn conversation (default 100)"
    )
    parser.add_argument(
        "--long-turns",
        type=int,
        help="turns of the long conversation per sync saver (default 100, quick 20)",
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run (~30 s)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results")
    args = parser.parse_args(argv)
    quick = bool(args.quick)

    def pick(value: int | None, default: int, quick_default: int) -> int:
        chosen = value if value is not None else (quick_default if quick else default)
        if chosen < 1:
            parser.error("counts must be >= 1")
        return chosen

    turns = pick(args.turns, 30, 8)
    return Settings(
        turns=turns,
        sync_conversations=pick(args.sync_conversations, 4, 2),
        rounds=pick(args.rounds, 2, 1),
        async_rounds=pick(args.async_rounds, 2, 2),
        async_conversations=pick(args.conversations, 20, 20),
        async_turns=pick(args.async_turns, min(turns, 20), min(turns, 20)),
        latency_calls=pick(args.latency_calls, 200, 30),
        growth_turns=pick(args.growth_turns, 100, 40),
        long_turns=pick(args.long_turns, 100, 20),
        warmup_turns=2 if quick else 3,
        quick=quick,
        postgres_url=args.postgres_url,
        write=not args.no_write,
    )


# --------------------------------------------------------------------------------------------
# Throughput tables (sync and async share them)
# --------------------------------------------------------------------------------------------


def drop_failed(entry: Entry, exc: Exception, results: dict[str, Any], phase: str) -> None:
    """A peer that raises mid-run becomes a "failed" row; ours raising stops the benchmark."""
    if not entry.peer:
        raise exc
    entry.skip = f"failed: {type(exc).__name__}: {first_line(exc)}"
    results.pop(entry.key, None)
    progress(f"{phase} {entry.label}: {entry.skip}")


def throughput_section(
    entries: list[Entry], results: dict[str, dict[str, Any]], *, sync: bool
) -> tuple[str, dict[str, Any]]:
    """The table of a throughput phase (ratios to InMemorySaver and to the fastest peer, the
    target on our row) and its JSON data."""
    base = results.get("memory", {}).get("tps")
    peers = [(results[e.key]["tps"], e.label) for e in entries if e.peer and e.key in results]
    fastest = max(peers) if peers else None
    rows = []
    data: dict[str, Any] = {}
    for entry in entries:
        if entry.skip or entry.key not in results:
            skip = entry.skip or "skipped"
            rows.append([entry.label, skip, "", "", "", "", ""])
            data[entry.label] = {"skipped": skip}
            continue
        res = results[entry.key]
        ours = entry.key == OURS_KEY
        rows.append(
            [
                entry.label,
                f"{res['tps']:.1f}",
                ", ".join(f"{t:.1f}" for t in res["rounds"]),
                ms(percentile(res["turn_s"], 0.5)),
                ms(percentile(res["turn_s"], 0.95)),
                ratio_text(res["tps"], base, TARGET_ASYNC_RATIO if ours and not sync else None),
                ratio_text(
                    res["tps"],
                    fastest[0] if fastest else None,
                    TARGET_SYNC_PEER_RATIO if ours and sync else None,
                ),
            ]
        )
        data[entry.label] = {
            "turns_per_s": res["tps"],
            "rounds_turns_per_s": res["rounds"],
            "turn_p50_ms": percentile(res["turn_s"], 0.5) * 1000,
            "turn_p95_ms": percentile(res["turn_s"], 0.95) * 1000,
            "ratio_to_inmemory": res["tps"] / base if base else None,
            "ratio_to_fastest_peer": res["tps"] / fastest[0] if fastest else None,
        }
    peer_text = (
        f"The fastest peer (other projects' savers on Redis) is {fastest[1]} at "
        f"{fastest[0]:.1f} turns/s."
        if fastest
        else "No peer ran, so there is no fastest peer to compare with."
    )
    headers = ["saver", "turns/s", "per round", "turn p50 ms", "turn p95 ms"]
    headers += ["vs InMemorySaver", "vs fastest peer"]
    body = peer_text + "\n\n" + table(headers, rows, right=[1, 3, 4])
    summary = {
        "fastest_peer": {"label": fastest[1], "turns_per_s": fastest[0]} if fastest else None,
        "target": (
            {"vs_fastest_peer": TARGET_SYNC_PEER_RATIO}
            if sync
            else {"vs_inmemory": TARGET_ASYNC_RATIO}
        ),
        "savers": data,
    }
    return body, summary


# --------------------------------------------------------------------------------------------
# 1. sync throughput and 3. latency (same savers, the latency uses the last sync conversation)
# --------------------------------------------------------------------------------------------


def phase_sync(s: Settings, entries: list[Entry], report: Report) -> dict[str, str]:
    """Returns, per saver key, the thread of a full conversation for the latency phase."""
    results: dict[str, dict[str, Any]] = {}
    last_thread: dict[str, str] = {}
    for entry in entries:
        if entry.skip:
            progress(f"sync  {entry.label}: {entry.skip}")
            continue
        try:
            run_turns(entry.graph, f"bench-{s.run_id}-sync-warmup", 999, range(s.warmup_turns))
        except Exception as exc:
            drop_failed(entry, exc, results, "sync ")
            continue
        results[entry.key] = {"tps": 0.0, "rounds": [], "turn_s": []}
    for rnd in range(s.rounds):
        for entry in entries:
            if entry.skip or (rnd > 0 and not entry.rerun):
                continue
            durations: list[float] = []
            rt_before = round_trips(entry.saver)
            try:
                with settled_heap():
                    start = time.perf_counter()
                    for conv in range(s.sync_conversations):
                        thread = f"bench-{s.run_id}-sync-r{rnd}-c{conv}"
                        durations += run_turns(entry.graph, thread, conv, range(s.turns))
                        last_thread[entry.key] = thread
                    elapsed = time.perf_counter() - start
            except Exception as exc:
                drop_failed(entry, exc, results, "sync ")
                continue
            rt_after = round_trips(entry.saver)
            tps = len(durations) / elapsed
            res = results[entry.key]
            res["rounds"].append(tps)
            if entry.key == OURS_KEY and rt_before is not None and rt_after is not None:
                per_turn = (rt_after - rt_before) / len(durations)
                report.data.setdefault("round_trips", {})["per_turn_sync"] = per_turn
            if tps > res["tps"]:
                res["tps"] = tps
                res["turn_s"] = durations
            progress(
                f"sync  round {rnd + 1}/{s.rounds} {entry.label}: {len(durations)} turns in "
                f"{elapsed:.2f} s = {tps:.1f} turns/s"
            )

    table_text, data = throughput_section(entries, results, sync=True)
    total = s.sync_conversations * s.turns
    body = (
        f"{s.sync_conversations} conversations {TIMES} {s.turns} turns, one after another, "
        f"after {s.warmup_turns} warm-up turns per saver. Round 1 runs every saver; "
        f"{s.rounds - 1} more round(s) rerun all but SQLite and PostgreSQL, alternating; the "
        "best round is kept. Target: ours at "
        f"{GE} {TARGET_SYNC_PEER_RATIO:.2f}{TIMES} the fastest peer. "
        "`InMemorySaver + 1 PING per call` is a yardstick, not a saver: InMemorySaver plus one "
        "round trip to the same Redis per put, put_writes and get_tuple, the cost of the network "
        f"alone on this machine. `max_history={MAX_HISTORY}` keeps a thread's newest "
        f"{MAX_HISTORY} checkpoints per namespace, pruned inside the put script. " + table_text
    )
    report.add(f"1. Sync throughput ({total} turns per round)", body)
    report.data["sync"] = {
        "conversations": s.sync_conversations,
        "turns": s.turns,
        "rounds": s.rounds,
        **data,
    }
    return last_thread


# --------------------------------------------------------------------------------------------
# 6. one long conversation per sync saver
# --------------------------------------------------------------------------------------------


def phase_long(s: Settings, entries: list[Entry], report: Report) -> None:
    """One conversation of ``s.long_turns`` turns per saver, one saver after another."""
    window = min(10, s.long_turns)
    rows = []
    data: dict[str, Any] = {}
    for entry in entries:
        if entry.skip:
            rows.append([entry.label, entry.skip, "", "", "", "", ""])
            data[entry.label] = {"skipped": entry.skip}
            continue
        thread = f"bench-{s.run_id}-long"
        try:
            with settled_heap():
                start = time.perf_counter()
                durations = run_turns(entry.graph, thread, 500, range(s.long_turns))
                elapsed = time.perf_counter() - start
            tuples = list(entry.saver.list(thread_config(thread)))
        except Exception as exc:
            drop_failed(entry, exc, {}, "long ")
            rows.append([entry.label, entry.skip or "failed", "", "", "", "", ""])
            data[entry.label] = {"skipped": entry.skip}
            continue
        latest = tuples[0] if tuples else None
        messages = len(latest.checkpoint["channel_values"].get("messages", [])) if latest else -1
        first = statistics.fmean(durations[:window])
        last = statistics.fmean(durations[-window:])
        tps = len(durations) / elapsed
        progress(
            f"long  {entry.label}: {len(durations)} turns in {elapsed:.2f} s = {tps:.1f} turns/s, "
            f"last {window} turns {last * 1000:.2f} ms each"
        )
        rows.append(
            [
                entry.label,
                f"{tps:.1f}",
                ms(first),
                ms(last),
                f"{last / first:.2f}{TIMES}",
                str(len(tuples)),
                str(messages),
            ]
        )
        data[entry.label] = {
            "turns_per_s": tps,
            "first_turns_mean_ms": first * 1000,
            "last_turns_mean_ms": last * 1000,
            "checkpoints_kept": len(tuples),
            "messages_in_latest": messages,
            "turn_ms": [d * 1000 for d in durations],
        }
    headers = [
        "saver",
        "turns/s",
        f"first {window} turns ms",
        f"last {window} turns ms",
        "last / first",
        "checkpoints kept",
        "messages",
    ]
    body = (
        f"One conversation of {s.long_turns} turns per saver (sync, one saver after another, "
        f"{2 * s.long_turns} messages at the end): turns/s over the whole conversation and the "
        f"mean milliseconds per turn of its first and last {window} turns, so the cost of a "
        "growing history shows. `checkpoints kept` is what `list()` returns at the end "
        f"({5 * s.long_turns} without a limit on history).\n\n"
        + table(headers, rows, right=[1, 2, 3, 4, 5, 6])
    )
    report.add(f"6. One {s.long_turns}-turn conversation (sync)", body)
    report.data["long_conversation"] = {"turns": s.long_turns, "window": window, "savers": data}


def _timed(fn: Callable[[int], Any], calls: int, warmup: int) -> list[float]:
    for i in range(warmup):
        fn(i)
    samples = []
    with settled_heap():
        for i in range(calls):
            start = time.perf_counter()
            fn(i)
            samples.append(time.perf_counter() - start)
    return samples


def phase_latency(
    s: Settings, entries: list[Entry], threads: dict[str, str], report: Report
) -> None:
    rows = []
    data: dict[str, Any] = {}
    for entry in entries:
        if entry.reference or not entry.inspect:
            continue
        if entry.skip:
            rows.append([entry.label, entry.skip, "", "", "", "", "", "", ""])
            data[entry.label] = {"skipped": entry.skip}
            continue
        saver = entry.saver
        thread = threads[entry.key]
        config = thread_config(thread)
        all_tuples = list(saver.list(config))
        ids = [t.config["configurable"]["checkpoint_id"] for t in all_tuples]
        latest = saver.get_tuple(config)
        messages = len(latest.checkpoint["channel_values"].get("messages", [])) if latest else -1
        problems: list[str] = []
        if latest is None or not ids or latest.config["configurable"]["checkpoint_id"] != ids[0]:
            problems.append("latest != first of list")

        def get_latest(i: int, saver: Any = saver, config: RunnableConfig = config) -> None:
            saver.get_tuple(config)

        def get_by_id(
            i: int,
            saver: Any = saver,
            thread: str = thread,
            ids: list[str] = ids,
            problems: list[str] = problems,
        ) -> None:
            wanted = ids[(i * 7919) % len(ids)]
            found = saver.get_tuple(thread_config(thread, wanted))
            if found is None or found.config["configurable"]["checkpoint_id"] != wanted:
                problems.append(f"get_tuple({wanted}) returned another checkpoint")

        expected = min(50, len(ids))

        def list_50(
            i: int,
            saver: Any = saver,
            config: RunnableConfig = config,
            expected: int = expected,
            problems: list[str] = problems,
        ) -> None:
            got = len(list(saver.list(config, limit=50)))
            if got != expected:
                problems.append(f"list(limit=50) returned {got}, expected {expected}")

        warm = 5
        samples = {
            "get_tuple (latest)": _timed(get_latest, s.latency_calls, warm),
            "get_tuple (by id)": _timed(get_by_id, s.latency_calls, warm),
            "list (limit=50)": _timed(list_50, s.latency_calls, warm),
        }
        progress(f"latency {entry.label}: {3 * s.latency_calls} calls done")
        row = [entry.label]
        for values in samples.values():
            row += [ms(percentile(values, 0.5)), ms(percentile(values, 0.95))]
        unique = sorted(set(problems))
        row += [str(len(ids)), str(messages), "ok" if not unique else "; ".join(unique[:3])]
        rows.append(row)
        data[entry.label] = {
            "checkpoints_in_thread": len(ids),
            "messages_in_latest": messages,
            "problems": unique,
            **{
                op: {
                    "p50_ms": percentile(v, 0.5) * 1000,
                    "p95_ms": percentile(v, 0.95) * 1000,
                    "calls": len(v),
                }
                for op, v in samples.items()
            },
        }
    headers = [
        "saver",
        "get_tuple latest p50",
        "p95",
        "get_tuple by id p50",
        "p95",
        "list(limit=50) p50",
        "p95",
        "checkpoints",
        "messages",
        "check",
    ]
    body = (
        f"Milliseconds, {s.latency_calls} calls per operation (after 5 warm-up calls) on a "
        f"conversation of {s.turns} turns; by-id lookups cycle over all checkpoints of the "
        "thread. Every timed batch in this benchmark starts with `gc.collect()` + "
        "`gc.freeze()`, so the collector does not rescan what earlier phases left on the heap "
        f"(without it, `list` p95 was ~3{TIMES} its p50 for every saver).\n\n"
        + table(headers, rows, right=[1, 2, 3, 4, 5, 6, 7, 8])
    )
    report.add("3. Read latency (sync API)", body)
    report.data["latency"] = {"turns": s.turns, "calls": s.latency_calls, "savers": data}


# --------------------------------------------------------------------------------------------
# 2. async throughput
# --------------------------------------------------------------------------------------------


async def phase_async(
    s: Settings, redis_url: str, pg: PostgresTarget, modules: ServerTarget, report: Report
) -> dict[str, OpResult] | None:
    results: dict[str, dict[str, Any]] = {}
    async_ops: dict[str, OpResult] | None = None
    async with contextlib.AsyncExitStack() as stack:
        entries = await open_async_savers(stack, redis_url, pg, modules)
        for entry in entries:
            if entry.skip:
                progress(f"async {entry.label}: {entry.skip}")
                continue
            warm = [
                arun_turns(entry.graph, f"bench-{s.run_id}-async-warm-{c}", 900 + c, range(2))
                for c in range(min(4, s.async_conversations))
            ]
            try:
                await asyncio.gather(*warm)
            except Exception as exc:
                drop_failed(entry, exc, results, "async")
        # Round 1 runs every saver; later rounds only the rows whose ratios carry a target (and
        # what they are compared with), alternating, and the best round of each is kept.
        for rnd in range(s.async_rounds):
            for entry in entries:
                if entry.skip or (rnd > 0 and not entry.rerun):
                    continue
                rt_before = round_trips(entry.saver)
                try:
                    with settled_heap():
                        start = time.perf_counter()
                        per_conv = await asyncio.gather(
                            *(
                                arun_turns(
                                    entry.graph,
                                    f"bench-{s.run_id}-async-r{rnd}-c{c}",
                                    c,
                                    range(s.async_turns),
                                )
                                for c in range(s.async_conversations)
                            )
                        )
                        elapsed = time.perf_counter() - start
                except Exception as exc:
                    drop_failed(entry, exc, results, "async")
                    continue
                rt_after = round_trips(entry.saver)
                durations = [d for conv in per_conv for d in conv]
                tps = len(durations) / elapsed
                if entry.key == OURS_KEY and rt_before is not None and rt_after is not None:
                    per_turn = (rt_after - rt_before) / len(durations)
                    report.data.setdefault("round_trips", {})["per_turn_async"] = per_turn
                res = results.setdefault(entry.key, {"tps": 0.0, "rounds": []})
                res["rounds"].append(tps)
                if tps > res["tps"]:
                    res.update(tps=tps, turn_s=durations)
                progress(
                    f"async round {rnd + 1}/{s.async_rounds} {entry.label}: {len(durations)} "
                    f"turns ({s.async_conversations} concurrent) in {elapsed:.2f} s = "
                    f"{tps:.1f} turns/s"
                )
        mine = next(e for e in entries if e.key == OURS_KEY)
        async_ops = await explicit_ops_async(mine.saver, f"bench-{s.run_id}-async-r0-c0")
        progress(f"round trips {mine.label}: explicit async calls done")

    table_text, data = throughput_section(entries, results, sync=False)
    body = (
        f"`asyncio.gather` of {s.async_conversations} conversations {TIMES} {s.async_turns} turns "
        "(`graph.ainvoke` loops) on one event loop, after 2 warm-up turns on 4 other threads. "
        f"Round 1 runs every saver; {s.async_rounds - 1} more round(s) rerun all but SQLite and "
        "PostgreSQL, alternating; the best round is kept. Turn latency is per `ainvoke` under "
        f"that concurrency. Target: ours at {GE} {TARGET_ASYNC_RATIO:.2f}{TIMES} InMemorySaver. "
        + table_text
    )
    report.add(f"2. Async throughput ({s.async_conversations} concurrent conversations)", body)
    report.data["async"] = {
        "conversations": s.async_conversations,
        "turns": s.async_turns,
        "rounds": s.async_rounds,
        **data,
    }
    return async_ops


def results_markdown(
    s: Settings,
    report: Report,
    machine: dict[str, Any],
    command: str,
    took: float,
    modules: str,
) -> str:
    header = [
        "# Checkpoint savers: one LangGraph workload, side by side",
        "",
        f"- date: {machine['date']}",
        f"- machine: nproc {machine['nproc']}, {machine['cpu'] or 'cpu n/a'}, "
        f"{machine['platform']}",
        f"- python {machine['python']}; {machine['redis_server']}",
        f"- langgraph-checkpoint-redis's server: {modules}",
        f"- load average (1/5/15 min) at start {machine['loadavg_start']}, at end "
        f"{machine['loadavg_end']} (other work on the machine skews the timings)",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
        f"- command: `{command}`" + (" (quick mode)" if s.quick else ""),
        f"- total run time: {took:.0f} s",
        "",
        "Workload: per turn `graph.invoke({'messages': [HumanMessage]})` through "
        "`retrieve -> agent -> summarize` (deterministic fake work, no LLM); the HumanMessage is "
        f"150{DASH}250 characters, the AIMessage 600{DASH}900, identical for every saver. "
        "State: `messages` (add_messages), `turn`, `context`. Redis runs as a private "
        "redis-server started by the benchmark; ours, ValkeySaver (which has no key prefix "
        "option) and plainredis (prefix `plainredis`) share it, each thread id used by one saver "
        "only. langgraph-checkpoint-redis needs RediSearch and RedisJSON: it runs on a private "
        "valkey-server with those modules, also started by the benchmark.",
        "",
    ]
    return "\n".join(header) + "\n" + "\n".join(report.sections)


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_args(argv)
    report = Report()
    progress(
        f"settings: {s.turns} turns, sync {s.rounds}{TIMES}{s.sync_conversations} conversations, "
        f"async {s.async_rounds}{TIMES}{s.async_conversations} concurrent {TIMES} "
        f"{s.async_turns} turns, {s.latency_calls} latency calls, long {s.long_turns} turns, "
        f"growth {s.growth_turns} turns; private Redis via redis_checkpoint.testing.RedisServer"
    )
    server_version = ""
    with (
        RedisServer() as srv,
        postgres_schema(s.postgres_url) as pg,
        module_server_target() as modules,
    ):
        progress(
            f"private redis at {srv.url}; postgres: "
            + (pg.skip_reason or f"schema {pg.schema} (dropped at exit)")
            + "; langgraph-checkpoint-redis: "
            + (modules.skip_reason or f"{modules.description} at {modules.url}")
        )
        client = srv.client()
        server_version = str(client.info("server").get("redis_version", ""))
        with contextlib.ExitStack() as stack:
            entries = open_sync_savers(stack, srv.url, pg, modules)
            threads = phase_sync(s, entries, report)
            phase_long(s, entries, report)
            async_ops = asyncio.run(phase_async(s, srv.url, pg, modules, report))
            phase_latency(s, entries, threads, report)
            mine = next(e for e in entries if e.key == OURS_KEY)
            sync_ops = phase_round_trips_sync(s.turns, mine, threads[OURS_KEY], client, report)
            report_round_trips(mine.label, sync_ops, async_ops, report)
        client.close()
        module_text = modules.skip_reason or modules.description
    phase_growth(s.growth_turns, s.run_id, report)
    phase_growth_by_saver(s.growth_turns, s.run_id, report)

    # Print and store in the numbered order.
    report.sections.sort(key=lambda text: text.split(".", 1)[0])
    took = since_start()
    machine = machine_info(server_version, PACKAGES)
    progress(f"done in {took:.1f} s")
    if s.write:
        command = command_line("benchmarks.checkpointer", argv)
        payload = {
            "command": command,
            "settings": {k: v for k, v in vars(s).items() if k != "run_id"},
            "machine": machine,
            "module_server": module_text,
            "elapsed_s": took,
            **report.data,
        }
        markdown = results_markdown(s, report, machine, command, took, module_text)
        write_results("checkpointer", markdown, payload)
        plots.write_figures("checkpointer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
