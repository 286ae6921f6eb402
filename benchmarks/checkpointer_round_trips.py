"""Part 4 of ``checkpointer.py``: what each operation of our saver costs Redis.

Round trips (``saver.round_trips`` before and after a call), and from the private server's
SLOWLOG and ``INFO stats``: commands, server time and bytes, for explicit calls and for the calls
LangGraph itself makes during a turn.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import redis
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    copy_checkpoint,
)
from langgraph.checkpoint.base.id import uuid6

from benchmarks.report import DASH, LE, Report, progress, table
from benchmarks.workload import (
    Entry,
    assistant_text,
    build_graph,
    rank_docs,
    round_trips,
    thread_config,
    turn_input,
    user_text,
)

# Our reading of DESIGN.md ("a thread's operations can be one pipeline / MULTI / Lua call"):
# every checkpoint operation is a single round trip.
TARGET_ROUND_TRIPS: dict[str, int] = {
    "put": 1,
    "put_writes": 1,
    "get_tuple (latest)": 1,
    "get_tuple (by id)": 1,
    "list (limit=50)": 1,
}


ServerDelta = tuple[int, int, int, int, int]


class ServerCounters:
    """What one operation cost our private server, from its SLOWLOG with a 0 µs threshold
    (every command is logged; commands run inside a script are logged with the client address
    ``?:0``): top-level commands and their server time, all commands including those scripts
    ran, and bytes in/out from ``INFO stats`` (minus what the INFO call itself accounts for)."""

    _OWN = (b"INFO", b"SLOWLOG", b"CONFIG")
    _SCRIPT_CLIENT = (b"?:0", "?:0")

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.base_in = 0
        self.base_out = 0
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> ServerCounters:
        self._saved = self.client.config_get("slowlog-*")
        self.client.config_set("slowlog-log-slower-than", 0)
        self.client.config_set("slowlog-max-len", 100000)
        a = self.snapshot()
        b = self._net()
        self.base_in = b[0] - a[0]
        self.base_out = b[1] - a[1]
        return self

    def __exit__(self, *exc: object) -> None:
        for name, value in self._saved.items():
            self.client.config_set(name, value)
        self.client.slowlog_reset()

    def _net(self) -> tuple[int, int]:
        net = self.client.info("stats")
        return int(net["total_net_input_bytes"]), int(net["total_net_output_bytes"])

    def snapshot(self) -> tuple[int, int]:
        self.client.slowlog_reset()
        return self._net()

    def delta(self, before: tuple[int, int]) -> ServerDelta:
        after = self._net()
        entries = self.client.slowlog_get(-1)
        top_level = in_scripts = usec = 0
        for entry in entries:
            command = entry.get("command", b"")
            if isinstance(command, str):
                command = command.encode()
            if command.split(b" ", 1)[0].upper() in self._OWN:
                continue
            if entry.get("client_address") in self._SCRIPT_CLIENT:
                in_scripts += 1
            else:
                top_level += 1
                usec += int(entry.get("duration", 0))
        return (
            top_level + in_scripts,
            after[0] - before[0] - self.base_in,
            after[1] - before[1] - self.base_out,
            top_level,
            usec,
        )


def _next_checkpoint(
    saver: Any, latest: CheckpointTuple, conv: int, turn: int
) -> tuple[RunnableConfig, Checkpoint, CheckpointMetadata, ChannelVersions, list[tuple[str, Any]]]:
    """A realistic next put: the agent appended one AIMessage to the latest checkpoint."""
    question = user_text(conv, turn)
    ai = AIMessage(
        content=assistant_text(conv, turn, question, rank_docs(question)[0][1]),
        id=f"a-{conv}-{turn}",
    )
    checkpoint = copy_checkpoint(latest.checkpoint)
    checkpoint["id"] = str(uuid6(clock_seq=turn))
    checkpoint["ts"] = datetime.now(timezone.utc).isoformat()
    values = dict(checkpoint["channel_values"])
    values["messages"] = [*values.get("messages", []), ai]
    checkpoint["channel_values"] = values
    version = saver.get_next_version(checkpoint["channel_versions"].get("messages"), None)
    checkpoint["channel_versions"]["messages"] = version
    metadata: CheckpointMetadata = {
        "source": "loop",
        "step": int(latest.metadata.get("step", 0)) + 1,
        "parents": {},
    }
    writes: list[tuple[str, Any]] = [("messages", [ai]), ("turn", turn + 1)]
    return latest.config, checkpoint, metadata, {"messages": version}, writes


OpResult = dict[str, Any]


def _explicit_ops_sync(
    saver: Any, thread: str, counters: ServerCounters | None
) -> dict[str, OpResult]:
    config = thread_config(thread)
    results: dict[str, list[tuple[int | None, ServerDelta | None, float]]] = {}

    def measure(name: str, fn: Callable[[], Any]) -> Any:
        before_rt = round_trips(saver)
        before_srv = counters.snapshot() if counters else None
        start = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - start
        after_rt = round_trips(saver)
        srv = counters.delta(before_srv) if counters and before_srv else None
        rt = after_rt - before_rt if after_rt is not None and before_rt is not None else None
        results.setdefault(name, []).append((rt, srv, elapsed))
        return out

    ids = [t.config["configurable"]["checkpoint_id"] for t in saver.list(config)]
    for rep in range(3):
        latest = measure("get_tuple (latest)", lambda: saver.get_tuple(config))
        middle = thread_config(thread, ids[len(ids) // 2])
        measure("get_tuple (by id)", lambda middle=middle: saver.get_tuple(middle))
        measure("list (limit=50)", lambda: list(saver.list(config, limit=50)))
        parent, checkpoint, md, versions, writes = _next_checkpoint(saver, latest, 7, 900 + rep)
        new_config = measure("put", lambda a=(parent, checkpoint, md, versions): saver.put(*a))
        task_id = str(uuid.uuid4())
        measure(
            "put_writes",
            lambda c=new_config, w=writes, t=task_id: saver.put_writes(
                c, w, t, "~__pregel_pull, agent"
            ),
        )
    return _summarize_ops(results)


async def explicit_ops_async(saver: Any, thread: str) -> dict[str, OpResult]:
    config = thread_config(thread)
    results: dict[str, list[tuple[int | None, ServerDelta | None, float]]] = {}

    async def measure(name: str, make: Callable[[], Any]) -> Any:
        before_rt = round_trips(saver)
        start = time.perf_counter()
        out = await make()
        elapsed = time.perf_counter() - start
        after_rt = round_trips(saver)
        rt = after_rt - before_rt if after_rt is not None and before_rt is not None else None
        results.setdefault(name, []).append((rt, None, elapsed))
        return out

    async def alist(cfg: RunnableConfig, limit: int | None) -> list[CheckpointTuple]:
        return [t async for t in saver.alist(cfg, limit=limit)]

    ids = [t.config["configurable"]["checkpoint_id"] for t in await alist(config, None)]
    for rep in range(3):
        latest = await measure("get_tuple (latest)", lambda: saver.aget_tuple(config))
        middle = thread_config(thread, ids[len(ids) // 2])
        await measure("get_tuple (by id)", lambda middle=middle: saver.aget_tuple(middle))
        await measure("list (limit=50)", lambda: alist(config, 50))
        parent, checkpoint, md, versions, writes = _next_checkpoint(saver, latest, 8, 900 + rep)
        new_config = await measure(
            "put", lambda a=(parent, checkpoint, md, versions): saver.aput(*a)
        )
        task_id = str(uuid.uuid4())
        await measure(
            "put_writes",
            lambda c=new_config, w=writes, t=task_id: saver.aput_writes(
                c, w, t, "~__pregel_pull, agent"
            ),
        )
    return _summarize_ops(results)


def _summarize_ops(
    results: dict[str, list[tuple[int | None, ServerDelta | None, float]]],
) -> dict[str, OpResult]:
    out: dict[str, OpResult] = {}
    for name, samples in results.items():
        rts = [r for r, _, _ in samples if r is not None]
        srv = [v for _, v, _ in samples if v is not None]
        out[name] = {
            "round_trips": rts,
            "server_commands": [v[0] for v in srv],
            "server_top_level_commands": [v[3] for v in srv],
            "server_usec": [v[4] for v in srv],
            "bytes_to_server": [v[1] for v in srv],
            "bytes_from_server": [v[2] for v in srv],
            "ms": [t * 1000 for _, _, t in samples],
        }
    return out


def _span(values: Sequence[int]) -> str:
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}{DASH}{hi}"


class CallRecorder:
    """Wraps a saver's methods on the instance; records round trips per call in a graph run."""

    def __init__(self, saver: Any, names: Sequence[str]) -> None:
        self.saver = saver
        self.names = names
        self.lock = threading.Lock()
        self.active: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []

    def __enter__(self) -> CallRecorder:
        for name in self.names:
            original = getattr(self.saver, name)
            setattr(self.saver, name, self._wrap(name, original))
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.names:
            with contextlib.suppress(AttributeError):
                delattr(self.saver, name)

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            record: dict[str, Any] = {"op": name, "overlapped": False}
            with self.lock:
                if self.active:
                    record["overlapped"] = True
                    for other in self.active:
                        other["overlapped"] = True
                self.active.append(record)
                record["before"] = round_trips(self.saver)
            try:
                return original(*args, **kwargs)
            finally:
                with self.lock:
                    after = round_trips(self.saver)
                    before = record.pop("before")
                    record["round_trips"] = (
                        after - before if after is not None and before is not None else None
                    )
                    self.active.remove(record)
                    self.calls.append(record)

        return wrapper


