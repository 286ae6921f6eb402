"""Failover drills: LangGraph conversations on the saver while a primary or the app is killed.

    python -m benchmarks.failover_drills [cluster] [sentinel] [app-kill] [--conversations N]
                                         [--turns N] [--think S] [--kill-at F]
                                         [--after-failover N] [--wait N]

Every server is a private redis-server started here on loopback (a 3+3 Redis Cluster, a
primary with a replica and three Sentinels, an AOF-backed server), never another Redis.

- ``cluster``: ``--conversations`` concurrent conversations of ``--turns`` turns each on
  AsyncRedisSaver (``redis+cluster://``); once ``--kill-at`` (a fraction) of all turns are
  acknowledged, one primary gets SIGKILL and its replica takes over. The conversations go on
  through the failover, and each one's last ``--after-failover`` turns wait until it is over;
  the saver is closed after that.
- ``sentinel``: the same on ``redis+sentinel://``; the primary gets SIGKILL and Sentinel promotes
  the replica.
- ``app-kill``: the application runs in a child process with ``fallback_journal``; Redis gets
  SIGKILL, the child keeps answering from memory, then the child gets SIGKILL too. Redis and the
  application are started again, and the new process writes back what the journal holds.

Each prints the errors callers saw, the acknowledged turns missing from Redis afterwards (read by
a fresh saver), turn latency (p50, p99, max), which threads went to memory and how many
write-backs each got. ``--wait N`` runs the cluster and sentinel drills with
``wait_replicas=N`` (default: both 0 and 1). Results: ``benchmarks/results/failover_drills.md``
and ``.json`` (with each cluster and Sentinel drill's turn latencies over time and the times of
the kill, the failover and the write-backs, which ``benchmarks/plots.py`` draws).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from benchmarks import plots
from benchmarks.report import (
    ROOT,
    command_line,
    percentile,
    progress,
    table,
    utc_stamp,
    write_results,
)
from redis_checkpoint import AsyncRedisSaver, RedisSaver, Settings
from redis_checkpoint.testing import (
    RedisClusterServers,
    RedisSentinelGroup,
    RedisServer,
)

# The app-kill drill runs its application and its recovery as this module in child processes.
MODULE = "benchmarks.failover_drills"
# Short timeouts, as a deployment that wants fast failover would set them.
TIMEOUTS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.25}
# The per-turn timeline in the results keeps every k-th turn beyond this many.
MAX_TIMELINE_POINTS = 2000


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def answer(state: State) -> dict[str, Any]:
    last = state["messages"][-1].content
    return {"messages": [AIMessage(f"answer to {last}")]}


def build_drill_graph(saver: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=saver)


def cfg(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def text(thread_id: str, turn: int) -> str:
    return f"{thread_id} turn {turn}"


@dataclass
class DrillResult:
    name: str
    conversations: int = 0
    acknowledged: int = 0
    lost: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    acked: dict[str, list[int]] = field(default_factory=dict)
    # The cluster and Sentinel drills: what the saver did around the failover.
    in_memory: set[str] = field(default_factory=set)  # threads served from memory
    on_victim: set[str] = field(default_factory=set)  # threads whose slots the victim served
    write_backs: Counter[str] = field(default_factory=Counter)  # per thread
    map_refreshed: bool = True
    turns_before_kill: int = 0
    failover_s: float | None = None
    started_at: float = 0.0  # perf_counter, when the conversations began
    killed_at: float = 0.0  # perf_counter
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) per turn
    write_back_times: list[float] = field(default_factory=list)  # perf_counter
    turns_after_failover: int = 0
    owed_before_close: int = 0
    owed_after_close: int = 0

    def row(self) -> list[str]:
        lat = self.latencies_ms or [0.0]
        return [
            self.name,
            str(len(self.errors)),
            f"{self.lost} / {self.acknowledged}",
            f"{percentile(lat, 0.5):.1f}",
            f"{percentile(lat, 0.99):.1f}",
            f"{max(lat):.0f}",
            "; ".join(f"{k}: {v}" for k, v in self.facts.items()),
        ]


HEADERS = ["drill", "errors surfaced", "turns lost / acknowledged", "p50 ms", "p99 ms", "max ms",
           "what happened"]  # fmt: skip


def missing_turns(url: str, prefix: str, acked: dict[str, list[int]]) -> int:
    """Acknowledged turns absent from the newest checkpoint a fresh saver reads."""
    lost = 0
    settings = Settings(url=url, **TIMEOUTS)
    with RedisSaver.from_conn_string(settings=settings, key_prefix=prefix, fallback=False) as saver:
        graph = build_drill_graph(saver)
        for thread_id, turns in acked.items():
            stored = {m.content for m in graph.get_state(cfg(thread_id)).values.get("messages", [])}
            lost += sum(text(thread_id, t) not in stored for t in turns)
    return lost


async def converse(
    graph: Any,
    thread_id: str,
    load: Load,
    result: DrillResult,
    on_turn: Callable[[], None],
    gate: tuple[int, asyncio.Event],
) -> None:
    for turn in range(load.turns):
        if turn == gate[0]:
            await gate[1].wait()  # the last turns come after the failover
        start = time.perf_counter()
        try:
            await graph.ainvoke({"messages": [HumanMessage(text(thread_id, turn))]}, cfg(thread_id))
        except Exception as exc:  # what the drill counts: an error a caller saw
            result.errors.append(f"{thread_id} turn {turn}: {exc!r}")
            continue
        end = time.perf_counter()
        result.latencies_ms.append((end - start) * 1000)
        result.spans.append((start, end))
        result.acked[thread_id].append(turn)
        on_turn()
        await asyncio.sleep(load.think)


def watch_memory(saver: AsyncRedisSaver, result: DrillResult) -> None:
    """Observe the router's hand-offs: the threads whose calls it served from memory, and the
    threads the tier wrote back (how many times each)."""
    router = saver._router
    memory = saver.memory
    assert memory is not None
    real_in_memory, real_written_back = router.in_memory, memory.written_back

    def in_memory(call: Any, cause: BaseException | None = None) -> list[Any]:
        if call.thread_id is not None:
            result.in_memory.add(call.thread_id)
        return real_in_memory(call, cause)

    def written_back(thread_id: str, ok: bool) -> None:
        if ok:
            result.write_backs[thread_id] += 1
            result.write_back_times.append(time.perf_counter())
        real_written_back(thread_id, ok)

    router.in_memory = in_memory  # type: ignore[method-assign]
    memory.written_back = written_back  # type: ignore[method-assign]


@dataclass
class Fault:
    """How a drill breaks its servers: ``kill`` (blocking) SIGKILLs the primary and returns a
    description of it; ``wait_failover`` (blocking) returns once a replica has taken over."""

    kill: Callable[[], str]
    wait_failover: Callable[[], None]


@dataclass(frozen=True)
class Load:
    """The conversations of a cluster or Sentinel drill, and when the fault strikes."""

    conversations: int = 50
    turns: int = 30
    think: float = 0.1  # seconds between a conversation's turns
    kill_at: float = 0.3  # the fraction of all turns acknowledged before the kill
    after_failover: int = 2  # each conversation's last turns wait for the failover
    wait_replicas: int = 0


async def run_conversations(
    url: str, prefix: str, result: DrillResult, fault: Fault, load: Load
) -> AsyncRedisSaver:
    """The conversations, with the fault injected once ``kill_at`` of all turns are
    acknowledged; each conversation's last ``after_failover`` turns wait until the failover
    is over. The saver is closed (writing back what the tier holds) after that, as a
    long-running application would see it."""
    threads = [f"conv-{i}" for i in range(load.conversations)]
    result.acked = {t: [] for t in threads}
    settings = Settings(url=url, **TIMEOUTS)
    kill_now, failed_over = asyncio.Event(), asyncio.Event()
    gate = max(0, load.turns - load.after_failover)
    total = load.conversations * load.turns
    threshold = min(int(load.kill_at * total), gate * load.conversations)
    if threshold <= 0:
        kill_now.set()
    done = 0

    def on_turn() -> None:
        nonlocal done
        done += 1
        if done >= threshold:
            kill_now.set()
        if result.failover_s is not None:
            result.turns_after_failover += 1

    async def inject() -> None:
        await kill_now.wait()
        victim = await asyncio.to_thread(fault.kill)
        result.killed_at = killed_at = time.perf_counter()
        result.turns_before_kill = done
        progress(f"{result.name}: SIGKILL {victim} after {done} turns")
        await asyncio.to_thread(fault.wait_failover)
        result.failover_s = time.perf_counter() - killed_at
        failed_over.set()
        progress(f"{result.name}: failover done after {result.failover_s:.1f} s")

    async with AsyncRedisSaver.from_conn_string(
        settings=settings, key_prefix=prefix, wait_replicas=load.wait_replicas, wait_timeout=0.2
    ) as saver:
        watch_memory(saver, result)
        graph = build_drill_graph(saver)
        result.started_at = time.perf_counter()
        injector = asyncio.ensure_future(inject())
        await asyncio.gather(
            *(converse(graph, t, load, result, on_turn, (gate, failed_over)) for t in threads)
        )
        await injector
        result.owed_before_close = saver.memory.pending if saver.memory else 0
        progress(f"{result.name}: conversations done; closing the saver (writes back the rest)")
    result.owed_after_close = saver.memory.pending if saver.memory else 0
    return saver


def drill(result: DrillResult, url: str, prefix: str, fault: Fault, load: Load) -> AsyncRedisSaver:
    """What the cluster and Sentinel drills share: converse through the fault, then count the
    acknowledged turns a fresh saver does not find."""
    result.conversations = load.conversations
    saver = asyncio.run(run_conversations(url, prefix, result, fault, load))
    result.acknowledged = sum(len(t) for t in result.acked.values())
    result.lost = missing_turns(url, prefix, result.acked)
    facts = result.facts
    facts["killed after"] = f"{result.turns_before_kill} turns"
    facts["failover took"] = f"{result.failover_s:.1f} s" if result.failover_s else "-"
    facts["turns after failover"] = result.turns_after_failover
    facts["p50/p99 ms"] = phases(result)
    facts["threads served from memory"] = len(result.in_memory)
    facts["write-backs"] = saver.write_backs
    facts["most write-backs of one thread"] = max(result.write_backs.values(), default=0)
    facts["owed at close"] = result.owed_before_close
    facts["owed after close"] = result.owed_after_close
    return saver


def phases(result: DrillResult) -> str:
    """Turn latency split at the kill and at the failover's end (a turn that overlaps the
    failover counts for it): what the outage costs, apart from the load's own latency."""
    killed = result.killed_at
    over = killed + (result.failover_s or 0.0)
    split: dict[str, list[float]] = {"before": [], "failover": [], "after": []}
    for (start, end), ms in zip(result.spans, result.latencies_ms, strict=True):
        phase = "before" if end < killed else "after" if start > over else "failover"
        split[phase].append(ms)
    return ", ".join(
        f"{name} {percentile(v, 0.5):.0f}/{percentile(v, 0.99):.0f}" if v else f"{name} -"
        for name, v in split.items()
    )


