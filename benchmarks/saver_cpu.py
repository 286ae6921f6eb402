"""Where a turn's CPU goes: the benchmark graph's saver calls, recorded once and replayed.

Run from the project root::

    python -m benchmarks.saver_cpu [--conversations 20] [--turns 20] [--rounds 8]

``checkpointer.py`` times whole turns. There the graph's own work, its worker threads and this
machine's noise (about ±10 % between runs) blur what the saver itself costs. Here one async run
of the same graph (``workload.build_graph``, same concurrency) is recorded: every
``aget_tuple``, ``aput`` and ``aput_writes`` call LangGraph made, with its real arguments. The
calls are then replayed on each saver, each conversation in order and the conversations
concurrently, and only the replay's CPU time (``time.process_time``) counts. Rows alternate
within each round; the minimum over rounds is the figure (the median is shown beside it).

It prints and writes (``benchmarks/results/saver_cpu.md`` and ``.json``):

1. the graph's own CPU per turn (its run on InMemorySaver minus InMemorySaver's replay);
2. saver CPU per turn: InMemorySaver, AsyncRedisSaver, AsyncRedisSaver without its in-memory
   tier (``fallback=False``), a floor (AsyncRedisSaver with no in-memory tier, no metrics and
   compression switched off: what the rest costs), and RedisSaver (sync, one round trip per
   call);
3. the saver CPU per turn that ``checkpointer.py``'s 0.85x InMemorySaver target leaves:
   ``(graph + InMemorySaver) / 0.85 - graph``;
4. CPU per call of each operation (microseconds): InMemorySaver, RedisSaver (also without its
   in-memory tier, and without metrics too) and AsyncRedisSaver, the same calls replayed one at
   a time, each timed on its own.

Redis is a private ``redis-server`` started here. With two or more cores, it is pinned to one
core and this process to another, so the two do not take turns on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver

from benchmarks.checkpointer import TARGET_ASYNC_RATIO
from benchmarks.report import command_line, progress, utc_stamp, write_results
from benchmarks.workload import arun_turns, build_graph, settled_heap
from redis_checkpoint import AsyncRedisSaver, RedisSaver
from redis_checkpoint.checkpoint import codec
from redis_checkpoint.testing import RedisServer

OPS = ("aget_tuple", "aput", "aput_writes")

Recorded = dict[str, list[tuple[str, tuple[Any, ...]]]]  # thread id -> its calls in order


class RecordingSaver(InMemorySaver):
    """InMemorySaver that keeps every call LangGraph makes, per thread, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Recorded = collections.defaultdict(list)

    def _keep(self, name: str, args: tuple[Any, ...]) -> None:
        self.calls[args[0]["configurable"]["thread_id"]].append((name, args))

    async def aget_tuple(self, config: RunnableConfig) -> Any:
        self._keep("aget_tuple", (config,))
        return await super().aget_tuple(config)

    async def aput(self, *args: Any) -> RunnableConfig:
        self._keep("aput", args)
        return await super().aput(*args)

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        self._keep("aput_writes", args + tuple(kwargs.values()))
        await super().aput_writes(*args, **kwargs)


@contextlib.contextmanager
def counted(seconds: list[float]) -> Iterator[None]:
    """CPU time of the block, with the heap left by earlier work frozen (see settled_heap)."""
    with settled_heap():
        start = time.process_time()
        try:
            yield
        finally:
            seconds.append(time.process_time() - start)


def _rethread(config: RunnableConfig, prefix: str) -> RunnableConfig:
    configurable = dict(config["configurable"])
    configurable["thread_id"] = prefix + configurable["thread_id"]
    return {"configurable": configurable}


async def replay_async(saver: Any, calls: Recorded, prefix: str) -> None:
    async def conversation(steps: list[tuple[str, tuple[Any, ...]]]) -> None:
        for name, args in steps:
            await getattr(saver, name)(_rethread(args[0], prefix), *args[1:])

    await asyncio.gather(*(conversation(steps) for steps in calls.values()))


def replay_sync(saver: Any, calls: Recorded, prefix: str) -> None:
    for steps in calls.values():
        for name, args in steps:
            getattr(saver, name[1:])(_rethread(args[0], prefix), *args[1:])


PerCall = dict[str, list[float]]  # operation -> CPU seconds of each of its calls


def replay_timed(saver: Any, calls: Recorded, prefix: str, costs: PerCall) -> None:
    """Replay one call at a time (sync methods), each call's CPU time kept by operation."""
    for steps in calls.values():
        for name, args in steps:
            method, config = getattr(saver, name[1:]), _rethread(args[0], prefix)
            start = time.process_time()
            method(config, *args[1:])
            costs[name].append(time.process_time() - start)


async def areplay_timed(saver: Any, calls: Recorded, prefix: str, costs: PerCall) -> None:
    """:func:`replay_timed` with the async methods, awaited one at a time."""
    for steps in calls.values():
        for name, args in steps:
            method, config = getattr(saver, name), _rethread(args[0], prefix)
            start = time.process_time()
            await method(config, *args[1:])
            costs[name].append(time.process_time() - start)