def phase_round_trips_sync(
    turns: int,
    entry: Entry,
    thread: str,
    client: redis.Redis,
    report: Report,
) -> dict[str, OpResult]:
    # SLOWLOG at 0 µs only for these few calls: it would slow down the throughput phases.
    with ServerCounters(client) as counters:
        explicit = _explicit_ops_sync(entry.saver, thread, counters)
    # The same operations as the graph issues them, on 3 more turns of the conversation, with
    # durability="sync" so that calls do not overlap (overlapping calls are left out).
    instrumented = 3
    rt_before = round_trips(entry.saver)
    with CallRecorder(entry.saver, ["get_tuple", "put", "put_writes"]) as recorder:
        graph = build_graph(entry.saver)
        for turn in range(turns, turns + instrumented):
            graph.invoke(turn_input(0, turn), thread_config(thread), durability="sync")
    rt_after = round_trips(entry.saver)
    in_graph: dict[str, list[int]] = {}
    overlapped = 0
    for call in recorder.calls:
        if call["overlapped"]:
            overlapped += 1
        elif call["round_trips"] is not None:
            in_graph.setdefault(call["op"], []).append(call["round_trips"])
    calls_per_turn: dict[str, float] = {}
    for call in recorder.calls:
        calls_per_turn[call["op"]] = calls_per_turn.get(call["op"], 0) + 1 / instrumented
    report.data.setdefault("round_trips", {})["sync_in_graph"] = {
        "round_trips_per_call": in_graph,
        "overlapped_excluded": overlapped,
        "calls": len(recorder.calls),
        "saver_calls_per_turn": calls_per_turn,
        "round_trips_per_turn": (
            (rt_after - rt_before) / instrumented
            if rt_before is not None and rt_after is not None
            else None
        ),
    }
    progress(f"round trips {entry.label}: explicit calls and 3 instrumented turns done")
    return {
        **explicit,
        **{f"in graph: {op}": {"round_trips": v} for op, v in sorted(in_graph.items())},
    }