def timeline(result: DrillResult) -> dict[str, Any]:
    """Each turn's latency by its start (seconds since the conversations began; every k-th turn
    when there are more than MAX_TIMELINE_POINTS) and the times of the kill, the end of the
    failover and the write-backs: what ``benchmarks/plots.py`` draws."""
    origin = result.started_at
    turns = sorted(zip((start for start, _ in result.spans), result.latencies_ms, strict=True))
    every = max(1, math.ceil(len(turns) / MAX_TIMELINE_POINTS))
    events: dict[str, Any] = {"kill_s": round(result.killed_at - origin, 3)}
    if result.failover_s is not None:
        events["failover_over_s"] = round(result.killed_at + result.failover_s - origin, 3)
    events["write_backs_s"] = [round(t - origin, 3) for t in result.write_back_times]
    return {
        "turns": len(turns),
        "every": every,
        "start_s": [round(start - origin, 4) for start, _ in turns[::every]],
        "latency_ms": [round(ms, 2) for _, ms in turns[::every]],
        "events": events,
    }


def summarize(result: DrillResult) -> DrillResult:
    progress(
        f"{result.name}: {len(result.errors)} errors, {result.lost} of {result.acknowledged} "
        "acknowledged turns lost"
    )
    return result


# -- the drills ----------------------------------------------------------------------------------


