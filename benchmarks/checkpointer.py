#!/usr/bin/env python
"""Checkpoint savers side by side on one LangGraph workload.

Run from the project root::

    python benchmarks/checkpointer.py [--turns N] [--conversations N] [--quick]

The workload is a small chat graph (``retrieve -> agent -> summarize``, no LLM, deterministic
text) run on InMemorySaver, SqliteSaver, PostgresSaver (when reachable) and our RedisSaver in the
same process, plus their async twins. It prints and writes (``benchmarks/results/checkpointer.md``
and ``.json``):

1. sync turns/s, conversations one after another, ratio to InMemorySaver;
2. async turns/s with ``--conversations`` concurrent conversations, ratio to InMemorySaver;
3. p50/p95 latency of ``get_tuple`` (latest, by id) and ``list(limit=50)``;
4. Redis round trips per operation of our saver (``saver.round_trips`` read before/after a call);
5. Redis bytes per turn of our saver (``INFO memory``) against the bytes of the messages the turn
   added, with InMemorySaver's stored bytes as the naive reference.

All Redis measurements use private ``redis-server`` processes started here; the script never
touches any other Redis. Targets are printed next to measured values, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import math
import os
import platform
import random
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Annotated, Any, Protocol, TypedDict

import redis
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    copy_checkpoint,
)
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

TIMES = "\u00d7"  # multiplication sign
DASH = "\u2013"  # en dash
GE = "\u2265"
LE = "\u2264"

# Printed next to the measured values; never asserted.
TARGET_SYNC_RATIO = 0.85
TARGET_ASYNC_RATIO = 0.85
TARGET_BYTES_RATIO = 5.0
# Our reading of DESIGN.md ("a thread's operations can be one pipeline / MULTI / Lua call"):
# every checkpoint operation is a single round trip.
TARGET_ROUND_TRIPS: dict[str, int] = {
    "put": 1,
    "put_writes": 1,
    "get_tuple (latest)": 1,
    "get_tuple (by id)": 1,
    "list (limit=50)": 1,
}

_T0 = time.perf_counter()


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


LOADAVG_START = _loadavg()


@contextlib.contextmanager
def settled_heap() -> Iterator[None]:
    """Collect, then freeze what exists, for one measurement: the objects earlier phases left
    behind are not rescanned by the collector, so one saver's timing does not pay for another's
    heap. Garbage the measured code makes itself is collected as usual."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Deterministic workload text
# --------------------------------------------------------------------------------------------

_SUBJECTS = (
    "the checkout service",
    "our nightly export job",
    "the billing webhook",
    "the search index rebuild",
    "the mobile login flow",
    "the invoice PDF renderer",
    "the staging cluster",
    "the recommendation model",
    "the customer CSV import",
    "the audit log shipper",
)
_PROBLEMS = (
    "times out after about thirty seconds",
    "returns a 502 for roughly one request in fifty",
    "drops every second batch without logging an error",
    "uses twice the memory it did last week",
    "retries forever when the upstream is slow",
    "writes duplicate rows right after a deploy",
    "shows stale prices to some customers",
    "fails only for accounts created before March",
)
_CONTEXT = (
    "We deployed version {v} yesterday afternoon.",
    "It started after we raised the worker count to {n}.",
    "Only the {region} region seems to be affected.",
    "The error rate sits at around {p} percent.",
    "Nothing changed in the configuration as far as I know.",
    "A customer escalated it this morning.",
)
_ASKS = (
    "What should I check first?",
    "Is there a safe way to roll this back?",
    "Can you walk me through the fix?",
    "How do I confirm that it is really fixed?",
    "Which logs would show the root cause?",
    "Should I open an incident for this?",
)
_REGIONS = ("eu-west", "us-east", "ap-south", "sa-east")
_DOCS: tuple[tuple[str, str], ...] = (
    ("runbook-timeouts", "timeout upstream slow retry budget deadline pool connection"),
    ("runbook-deploys", "deploy rollback version canary release duplicate migration"),
    ("runbook-memory", "memory leak heap profile worker count cache eviction"),
    ("runbook-billing", "billing webhook invoice prices stale customers currency"),
    ("runbook-imports", "import csv batch rows duplicate idempotency key"),
    ("runbook-auth", "login mobile token session expiry accounts created"),
    ("runbook-search", "search index rebuild shard replica refresh"),
    ("runbook-logging", "logs audit shipper error drops batch backpressure"),
)
_AI_OPENERS = (
    "Thanks, that narrows it down a lot.",
    "Good question, and the symptoms you describe are a familiar pattern.",
    "Let's take this one step at a time.",
    "From what you describe, I would start with the recent change.",
)
_AI_STEPS = (
    "First, compare the p95 latency of {subject} before and after the change in your dashboard.",
    "Check whether the failures line up with the deploy of version {v}; if they do, a rollback "
    "is the fastest way to confirm the cause.",
    "Look at the connection pool metrics: a pool of {n} connections saturates quickly when every "
    "request holds one for the whole upstream call.",
    "Search the logs for the request ids of a few failed calls and follow them across services.",
    "Make sure the retry policy has a total budget, otherwise one slow dependency turns into a "
    "queue that never drains.",
    "Verify that the job is idempotent: replaying a batch should not create a second row for the "
    "same key.",
    "Compare the {region} configuration with a healthy region; a single differing flag is a "
    "common culprit.",
    "Add a temporary metric around the suspicious call so you can see the effect of each fix "
    "within minutes instead of hours.",
    "If customers are affected, post a short status note now and update it when you know more.",
)
_AI_CLOSERS = (
    "The runbook {doc} covers the details and the commands to run.",
    "Once you have the numbers, send them over and we can decide on the next step.",
    "If none of this matches what you see, share a failing request id and I will dig further.",
)