class NoMetrics:
    """Takes every metrics call and records nothing (for the floor row only)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


async def uncompressed(replay: Awaitable[None]) -> None:
    """Run a replay with the codec's compression switched off, writes and reads alike (what
    compression costs; the stored bytes are then several times larger)."""
    saved = codec._deflate, codec._inflate
    codec._deflate = codec._inflate = lambda payload, zdict: payload
    try:
        await replay
    finally:
        codec._deflate, codec._inflate = saved


@dataclass
class CallRow:
    """One saver's CPU per call, by operation: the mean over each round's calls."""

    label: str
    rounds: list[PerCall] = field(default_factory=list)

    def microseconds(self, op: str, pick: Callable[[list[float]], float] = min) -> float:
        return pick([statistics.fmean(costs[op]) for costs in self.rounds]) * 1e6


@dataclass
class Row:
    label: str
    note: str
    seconds: list[float] = field(default_factory=list)

    def per_turn_ms(self, turns: int, pick: Callable[[list[float]], float] = min) -> float:
        return pick(self.seconds) / turns * 1000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    conversations, turns, rounds = args.conversations, args.turns, args.rounds
    total_turns = conversations * turns

    async def graph_run(tag: str) -> RecordingSaver:
        saver = RecordingSaver()
        graph = build_graph(saver)
        await asyncio.gather(
            *(arun_turns(graph, f"{tag}-c{c}", c, range(turns)) for c in range(conversations))
        )
        return saver

    progress(f"recording one run of {conversations} conversations x {turns} turns")
    await graph_run("warm")
    recorded = (await graph_run("rec")).calls
    counts = collections.Counter(name for steps in recorded.values() for name, _ in steps)
    per_turn_calls = {name: counts[name] / total_turns for name in OPS}

    graph_row = Row("graph on InMemorySaver (whole turns)", "the run itself, for the graph's share")
    memory_row = Row("InMemorySaver", "replay")
    ours_row = Row("AsyncRedisSaver", "replay, default options")
    bare_row = Row("AsyncRedisSaver, fallback=False", "replay, no in-memory tier to keep")
    floor_row = Row(
        "AsyncRedisSaver stripped (a floor, not a configuration)",
        "replay with no in-memory tier, no metrics and compression switched off",
    )
    sync_row = Row("RedisSaver (sync)", "replay one call at a time: a round trip each")
    with RedisServer() as server, pinned_apart(server.pid, args.pin) as pinned:
        progress(
            f"private redis at {server.url}"
            + ("; redis pinned to CPU 0, this process to CPU 1" if pinned else "")
        )
        async with contextlib.AsyncExitStack() as stack:
            ours = await stack.enter_async_context(AsyncRedisSaver.from_conn_string(server.url))
            bare = await stack.enter_async_context(
                AsyncRedisSaver.from_conn_string(server.url, fallback=False)
            )
            stripped = await stack.enter_async_context(
                AsyncRedisSaver.from_conn_string(server.url, fallback=False, metrics=NoMetrics())
            )
            sync = stack.enter_context(RedisSaver.from_conn_string(server.url))
            steps: list[tuple[Row, Callable[[str], Awaitable[None] | None]]] = [
                (graph_row, lambda tag: graph_run(tag)),
                (memory_row, lambda tag: replay_async(InMemorySaver(), recorded, tag)),
                (ours_row, lambda tag: replay_async(ours, recorded, tag)),
                (bare_row, lambda tag: replay_async(bare, recorded, tag)),
                (floor_row, lambda tag: uncompressed(replay_async(stripped, recorded, tag))),
                (sync_row, lambda tag: replay_sync(sync, recorded, tag)),
            ]
            for rnd in range(rounds):
                for index, (row, step) in enumerate(steps):
                    tag = f"r{rnd}-s{index}-"  # fresh threads for every replay
                    with counted(row.seconds):
                        outcome = step(tag)
                        if outcome is not None:
                            await outcome
                progress(
                    f"round {rnd + 1}/{rounds}: "
                    + ", ".join(
                        f"{r.label} {r.seconds[-1] / total_turns * 1000:.2f}" for r, _ in steps
                    )
                    + " ms/turn"
                )
            sync_bare = stack.enter_context(RedisSaver.from_conn_string(server.url, fallback=False))
            sync_plain = stack.enter_context(
                RedisSaver.from_conn_string(server.url, fallback=False, metrics=NoMetrics())
            )
            call_rows = await per_call_rounds(
                [
                    ("InMemorySaver (sync)", InMemorySaver),
                    ("RedisSaver (sync)", lambda: sync),
                    ("RedisSaver (sync), fallback=False", lambda: sync_bare),
                    ("RedisSaver (sync), fallback=False, no metrics", lambda: sync_plain),
                    ("AsyncRedisSaver", lambda: ours),
                ],
                recorded,
                rounds,
            )
    graph_ms = graph_row.per_turn_ms(total_turns) - memory_row.per_turn_ms(total_turns)
    memory_ms = memory_row.per_turn_ms(total_turns)
    budget_ms = (graph_ms + memory_ms) / TARGET_ASYNC_RATIO - graph_ms
    return {
        "conversations": conversations,
        "turns": turns,
        "rounds": rounds,
        "pinned": pinned,
        "calls_per_turn": per_turn_calls,
        "graph_ms": graph_ms,
        "budget_ms": budget_ms,
        "rows": [
            {
                "label": row.label,
                "note": row.note,
                "min_ms": row.per_turn_ms(total_turns),
                "median_ms": row.per_turn_ms(total_turns, statistics.median),
                "rounds_ms": [s / total_turns * 1000 for s in row.seconds],
            }
            for row in (memory_row, ours_row, bare_row, floor_row, sync_row)
        ],
        "per_call_us": [
            {
                "label": row.label,
                "min": {op: row.microseconds(op) for op in OPS},
                "median": {op: row.microseconds(op, statistics.median) for op in OPS},
            }
            for row in call_rows
        ],
    }


async def per_call_rounds(
    savers: Sequence[tuple[str, Callable[[], Any]]], recorded: Recorded, rounds: int
) -> list[CallRow]:
    """Each operation's CPU per call on each (label, saver maker) row, the rows alternating
    within each round; an AsyncRedisSaver is replayed through its async methods."""
    rows = [(CallRow(label), make) for label, make in savers]
    for rnd in range(rounds):
        for index, (row, make) in enumerate(rows):
            costs: PerCall = collections.defaultdict(list)
            saver, tag = make(), f"pc{rnd}-{index}-"
            with settled_heap():
                if isinstance(saver, AsyncRedisSaver):
                    await areplay_timed(saver, recorded, tag, costs)
                else:
                    replay_timed(saver, recorded, tag, costs)
            row.rounds.append(costs)
        progress(f"per call, round {rnd + 1}/{rounds}")
    return [row for row, _ in rows]


@contextlib.contextmanager
def pinned_apart(redis_pid: int | None, wanted: bool) -> Iterator[bool]:
    """Redis on one CPU and this process on another, when asked and the machine allows it;
    this process gets its CPUs back at the end."""
    if not wanted or redis_pid is None or not hasattr(os, "sched_setaffinity"):
        yield False
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield False
        return
    os.sched_setaffinity(redis_pid, {cpus[0]})
    os.sched_setaffinity(0, {cpus[1]})
    try:
        yield True
    finally:
        os.sched_setaffinity(0, cpus)


def report(result: dict[str, Any], command: str) -> str:
    turns = result["conversations"] * result["turns"]
    memory_ms = result["rows"][0]["min_ms"]
    budget = result["budget_ms"]
    lines = [
        "# Saver CPU per turn: the benchmark graph's calls, replayed",
        "",
        f"- date: {utc_stamp()}",
        f"- command: `{command}`",
        f"- {result['conversations']} conversations x {result['turns']} turns ({turns} turns), "
        f"{result['rounds']} rounds, rows alternating; min over rounds (median beside it)",
        "- calls per turn: "
        + ", ".join(f"{name} {n:.1f}" for name, n in result["calls_per_turn"].items()),
        f"- CPU pinning (redis on one core, this process on another): {result['pinned']}",
        "",
        f"The graph itself: **{result['graph_ms']:.2f} ms** of CPU per turn. The 0.85x "
        f"InMemorySaver target of `checkpointer.py` leaves a saver **{budget:.2f} ms** per "
        f"turn: (graph + InMemorySaver) / 0.85 - graph.",
        "",
        "| saver | what runs | CPU ms/turn (min) | median | x InMemorySaver "
        "| within 0.85x budget |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for row in result["rows"]:
        within = "yes" if row["min_ms"] <= budget else f"no (+{row['min_ms'] - budget:.2f} ms)"
        lines.append(
            f"| {row['label']} | {row['note']} | {row['min_ms']:.2f} | {row['median_ms']:.2f} "
            f"| {row['min_ms'] / memory_ms:.1f}x | {within} |"
        )
    lines += [
        "",
        "CPU per call (microseconds), the calls replayed one at a time, each timed on its own "
        "(min over rounds, median beside it):",
        "",
        "| saver | " + " | ".join(op[1:] for op in OPS) + " |",
        "| --- |" + " ---: |" * len(OPS),
    ]
    for entry in result["per_call_us"]:
        cells = [f"{entry['min'][op]:.0f} ({entry['median'][op]:.0f})" for op in OPS]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="leave CPU affinity alone"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results")
    args = parser.parse_args(argv)
    if min(args.conversations, args.turns, args.rounds) < 1:
        parser.error("counts must be >= 1")
    result = asyncio.run(run(args))
    text = report(result, command_line("benchmarks.saver_cpu", argv))
    print("\n" + text)
    if not args.no_write:
        write_results("saver_cpu", text, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