def cluster_drill(
    load: Load = Load(), node_timeout_ms: int = 1000, binary: str | None = None
) -> DrillResult:
    result = DrillResult(f"cluster 3+3, kill -9 a primary, wait_replicas={load.wait_replicas}")
    prefix = f"drill-cluster-{load.wait_replicas}"
    progress(f"{result.name}: starting a 3+3 cluster")
    with RedisClusterServers(
        replicas=1,
        node_timeout_ms=node_timeout_ms,
        args=["--cluster-require-full-coverage", "no"],
        binary=binary,
    ) as cluster:
        victim = cluster.primaries()[0]
        promoted: list[RedisServer] = []

        def kill() -> str:
            cluster.kill(victim)
            return f"cluster primary {victim.port}"

        def wait_failover() -> None:
            promoted.append(cluster.wait_failover(victim))

        # Every node as a startup node, as a deployment lists them: the fresh saver that counts
        # the lost turns afterwards must not depend on the killed one.
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in cluster.ports)
        saver = drill(result, url, prefix, Fault(kill, wait_failover), load)
        new = promoted[0]
        for thread_id in result.acked:
            key = saver.core.keys(thread_id).idx
            if cluster.primary_for_key(key).port == new.port:
                result.on_victim.add(thread_id)
        # The saver's slot map after the failover: the victim's threads on the promoted node.
        assert saver._router.locate is not None
        result.map_refreshed = all(
            saver._router.locate(saver.core.keys(t).idx).endswith(f":{new.port}")
            for t in result.on_victim
        )
        result.facts["threads on the killed primary"] = len(result.on_victim)
        result.facts["others served from memory"] = len(result.in_memory - result.on_victim)
        result.facts["slot map refreshed"] = "yes" if result.map_refreshed else "NO"
    return summarize(result)