def _fill(template: str, rng: random.Random, subject: str, doc: str = "") -> str:
    return template.format(
        v=f"{rng.randint(2, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
        n=rng.choice((8, 16, 32, 64, 128)),
        region=rng.choice(_REGIONS),
        p=rng.randint(2, 40),
        subject=subject,
        doc=doc,
    )


def _fit(sentences: Iterator[str], low: int, high: int, rng: random.Random) -> str:
    """Join sentences until the text is between ``low`` and ``high`` characters."""
    target = rng.randint(low, high)
    text = ""
    for sentence in sentences:
        candidate = f"{text} {sentence}".strip()
        if len(candidate) > high:
            continue
        text = candidate
        if len(text) >= target:
            break
    return text


def user_text(conv: int, turn: int) -> str:
    rng = random.Random(f"user:{conv}:{turn}")
    subject = rng.choice(_SUBJECTS)

    def sentences() -> Iterator[str]:
        yield f"Hi, {subject} {rng.choice(_PROBLEMS)}."
        pool = list(_CONTEXT)
        rng.shuffle(pool)
        for template in pool:
            yield _fill(template, rng, subject)
        yield rng.choice(_ASKS)
        for template in _CONTEXT:
            yield _fill(template, rng, subject)

    return _fit(sentences(), 150, 250, rng)


def rank_docs(text: str) -> list[tuple[int, str]]:
    """Fake retrieval: score each runbook by word overlap with the question."""
    words = {w.strip(".,?!").lower() for w in text.split()}
    scored = [(len(words & set(body.split())), name) for name, body in _DOCS]
    scored.sort(key=lambda item: (-item[0], item[1]))
    return scored


def assistant_text(conv: int, turn: int, question: str, doc: str) -> str:
    rng = random.Random(f"assistant:{conv}:{turn}")
    subject = next((s for s in _SUBJECTS if s in question), "the service")

    def sentences() -> Iterator[str]:
        yield rng.choice(_AI_OPENERS)
        steps = list(_AI_STEPS)
        rng.shuffle(steps)
        closers = list(_AI_CLOSERS)
        rng.shuffle(closers)
        for template in [*steps[:4], closers[0], *steps[4:], *closers[1:]]:
            yield _fill(template, rng, subject, doc)

    return _fit(sentences(), 600, 900, rng)


# --------------------------------------------------------------------------------------------
# The graph
# --------------------------------------------------------------------------------------------


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    turn: int
    context: str


def _key_of(message: BaseMessage) -> tuple[int, int]:
    _, conv, turn = str(message.id).split("-")
    return int(conv), int(turn)


def retrieve(state: ChatState) -> dict[str, Any]:
    question = state["messages"][-1]
    ranked = rank_docs(str(question.content))
    return {"turn": state.get("turn", 0) + 1, "context": ranked[0][1]}


def agent(state: ChatState) -> dict[str, Any]:
    question = state["messages"][-1]
    conv, turn = _key_of(question)
    text = assistant_text(conv, turn, str(question.content), state.get("context", ""))
    return {"messages": [AIMessage(content=text, id=f"a-{conv}-{turn}")]}


def summarize(state: ChatState) -> None:
    # Deterministic bookkeeping work over the recent window; it writes nothing.
    counts: dict[str, int] = {}
    for message in state["messages"][-6:]:
        for word in str(message.content).split():
            counts[word] = counts.get(word, 0) + 1
    _top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:10]


def build_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    builder = StateGraph(ChatState)
    builder.add_node("retrieve", retrieve)
    builder.add_node("agent", agent)
    builder.add_node("summarize", summarize)
    builder.add_edge(START, "retrieve")
    builder.add_edge("retrieve", "agent")
    builder.add_edge("agent", "summarize")
    builder.add_edge("summarize", END)
    return builder.compile(checkpointer=saver)


def turn_input(conv: int, turn: int) -> dict[str, Any]:
    return {"messages": [HumanMessage(content=user_text(conv, turn), id=f"h-{conv}-{turn}")]}


def thread_config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def run_turns(graph: Any, thread_id: str, conv: int, turns: range) -> list[float]:
    config = thread_config(thread_id)
    durations = []
    for turn in turns:
        payload = turn_input(conv, turn)
        start = time.perf_counter()
        graph.invoke(payload, config)
        durations.append(time.perf_counter() - start)
    return durations


async def arun_turns(graph: Any, thread_id: str, conv: int, turns: range) -> list[float]:
    config = thread_config(thread_id)
    durations = []
    for turn in turns:
        payload = turn_input(conv, turn)
        start = time.perf_counter()
        await graph.ainvoke(payload, config)
        durations.append(time.perf_counter() - start)
    return durations