def report_round_trips(
    label: str,
    sync_ops: dict[str, OpResult] | None,
    async_ops: dict[str, OpResult] | None,
    report: Report,
) -> None:
    rows = []
    names = list(TARGET_ROUND_TRIPS)
    extra = sorted(k for k in (sync_ops or {}) if k not in TARGET_ROUND_TRIPS)
    for name in [*names, *extra]:
        sync = (sync_ops or {}).get(name, {})
        asyn = (async_ops or {}).get(name, {})
        target = TARGET_ROUND_TRIPS.get(name)
        if name.startswith("in graph: "):
            target = TARGET_ROUND_TRIPS.get(name.removeprefix("in graph: "))
            if target is None and name.endswith("get_tuple"):
                target = TARGET_ROUND_TRIPS["get_tuple (latest)"]
        rts = sync.get("round_trips", [])
        flag = ""
        if target is not None and rts and max(rts) > target:
            flag = " (above target)"
        rows.append(
            [
                name,
                _span(rts) + flag,
                _span(asyn.get("round_trips", [])),
                f"{LE} {target}" if target is not None else "",
                _span(sync.get("server_top_level_commands", [])),
                _span(sync.get("server_commands", [])),
                _span(sync.get("server_usec", [])),
                _span(sync.get("bytes_to_server", [])),
                _span(sync.get("bytes_from_server", [])),
                f"{statistics.median(sync['ms']):.2f}" if sync.get("ms") else "",
            ]
        )
    data = report.data.get("round_trips", {})
    graph_info = data.get("sync_in_graph", {})
    per_call = graph_info.get("saver_calls_per_turn", {})
    calls = sum(per_call.values())

    def per_turn(key: str) -> str:
        value = data.get(key)
        return f"{value:.2f}" if isinstance(value, float) else "n/a"

    rows.append(
        [
            "per turn (graph.invoke)",
            per_turn("per_turn_sync"),
            per_turn("per_turn_async"),
            f"{LE} {calls:.0f} (1 per call)" if calls else "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
    )
    headers = [
        "operation",
        "round trips (sync)",
        "(async)",
        "target",
        "top-level cmds",
        "cmds incl. in scripts",
        "server µs",
        "bytes to server",
        "bytes from server",
        "sync ms",
    ]
    note = (
        "Each explicit operation called 3 times on the thread of a finished conversation (min"
        f"{DASH}max shown); `put` stores the latest checkpoint plus one new AIMessage, "
        "`put_writes` two writes on it. Round trips are `saver.round_trips` after minus before. "
        "From the private server's SLOWLOG (threshold 0 µs): top-level commands (a script call "
        "is one) and their server time, and all commands including those scripts ran; bytes "
        "from `INFO stats` (minus the INFO call itself); `sync ms` is the median wall time of "
        "the call. `in graph:` rows are the calls LangGraph "
        'itself made during 3 more turns with durability="sync"; calls that overlapped another '
        f"saver call ({graph_info.get('overlapped_excluded', 0)} of "
        f"{graph_info.get('calls', 0)}) cannot be attributed and are left out. `per turn` is "
        "the saver's round trips over the throughput phases divided by the turns; LangGraph "
        "made "
        + ", ".join(f"{v:.1f} {k}" for k, v in sorted(per_call.items()))
        + " calls per turn."
    )
    report.add(
        f"4. Redis round trips per operation ({label})",
        note + "\n\n" + table(headers, rows, right=[1, 2, 4, 5, 6, 7, 8, 9]),
    )
    report.data.setdefault("round_trips", {}).update(
        {"sync": sync_ops, "async": async_ops, "targets": TARGET_ROUND_TRIPS}
    )