def sentinel_drill(
    load: Load = Load(), down_after_ms: int = 1000, binary: str | None = None
) -> DrillResult:
    result = DrillResult(f"Sentinel, kill -9 the primary, wait_replicas={load.wait_replicas}")
    prefix = f"drill-sentinel-{load.wait_replicas}"
    progress(f"{result.name}: starting a primary, a replica and 3 sentinels")
    with RedisSentinelGroup(
        replicas=1, down_after_ms=down_after_ms, failover_timeout_ms=5000, binary=binary
    ) as group:
        killed: list[RedisServer] = []

        def kill() -> str:
            killed.append(group.kill_primary())
            return f"primary {killed[0].port}"

        def wait_failover() -> None:
            group.wait_failover(killed[0])

        drill(result, group.url, prefix, Fault(kill, wait_failover), load)
        result.on_victim = set(result.acked)  # one primary holds every thread
    return summarize(result)


def app_kill_drill(
    conversations: int = 20,
    turns_before: int = 3,
    turns_during: int = 5,
    think: float = 0.05,
    binary: str | None = None,
) -> DrillResult:
    """Redis dies, then the application dies during the outage; both come back. The faults
    fire once every conversation has ``turns_before`` turns acknowledged, then
    ``turns_during`` more while Redis is down."""
    result = DrillResult("app kill -9 during an outage (fallback_journal)")
    result.conversations = conversations
    journal = tempfile.mkdtemp(prefix="rc-journal-")
    with RedisServer(appendonly=True, binary=binary) as server:
        progress(f"{result.name}: starting the application process")
        app = subprocess.Popen(
            [sys.executable, "-m", MODULE, "--role", "app", "--url", server.url,
             "--journal", journal, "--conversations", str(conversations), "--think", str(think)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )  # fmt: skip
        assert app.stdout is not None and app.stderr is not None
        acked: dict[str, list[int]] = {f"conv-{i}": [] for i in range(conversations)}
        during: dict[str, int] = dict.fromkeys(acked, 0)
        killed_at: list[float] = []
        changed = threading.Condition()

        def read() -> None:
            for line in app.stdout or []:
                event = json.loads(line)
                with changed:
                    acked[event["thread"]].append(event["turn"])
                    result.latencies_ms.append(event["ms"])
                    if killed_at and event["at"] >= killed_at[0]:
                        during[event["thread"]] += 1
                    changed.notify_all()

        def until(done: Callable[[], bool], what: str) -> None:
            with changed:
                if not changed.wait_for(done, timeout=120):
                    raise RuntimeError(f"the application never got {what}")

        errors: list[str] = []
        readers = [
            threading.Thread(target=read, daemon=True),
            threading.Thread(target=lambda: errors.extend(app.stderr or []), daemon=True),
        ]
        for reader in readers:
            reader.start()
        until(lambda: all(len(t) >= turns_before for t in acked.values()), "its first turns")
        server.kill()
        killed_at.append(time.time())
        progress(f"{result.name}: SIGKILL redis-server; the app answers from memory")
        until(lambda: all(n >= turns_during for n in during.values()), "turns during the outage")
        app.send_signal(signal.SIGKILL)
        app.wait()
        for reader in readers:
            reader.join(5)
        # What the app printed on stderr: its callers' errors (one JSON line each) and logs.
        result.errors += [line for line in errors if line.startswith('{"error"')]
        progress(f"{result.name}: SIGKILL the app; restarting Redis, then the app")
        server.restart()
        owed = len(list(Path(journal).glob("*.journal")))
        recover = subprocess.run(
            [sys.executable, "-m", MODULE, "--role", "recover", "--url", server.url,
             "--journal", journal],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )  # fmt: skip
        if recover.returncode != 0:
            result.errors.append(f"recovery failed: {recover.stderr[-2000:]}")
        result.facts["turns acknowledged while Redis was down"] = sum(during.values())
        result.facts["journal segments left by the killed app"] = owed
        result.facts["recovery"] = recover.stdout.strip() or "-"
        result.facts["journal segments after recovery"] = len(list(Path(journal).glob("*")))
        lost = missing_turns(server.url, "drill-app", acked)
    result.acknowledged = sum(len(t) for t in acked.values())
    result.lost = lost
    return summarize(result)


async def app_role(url: str, journal: str, conversations: int, think: float) -> None:
    """The application of the app-kill drill: converses until killed, one JSON line per
    acknowledged turn on stdout."""
    settings = Settings(url=url, **TIMEOUTS)
    async with AsyncRedisSaver.from_conn_string(
        settings=settings, key_prefix="drill-app", fallback_journal=journal
    ) as saver:
        graph = build_drill_graph(saver)

        async def talk(thread_id: str) -> None:
            turn = 0
            while True:
                start = time.perf_counter()
                try:
                    await graph.ainvoke(
                        {"messages": [HumanMessage(text(thread_id, turn))]}, cfg(thread_id)
                    )
                except Exception as exc:
                    print(json.dumps({"error": repr(exc)}), file=sys.stderr, flush=True)
                    return
                ms = (time.perf_counter() - start) * 1000
                event = {"thread": thread_id, "turn": turn, "ms": ms, "at": time.time()}
                sys.stdout.write(json.dumps(event) + "\n")
                sys.stdout.flush()
                turn += 1
                await asyncio.sleep(think)

        await asyncio.gather(*(talk(f"conv-{i}") for i in range(conversations)))


def recover_role(url: str, journal: str) -> None:
    """The application started again: opening the saver writes back what the journal owes."""
    with RedisSaver.from_conn_string(
        url, key_prefix="drill-app", fallback_journal=journal
    ) as saver:
        written = saver.write_backs
        owed = saver.memory.pending if saver.memory is not None else 0
    print(f"the new process wrote back {written} threads at setup ({owed} still owed)")


# -- the command ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("drills", nargs="*", default=["cluster", "sentinel", "app-kill"])
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--think", type=float, default=0.1)
    parser.add_argument("--kill-at", type=float, default=0.3)
    parser.add_argument("--after-failover", type=int, default=2)
    parser.add_argument("--wait", type=int, action="append")
    parser.add_argument("--role", choices=["app", "recover"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--journal", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "app":
        asyncio.run(app_role(args.url, args.journal, args.conversations, args.think))
        return 0
    if args.role == "recover":
        recover_role(args.url, args.journal)
        return 0
    waits = args.wait or [0, 1]
    loads = [
        Load(args.conversations, args.turns, args.think, args.kill_at, args.after_failover, wait)
        for wait in waits
    ]
    results = []
    for name in args.drills:
        if name == "cluster":
            results += [cluster_drill(load) for load in loads]
        elif name == "sentinel":
            results += [sentinel_drill(load) for load in loads]
        elif name == "app-kill":
            results.append(app_kill_drill(conversations=min(args.conversations, 20)))
        else:
            parser.error(f"unknown drill {name!r}")
    command, date = command_line(MODULE, argv), utc_stamp()
    report = (
        f"# Failover drills\n\nRun {date} by `{command}` on private redis-server "
        f"processes (loopback, 2 shared cores): {args.conversations} concurrent conversations x "
        f"{args.turns} turns for the cluster and Sentinel drills (a turn: a LangGraph graph "
        f"call, {args.think} s of think time between turns), the primary killed once "
        f"{args.kill_at:.0%} of the turns were acknowledged, each conversation's last "
        f"{args.after_failover} turns after the failover. 'turns lost' counts acknowledged "
        "turns a fresh saver does not find in Redis afterwards; 'threads served from memory' "
        "are those the saver answered from its in-memory tier at least once.\n\n"
        + table(HEADERS, [r.row() for r in results])
        + "\n"
    )
    print(report)
    drills = {
        r.name: {
            "errors": r.errors[:20],
            "acknowledged": r.acknowledged,
            "lost": r.lost,
            "p50_ms": percentile(r.latencies_ms or [0.0], 0.5),
            "p99_ms": percentile(r.latencies_ms or [0.0], 0.99),
            "max_ms": max(r.latencies_ms or [0.0]),
            "facts": {k: str(v) for k, v in r.facts.items()},
            **({"timeline": timeline(r)} if r.spans else {}),  # the app-kill drill has none
        }
        for r in results
    }
    payload = {"date": date, "command": command, "drills": drills}
    write_results("failover_drills", report, payload)
    plots.write_figures("failover_drills")
    return 0 if all(not r.errors and not r.lost for r in results) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