# --------------------------------------------------------------------------------------------
# Private redis-server
# --------------------------------------------------------------------------------------------


class PrivateRedis(Protocol):
    url: str

    def client(self) -> redis.Redis: ...


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedisServer:
    """Fallback for ``redis_checkpoint.testing.RedisServer``: a throwaway redis-server."""

    def __init__(self) -> None:
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> LocalRedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="rcbench-redis-")
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", self._dir.name]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                with contextlib.closing(self.client()) as client:
                    client.ping()
                return self
            except redis.ConnectionError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=10)


# --------------------------------------------------------------------------------------------
# Our saver
# --------------------------------------------------------------------------------------------


@dataclass
class Ours:
    sync_open: Callable[[str], contextlib.AbstractContextManager[Any]]
    async_open: Callable[[str], contextlib.AbstractAsyncContextManager[Any]]
    server: Callable[[], contextlib.AbstractContextManager[Any]]
    server_note: str


def load_ours() -> Ours:
    """Our savers from the working tree; an ImportError here is fatal on purpose."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        from redis_checkpoint import AsyncRedisSaver, RedisSaver
    except ImportError as exc:
        print(
            f"FATAL: cannot import redis_checkpoint.RedisSaver / AsyncRedisSaver: {exc!r}",
            file=sys.stderr,
        )
        raise
    try:
        from redis_checkpoint.testing import RedisServer

        server: Callable[[], contextlib.AbstractContextManager[Any]] = RedisServer
        server_note = "redis_checkpoint.testing.RedisServer"
    except ImportError as exc:
        server = LocalRedisServer
        server_note = f"local fallback (redis_checkpoint.testing not importable: {exc})"
    return Ours(
        lambda url: RedisSaver.from_conn_string(url),
        lambda url: AsyncRedisSaver.from_conn_string(url),
        server,
        server_note,
    )


def round_trips(saver: Any) -> int | None:
    value = getattr(saver, "round_trips", None)
    return value if isinstance(value, int) else None


# --------------------------------------------------------------------------------------------
# Postgres helpers
# --------------------------------------------------------------------------------------------


@dataclass
class PostgresTarget:
    url: str = ""
    schema: str = ""
    skip_reason: str | None = None


@contextlib.contextmanager
def postgres_schema(base_url: str) -> Iterator[PostgresTarget]:
    """A fresh schema for this run (dropped at the end), or a skip reason."""
    try:
        import psycopg
    except ImportError as exc:
        yield PostgresTarget(skip_reason=f"skipped: psycopg not installed ({exc})")
        return
    schema = f"rcbench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(base_url, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        yield PostgresTarget(skip_reason=f"skipped: not reachable ({first_line})")
        return
    sep = "&" if "?" in base_url else "?"
    try:
        yield PostgresTarget(url=f"{base_url}{sep}options=-csearch_path%3D{schema}", schema=schema)
    finally:
        with psycopg.connect(base_url, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# --------------------------------------------------------------------------------------------
# Statistics and tables
# --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def ratio_text(value: float, base: float | None, target: float | None = None) -> str:
    if base is None or base <= 0:
        return "n/a"
    text = f"{value / base:.2f}{TIMES} InMemorySaver"
    if target is not None:
        text += f" (target {GE} {target:.2f}{TIMES})"
    return text


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            parts.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "| " + " | ".join(parts) + " |"

    rule = []
    for i, w in enumerate(widths):
        rule.append("-" * (w - 1) + ":" if i in right else "-" * w)
    return "\n".join([line(headers), "| " + " | ".join(rule) + " |", *(line(r) for r in rows)])


@dataclass
class Report:
    sections: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, title: str, body: str) -> None:
        text = f"## {title}\n\n{body}\n"
        self.sections.append(text)
        print("\n" + text, flush=True)


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
        help="async rounds; rounds after the first rerun only InMemorySaver and ours (default 2)",
    )
    parser.add_argument("--latency-calls", type=int, help="calls per latency op (default 200)")
    parser.add_argument(
        "--growth-turns", type=int, help="turns of the bytes-per-turn conversation (default 100)"
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run (~40 s)")
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
        warmup_turns=2 if quick else 3,
        quick=quick,
        postgres_url=args.postgres_url,
        write=not args.no_write,
    )


# --------------------------------------------------------------------------------------------
# Savers under test
# --------------------------------------------------------------------------------------------


@dataclass
class Entry:
    key: str
    label: str
    saver: Any = None
    graph: Any = None
    skip: str | None = None
    reference: bool = False  # a yardstick row of the throughput table, not a saver to inspect


OURS_KEY = "redis"
FLOOR_KEY = "floor"


class PingPerCallSaver(InMemorySaver):
    """InMemorySaver plus one PING to the benchmark's Redis per put, put_writes and get_tuple.

    What talking to Redis alone costs a saver that makes one round trip per call: the floor
    under any networked saver's ratio on this machine.
    """

    def __init__(self, client: redis.Redis) -> None:
        super().__init__()
        self.client = client

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        self.client.ping()
        return super().get_tuple(config)

    def put(self, *args: Any, **kwargs: Any) -> RunnableConfig:
        self.client.ping()
        return super().put(*args, **kwargs)

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        self.client.ping()
        super().put_writes(*args, **kwargs)


def open_sync_savers(
    stack: contextlib.ExitStack, s: Settings, ours: Ours, redis_url: str, pg: PostgresTarget
) -> list[Entry]:
    entries: list[Entry] = []
    memory = Entry("memory", "InMemorySaver", saver=InMemorySaver())
    entries.append(memory)
    floor = Entry(
        FLOOR_KEY,
        "InMemorySaver + 1 PING per call",
        saver=PingPerCallSaver(redis.Redis.from_url(redis_url)),
        reference=True,
    )
    entries.append(floor)

    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="rcbench-sqlite-"))
    sqlite = Entry("sqlite", "SqliteSaver (temp file)")
    sqlite.saver = stack.enter_context(SqliteSaver.from_conn_string(str(Path(tmp) / "sync.db")))
    sqlite.saver.setup()
    entries.append(sqlite)

    postgres = Entry("postgres", "PostgresSaver")
    if pg.skip_reason:
        postgres.skip = pg.skip_reason
    else:
        from langgraph.checkpoint.postgres import PostgresSaver

        postgres.saver = stack.enter_context(PostgresSaver.from_conn_string(pg.url))
        postgres.saver.setup()
    entries.append(postgres)

    mine = Entry(OURS_KEY, "RedisSaver", saver=stack.enter_context(ours.sync_open(redis_url)))
    entries.append(mine)
    for entry in entries:
        if entry.saver is not None:
            entry.graph = build_graph(entry.saver)
    return entries


async def open_async_savers(
    stack: contextlib.AsyncExitStack, s: Settings, ours: Ours, redis_url: str, pg: PostgresTarget
) -> list[Entry]:
    entries: list[Entry] = [Entry("memory", "InMemorySaver", saver=InMemorySaver())]

    sqlite = Entry("sqlite", "AsyncSqliteSaver (temp file)")
    try:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    except ImportError as exc:
        sqlite.skip = f"skipped: aiosqlite not installed ({exc})"
    else:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="rcbench-asqlite-"))
        saver = await stack.enter_async_context(
            AsyncSqliteSaver.from_conn_string(str(Path(tmp) / "async.db"))
        )
        await saver.setup()
        sqlite.saver = saver
    entries.append(sqlite)

    pool_size = 8
    postgres = Entry("postgres", f"AsyncPostgresSaver (pool {LE}{pool_size})")
    if pg.skip_reason:
        postgres.skip = pg.skip_reason
    else:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            pg.url,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        )
        await pool.open(wait=True)
        stack.push_async_callback(pool.close)
        postgres.saver = AsyncPostgresSaver(pool)
        await postgres.saver.setup()
    entries.append(postgres)

    mine = Entry(OURS_KEY, "AsyncRedisSaver")
    mine.saver = await stack.enter_async_context(ours.async_open(redis_url))
    entries.append(mine)
    for entry in entries:
        if entry.saver is not None:
            entry.graph = build_graph(entry.saver)
    return entries


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
        warm = f"bench-{s.run_id}-sync-warmup"
        run_turns(entry.graph, warm, 999, range(s.warmup_turns))
        results[entry.key] = {"best_tps": 0.0, "rounds": [], "turn_s": []}
    for rnd in range(s.rounds):
        for entry in entries:
            if entry.skip or (rnd > 0 and entry.key not in ("memory", FLOOR_KEY, OURS_KEY)):
                continue
            durations: list[float] = []
            rt_before = round_trips(entry.saver)
            with settled_heap():
                start = time.perf_counter()
                for conv in range(s.sync_conversations):
                    thread = f"bench-{s.run_id}-sync-r{rnd}-c{conv}"
                    durations += run_turns(entry.graph, thread, conv, range(s.turns))
                    last_thread[entry.key] = thread
                elapsed = time.perf_counter() - start
            rt_after = round_trips(entry.saver)
            tps = len(durations) / elapsed
            res = results[entry.key]
            res["rounds"].append(tps)
            if rt_before is not None and rt_after is not None:
                per_turn = (rt_after - rt_before) / len(durations)
                report.data.setdefault("round_trips", {})["per_turn_sync"] = per_turn
            if tps > res["best_tps"]:
                res["best_tps"] = tps
                res["turn_s"] = durations
            progress(
                f"sync  round {rnd + 1}/{s.rounds} {entry.label}: {len(durations)} turns in "
                f"{elapsed:.2f} s = {tps:.1f} turns/s"
            )

    base = results.get("memory", {}).get("best_tps")
    rows = []
    for entry in entries:
        if entry.skip:
            rows.append([entry.label, entry.skip, "", "", "", ""])
            continue
        res = results[entry.key]
        target = TARGET_SYNC_RATIO if entry.key == OURS_KEY else None
        rows.append(
            [
                entry.label,
                f"{res['best_tps']:.1f}",
                ", ".join(f"{t:.1f}" for t in res["rounds"]),
                ms(percentile(res["turn_s"], 0.5)),
                ms(percentile(res["turn_s"], 0.95)),
                ratio_text(res["best_tps"], base, target),
            ]
        )
    total = s.sync_conversations * s.turns
    body = (
        f"{s.sync_conversations} conversations {TIMES} {s.turns} turns, one after another, "
        f"after {s.warmup_turns} warm-up turns per saver. Round 1 runs every saver; "
        f"{s.rounds - 1} more round(s) rerun InMemorySaver, the PING row and ours, alternating; "
        "the best round is kept. `InMemorySaver + 1 PING per call` is a yardstick, not a saver: "
        "InMemorySaver plus one round trip to the same Redis per put, put_writes and get_tuple, "
        "the cost of the network alone on this machine.\n\n"
        + md_table(
            ["saver", "turns/s", "per round", "turn p50 ms", "turn p95 ms", "ratio"],
            rows,
            right=[1, 3, 4],
        )
    )
    report.add(f"1. Sync throughput ({total} turns per round)", body)
    report.data["sync"] = {
        "conversations": s.sync_conversations,
        "turns": s.turns,
        "rounds": s.rounds,
        "savers": {
            e.label: (
                {"skipped": e.skip}
                if e.skip
                else {
                    "turns_per_s": results[e.key]["best_tps"],
                    "rounds_turns_per_s": results[e.key]["rounds"],
                    "turn_p50_ms": percentile(results[e.key]["turn_s"], 0.5) * 1000,
                    "turn_p95_ms": percentile(results[e.key]["turn_s"], 0.95) * 1000,
                    "ratio_to_inmemory": (results[e.key]["best_tps"] / base) if base else None,
                }
            )
            for e in entries
        },
    }
    return last_thread


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
        if entry.reference:
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
        + md_table(headers, rows, right=[1, 2, 3, 4, 5, 6, 7, 8])
    )
    report.add("3. Read latency (sync API)", body)
    report.data["latency"] = {"turns": s.turns, "calls": s.latency_calls, "savers": data}


# --------------------------------------------------------------------------------------------
# 4. round trips (ours only)
# --------------------------------------------------------------------------------------------


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


async def _explicit_ops_async(saver: Any, thread: str) -> dict[str, OpResult]:
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
    s: Settings,
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
        for turn in range(s.turns, s.turns + instrumented):
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
        note + "\n\n" + md_table(headers, rows, right=[1, 2, 4, 5, 6, 7, 8, 9]),
    )
    report.data.setdefault("round_trips", {}).update(
        {"sync": sync_ops, "async": async_ops, "targets": TARGET_ROUND_TRIPS}
    )


# --------------------------------------------------------------------------------------------
# 2. async throughput
# --------------------------------------------------------------------------------------------


async def phase_async(
    s: Settings, ours: Ours, redis_url: str, pg: PostgresTarget, report: Report
) -> dict[str, OpResult] | None:
    results: dict[str, dict[str, Any]] = {}
    async_ops: dict[str, OpResult] | None = None
    async with contextlib.AsyncExitStack() as stack:
        entries = await open_async_savers(stack, s, ours, redis_url, pg)
        for entry in entries:
            if entry.skip:
                progress(f"async {entry.label}: {entry.skip}")
                continue
            warm = [
                arun_turns(entry.graph, f"bench-{s.run_id}-async-warm-{c}", 900 + c, range(2))
                for c in range(min(4, s.async_conversations))
            ]
            await asyncio.gather(*warm)
        # Round 1 runs every saver; later rounds only InMemorySaver and ours (the ratio that has
        # a target), alternating, and the best round of each is kept.
        for rnd in range(s.async_rounds):
            for entry in entries:
                if entry.skip or (rnd > 0 and entry.key not in ("memory", FLOOR_KEY, OURS_KEY)):
                    continue
                rt_before = round_trips(entry.saver)
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
                rt_after = round_trips(entry.saver)
                durations = [d for conv in per_conv for d in conv]
                tps = len(durations) / elapsed
                if rt_before is not None and rt_after is not None:
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
        async_ops = await _explicit_ops_async(mine.saver, f"bench-{s.run_id}-async-r0-c0")
        progress(f"round trips {mine.label}: explicit async calls done")

    base = results.get("memory", {}).get("tps")
    rows = []
    for entry in entries:
        if entry.skip:
            rows.append([entry.label, entry.skip, "", "", "", ""])
            continue
        res = results[entry.key]
        target = TARGET_ASYNC_RATIO if entry.key == OURS_KEY else None
        rows.append(
            [
                entry.label,
                f"{res['tps']:.1f}",
                ", ".join(f"{t:.1f}" for t in res["rounds"]),
                ms(percentile(res["turn_s"], 0.5)),
                ms(percentile(res["turn_s"], 0.95)),
                ratio_text(res["tps"], base, target),
            ]
        )
    body = (
        f"`asyncio.gather` of {s.async_conversations} conversations {TIMES} {s.async_turns} turns "
        "(`graph.ainvoke` loops) on one event loop, after 2 warm-up turns on 4 other threads. "
        f"Round 1 runs every saver; {s.async_rounds - 1} more round(s) rerun InMemorySaver and "
        "ours; the best round is kept. Turn latency is per `ainvoke` under that concurrency.\n\n"
        + md_table(
            ["saver", "turns/s", "per round", "turn p50 ms", "turn p95 ms", "ratio"],
            rows,
            [1, 3, 4],
        )
    )
    report.add(f"2. Async throughput ({s.async_conversations} concurrent conversations)", body)
    report.data["async"] = {
        "conversations": s.async_conversations,
        "turns": s.async_turns,
        "savers": {
            e.label: (
                {"skipped": e.skip}
                if e.skip
                else {
                    "turns_per_s": results[e.key]["tps"],
                    "rounds_turns_per_s": results[e.key]["rounds"],
                    "turn_p50_ms": percentile(results[e.key]["turn_s"], 0.5) * 1000,
                    "turn_p95_ms": percentile(results[e.key]["turn_s"], 0.95) * 1000,
                    "ratio_to_inmemory": (results[e.key]["tps"] / base) if base else None,
                }
            )
            for e in entries
        },
    }
    return async_ops


# --------------------------------------------------------------------------------------------
# 5. bytes per turn
# --------------------------------------------------------------------------------------------


def inmemory_bytes(saver: InMemorySaver, thread_id: str) -> int:
    total = 0
    for per_ns in saver.storage.get(thread_id, {}).values():
        for checkpoint, meta, _parent in per_ns.values():
            total += len(checkpoint[1]) + len(meta[1])
    for key, blob in saver.blobs.items():
        if key[0] == thread_id:
            total += len(blob[1])
    for key, writes in saver.writes.items():
        if key[0] == thread_id:
            total += sum(len(w[2][1]) for w in writes.values())
    return total


def key_bytes(client: redis.Redis) -> tuple[int, int]:
    """(number of keys, sum of MEMORY USAGE) over the whole private server."""
    keys = list(client.scan_iter(count=1000))
    if not keys:
        return 0, 0
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return len(keys), sum(int(v or 0) for v in pipe.execute())


def key_breakdown(client: redis.Redis) -> list[dict[str, Any]]:
    """Every key on the private server: type, MEMORY USAGE, and for hashes the fields grouped
    by their first NUL-separated part (field/value bytes), to show where the bytes go."""
    out: list[dict[str, Any]] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        info: dict[str, Any] = {
            "key": key.decode("utf-8", "backslashreplace"),
            "type": kind,
            "memory_usage": int(client.memory_usage(key, samples=0) or 0),
        }
        if kind == "hash":
            groups: dict[str, list[int]] = {}
            for name, value in client.hscan_iter(key, count=1000):
                prefix = name.split(b"\x00", 1)[0][:12].decode("utf-8", "backslashreplace")
                group = groups.setdefault(prefix, [0, 0, 0])
                group[0] += 1
                group[1] += len(name)
                group[2] += len(value)
            info["elements"] = sum(g[0] for g in groups.values())
            info["field_groups"] = {
                k: {"fields": g[0], "field_bytes": g[1], "value_bytes": g[2]}
                for k, g in sorted(groups.items())
            }
        elif kind == "zset":
            members = [m for m, _ in client.zscan_iter(key, count=1000)]
            info["elements"] = len(members)
            info["member_bytes"] = sum(len(m) for m in members)
        elif kind == "string":
            info["elements"] = 1
            info["value_bytes"] = int(client.strlen(key))
        elif kind == "list":
            info["elements"] = int(client.llen(key))
        elif kind == "set":
            info["elements"] = int(client.scard(key))
        out.append(info)
    out.sort(key=lambda item: -item["memory_usage"])
    return out


def breakdown_table(keys: list[dict[str, Any]], turns: int) -> str:
    rows = []
    for info in keys[:8]:
        detail = ""
        if "field_groups" in info:
            detail = "; ".join(
                f"`{name}`: {g['fields']:,} fields, {g['value_bytes']:,} B values "
                f"({(g['field_bytes'] + g['value_bytes']) / turns:,.0f} B/turn)"
                for name, g in info["field_groups"].items()
            )
        elif "member_bytes" in info:
            detail = f"{info['member_bytes']:,} B of members"
        elif "value_bytes" in info:
            detail = f"{info['value_bytes']:,} B value"
        key = info["key"].replace("|", "\\|")
        if len(key) > 60:
            key = key[:57] + "..."
        rows.append(
            [
                f"`{key}`",
                info["type"],
                f"{info['memory_usage']:,}",
                f"{info.get('elements', 0):,}",
                detail,
            ]
        )
    return md_table(["key", "type", "MEMORY USAGE B", "elements", "breakdown"], rows, [2, 3])


def phase_growth(s: Settings, ours: Ours, report: Report) -> None:
    turns = s.growth_turns
    marks = sorted({m for m in (10, 50, 100) if m < turns} | {turns})
    thread = f"bench-{s.run_id}-growth"
    msg_content: list[int] = []
    msg_json: list[int] = []
    redis_used: dict[int, int] = {}
    client_buffers: dict[int, int] = {}  # mem_clients_normal: part of used_memory, not data
    redis_keys: dict[int, tuple[int, int]] = {}
    mem_bytes: dict[int, int] = {}
    total_used: tuple[int, int] = (0, 0)

    with ours.server() as srv:
        client = srv.client()
        with ours.sync_open(srv.url) as saver:
            graph = build_graph(saver)
            # Warm-up on another thread (loads scripts, opens connections) before the baseline.
            run_turns(graph, f"{thread}-warmup", 998, range(2))
            memory0 = client.info("memory")
            used0 = int(memory0["used_memory"])
            redis_used[0] = used0
            client_buffers[0] = int(memory0["mem_clients_normal"])
            redis_keys[0] = key_bytes(client)
            config = thread_config(thread)
            for turn in range(1, turns + 1):
                state = graph.invoke(turn_input(0, turn), config)
                human, ai = state["messages"][-2:]
                msg_content.append(len(str(human.content).encode()) + len(str(ai.content).encode()))
                msg_json.append(len(human.model_dump_json()) + len(ai.model_dump_json()))
                if turn in marks:
                    memory = client.info("memory")
                    redis_used[turn] = int(memory["used_memory"])
                    client_buffers[turn] = int(memory["mem_clients_normal"])
                    redis_keys[turn] = key_bytes(client)
                    progress(
                        f"bytes RedisSaver: turn {turn}/{turns}, used_memory "
                        f"{redis_used[turn] - used0:+,} B since start"
                    )
            total_used = (used0, redis_used[turns])
            keys = key_breakdown(client)
        client.close()

    reference = InMemorySaver()
    ref_graph = build_graph(reference)
    mem_bytes[0] = 0
    for turn in range(1, turns + 1):
        ref_graph.invoke(turn_input(0, turn), thread_config(thread))
        if turn in marks:
            mem_bytes[turn] = inmemory_bytes(reference, thread)
    progress(f"bytes InMemorySaver reference: {turns} turns done")

    rows = []
    windows = []
    prev = 0
    for mark in marks:
        n = mark - prev
        content = sum(msg_content[prev:mark]) / n
        as_json = sum(msg_json[prev:mark]) / n
        used = (redis_used[mark] - redis_used[prev]) / n
        keyb = (redis_keys[mark][1] - redis_keys[prev][1]) / n
        mem = (mem_bytes[mark] - mem_bytes[prev]) / n
        windows.append(
            {
                "turns": [prev + 1, mark],
                "message_content_bytes_per_turn": content,
                "message_json_bytes_per_turn": as_json,
                "redis_used_memory_per_turn": used,
                "redis_key_bytes_per_turn": keyb,
                "redis_keys_at_end": redis_keys[mark][0],
                "inmemory_bytes_per_turn": mem,
                "redis_ratio_to_content": used / content,
                "redis_ratio_to_json": used / as_json,
                "inmemory_ratio_to_content": mem / content,
            }
        )
        rows.append(
            [
                f"{prev + 1}{DASH}{mark}",
                f"{content:,.0f}",
                f"{as_json:,.0f}",
                f"{used:,.0f}",
                f"{used / content:.2f}{TIMES}",
                f"{used / as_json:.2f}{TIMES}",
                f"{keyb:,.0f}",
                f"{redis_keys[mark][0]:,}",
                f"{mem:,.0f}",
                f"{mem / content:.1f}{TIMES}",
            ]
        )
        prev = mark
    first, last = windows[0], windows[-1]
    flat = last["redis_used_memory_per_turn"] / max(first["redis_used_memory_per_turn"], 1)
    mem_flat = last["inmemory_bytes_per_turn"] / max(first["inmemory_bytes_per_turn"], 1)
    key_flat = last["redis_key_bytes_per_turn"] / max(first["redis_key_bytes_per_turn"], 1)
    headers = [
        "turns",
        "msg content B/turn",
        "msg JSON B/turn",
        "Redis used_memory B/turn",
        f"{TIMES} content",
        f"{TIMES} JSON",
        "Redis key bytes B/turn",
        "keys",
        "InMemorySaver B/turn",
        f"{TIMES} content",
    ]
    label = "RedisSaver"
    body = (
        f"One {turns}-turn conversation of {label} on a fresh private redis-server "
        f"(`INFO memory` used_memory sampled after turns {', '.join(map(str, marks))}; "
        "baseline taken after 2 warm-up turns on another thread). Messages = the turn's new "
        "HumanMessage + AIMessage: UTF-8 content bytes and `model_dump_json()` bytes. "
        "Redis key bytes = sum of `MEMORY USAGE` over all keys. InMemorySaver = bytes of its "
        "stored serialized checkpoints, metadata, blobs and writes for the same conversation.\n\n"
        + md_table(headers, rows, right=list(range(1, 10)))
        + f"\n\nRedis used_memory: {total_used[0]:,} B before, {total_used[1]:,} B after "
        f"({total_used[1] - total_used[0]:+,} B for {turns} turns). "
        f"Target: Redis used_memory per turn {LE} {TARGET_BYTES_RATIO:.0f}{TIMES} the content "
        f"bytes, and flat. Measured: {last['redis_ratio_to_content']:.2f}{TIMES} in the last "
        f"window (highest window {max(w['redis_ratio_to_content'] for w in windows):.2f}"
        f"{TIMES}); last/first window bytes per turn: Redis used_memory {flat:.2f}{TIMES}, "
        f"Redis key bytes {key_flat:.2f}{TIMES} (used_memory moves with allocator and encoding "
        f"changes; key bytes are the steadier measure), InMemorySaver {mem_flat:.2f}{TIMES}. "
        f"Client connection buffers (`mem_clients_normal`, counted in used_memory but not data) "
        f"changed by {client_buffers[marks[0]] - client_buffers[0]:+,} B over turns 1{DASH}"
        f"{marks[0]} and {client_buffers[turns] - client_buffers[0]:+,} B over all {turns}.\n\n"
        f"Where the bytes are after turn {turns} (all keys of the server, largest first; the "
        "2-turn warm-up thread is included; hash fields grouped by their first NUL-separated "
        "part, B/turn = field + value bytes / turns):\n\n" + breakdown_table(keys, turns)
    )
    report.add(f"5. Redis bytes per turn ({label}, {turns} turns)", body)
    report.data["growth"] = {
        "turns": turns,
        "marks": marks,
        "windows": windows,
        "used_memory_before": total_used[0],
        "used_memory_after": total_used[1],
        "client_buffers_bytes": {str(k): v for k, v in sorted(client_buffers.items())},
        "last_over_first_window": {
            "redis_used_memory": flat,
            "redis_key_bytes": key_flat,
            "inmemory": mem_flat,
        },
        "keys_at_end": keys,
        "target_ratio_to_content": TARGET_BYTES_RATIO,
    }


# --------------------------------------------------------------------------------------------
# Machine info and output
# --------------------------------------------------------------------------------------------


def machine_info(server_version: str) -> dict[str, Any]:
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
    for dist in (
        "langgraph",
        "langgraph-checkpoint",
        "langgraph-checkpoint-sqlite",
        "langgraph-checkpoint-postgres",
        "redis",
        "hiredis",
        "psycopg",
    ):
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            versions[dist] = importlib_metadata.version(dist)
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": LOADAVG_START,
        "loadavg_end": _loadavg(),
        "nproc": nproc,
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": redis_server,
        "private_server_version": server_version,
        "packages": versions,
    }


def write_results(s: Settings, report: Report, machine: dict[str, Any], elapsed: float) -> None:
    command = shlex.join(["python", *sys.argv])
    header = [
        "# Checkpoint savers: one LangGraph workload, side by side",
        "",
        f"- date: {machine['date']}",
        f"- machine: nproc {machine['nproc']}, {machine['cpu'] or 'cpu n/a'}, "
        f"{machine['platform']}",
        f"- python {machine['python']}; {machine['redis_server']}",
        f"- load average (1/5/15 min) at start {machine['loadavg_start']}, at end "
        f"{machine['loadavg_end']} (other work on the machine skews the timings)",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
        f"- command: `{command}`" + (" (quick mode)" if s.quick else ""),
        f"- total run time: {elapsed:.0f} s",
        "",
        "Workload: per turn `graph.invoke({'messages': [HumanMessage]})` through "
        "`retrieve -> agent -> summarize` (deterministic fake work, no LLM); the HumanMessage is "
        f"150{DASH}250 characters, the AIMessage 600{DASH}900, identical for every saver. "
        "State: `messages` (add_messages), `turn`, `context`. Redis runs as a private "
        "redis-server started by the benchmark.",
        "",
    ]
    text = "\n".join(header) + "\n" + "\n".join(report.sections)
    payload = {
        "command": command,
        "settings": {k: v for k, v in vars(s).items() if k != "run_id"},
        "machine": machine,
        "elapsed_s": elapsed,
        **report.data,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for name, content in (
        ("checkpointer.md", text),
        ("checkpointer.json", json.dumps(payload, indent=2, default=str) + "\n"),
    ):
        tmp = RESULTS_DIR / f"{name}.tmp"
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(RESULTS_DIR / name)
    progress(f"wrote {RESULTS_DIR / 'checkpointer.md'} and {RESULTS_DIR / 'checkpointer.json'}")


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_args(argv)
    ours = load_ours()
    report = Report()
    progress(
        f"settings: {s.turns} turns, sync {s.rounds}{TIMES}{s.sync_conversations} conversations, "
        f"async {s.async_rounds}{TIMES}{s.async_conversations} concurrent {TIMES} "
        f"{s.async_turns} turns, {s.latency_calls} latency calls, "
        f"growth {s.growth_turns} turns; private Redis via {ours.server_note}"
    )
    server_version = ""
    with ours.server() as srv, postgres_schema(s.postgres_url) as pg:
        progress(
            f"private redis at {srv.url}; postgres: "
            + (pg.skip_reason or f"schema {pg.schema} (dropped at exit)")
        )
        client = srv.client()
        server_version = str(client.info("server").get("redis_version", ""))
        with contextlib.ExitStack() as stack:
            entries = open_sync_savers(stack, s, ours, srv.url, pg)
            threads = phase_sync(s, entries, report)
            async_ops = asyncio.run(phase_async(s, ours, srv.url, pg, report))
            phase_latency(s, entries, threads, report)
            mine = next(e for e in entries if e.key == OURS_KEY)
            sync_ops = phase_round_trips_sync(s, mine, threads[OURS_KEY], client, report)
            report_round_trips(mine.label, sync_ops, async_ops, report)
        client.close()
    phase_growth(s, ours, report)

    # Print and store in the numbered order.
    report.sections.sort(key=lambda text: text.split(".", 1)[0])
    elapsed = time.perf_counter() - _T0
    machine = machine_info(server_version)
    progress(f"done in {elapsed:.1f} s")
    if s.write:
        write_results(s, report, machine, elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
