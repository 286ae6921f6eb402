"""Bounded history: ``max_history=N`` keeps a thread's newest N checkpoints per namespace,
pruned by the ``put`` itself (no extra round trip), safe for DeltaChannel, per saver and per
thread; the memory tier prunes exactly as the Lua does."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, TypedDict

import pytest
import redis
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.channels import DeltaChannel
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from test_memory_tier import THREADS, observe, script

from redis_checkpoint import AsyncRedisSaver, CircuitBreaker, RedisSaver
from redis_checkpoint.checkpoint import codec
from redis_checkpoint.checkpoint.thread import GARBAGE_BATCH
from redis_checkpoint.testing import RedisServer


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def answer(state: Chat) -> dict[str, Any]:
    return {"messages": [AIMessage(f"reply {len(state['messages'])} " + "x" * 200)]}


def chat_graph(saver: Any) -> Any:
    builder = StateGraph(Chat)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=saver)


def cfg(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def contents(values: dict[str, Any]) -> list[str]:
    """A chat state's message texts (message ids are random per graph)."""
    return [m.content for m in values["messages"]]


def stored(saver: RedisSaver, thread_id: str) -> dict[bytes, bytes]:
    return dict(saver.client.hgetall(saver.core.keys(thread_id).data))


def test_a_long_conversation_keeps_n_checkpoints_and_less_storage(redis_url: str) -> None:
    prefix = unique("mh")
    with (
        RedisSaver.from_conn_string(redis_url, key_prefix=prefix, max_history=3) as saver,
        RedisSaver.from_conn_string(redis_url, key_prefix=prefix + "-all") as unbounded,
    ):
        graph, everything = chat_graph(saver), chat_graph(unbounded)
        reference = chat_graph(InMemorySaver())
        records = []
        for turn in range(30):
            for g in (graph, everything, reference):
                g.invoke({"messages": [HumanMessage(f"q{turn}")]}, cfg("t"))
            records.append(sum(1 for f in stored(saver, "t") if f[:1] == b"c"))
        history = list(graph.get_state_history(cfg("t")))
        assert len(history) == 3
        # the newest three, exactly as the unbounded reference has them
        expected = list(reference.get_state_history(cfg("t")))[:3]
        assert [contents(s.values) for s in history] == [contents(s.values) for s in expected]
        assert [s.next for s in history] == [s.next for s in expected]
        assert len(contents(graph.get_state(cfg("t")).values)) == 60
        assert len(saver.client.zrange(saver.core.keys("t").idx, 0, -1)) == 3
        # records stay bounded: the kept three, the keyframes they are compressed against, and
        # up to a batch of pruned ones not yet collected
        assert max(records[5:]) <= 3 + codec.KEYFRAME_EVERY + max(3, GARBAGE_BATCH)
        # the messages themselves stay (the latest state holds them all); the rest goes
        bounded = sum(len(v) for v in stored(saver, "t").values())
        full = sum(len(v) for v in stored(unbounded, "t").values())
        assert bounded < full * 0.6, (bounded, full)


def test_the_pruning_put_is_one_round_trip(redis_url: str) -> None:
    with RedisSaver.from_conn_string(redis_url, key_prefix=unique("mhrt"), max_history=2) as saver:
        config: dict[str, Any] = cfg("rt")
        for step in range(5):
            checkpoint = generate_checkpoint(channel_values={"n": step, "big": "x" * 500})
            before = saver.round_trips
            config = saver.put(config, checkpoint, {"step": step}, {"n": 1, "big": 1})
            assert saver.round_trips - before == 1
            saver.put_writes(config, [("n", step)], f"task{step}")
        assert [t.metadata["step"] for t in saver.list(cfg("rt"))] == [4, 3]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_subgraph_namespaces_are_limited_each(redis_url: str, asynchronous: bool) -> None:
    class Outer(TypedDict):
        messages: Annotated[list[AnyMessage], add_messages]

    inner = StateGraph(Chat)
    inner.add_node("answer", answer)
    inner.add_edge(START, "answer")
    inner.add_edge("answer", END)
    child = inner.compile(checkpointer=True)  # a persistent subgraph: its own namespace
    outer = StateGraph(Outer)
    outer.add_node("child", child)
    outer.add_edge(START, "child")
    outer.add_edge("child", END)
    prefix = unique("mhns")
    if asynchronous:
        async with AsyncRedisSaver.from_conn_string(
            redis_url, key_prefix=prefix, max_history=2
        ) as asaver:
            graph = outer.compile(checkpointer=asaver)
            for turn in range(6):
                await graph.ainvoke({"messages": [HumanMessage(f"q{turn}")]}, cfg("n"))
            found = [t.config async for t in asaver.alist(cfg("n"))]
    else:
        with RedisSaver.from_conn_string(redis_url, key_prefix=prefix, max_history=2) as saver:
            graph = outer.compile(checkpointer=saver)
            for turn in range(6):
                graph.invoke({"messages": [HumanMessage(f"q{turn}")]}, cfg("n"))
            found = [t.config for t in saver.list(cfg("n"))]
    namespaces: dict[str, int] = {}
    for config in found:
        ns = config["configurable"]["checkpoint_ns"]
        namespaces[ns] = namespaces.get(ns, 0) + 1
    assert len(namespaces) == 2 and "" in namespaces
    assert set(namespaces.values()) == {2}


# -- DeltaChannel: a value rebuilt from ancestors survives the pruning ----------------------


def extend(state: list[str], batches: Any) -> list[str]:
    out = list(state)
    for batch in batches:
        out.extend(batch)
    return out


class Deltas(TypedDict):
    items: Annotated[list[str], DeltaChannel(extend, snapshot_frequency=5)]
    turn: int


def delta_graph(saver: Any) -> Any:
    def left(state: Deltas) -> dict[str, Any]:
        return {"items": [f"L{state['turn']}"]}

    def right(state: Deltas) -> dict[str, Any]:
        return {"items": [f"R{state['turn']}:{len(state['items'])}"]}

    builder = StateGraph(Deltas)
    builder.add_node("left", left)
    builder.add_node("right", right)
    builder.add_edge(START, "left")
    builder.add_edge("left", "right")
    builder.add_edge("right", END)
    return builder.compile(checkpointer=saver)


@pytest.mark.parametrize("limit", [1, 2])
def test_delta_channel_values_survive_max_history(redis_url: str, limit: int) -> None:
    with RedisSaver.from_conn_string(
        redis_url, key_prefix=unique("mhdelta"), max_history=limit
    ) as saver:
        graph, reference = delta_graph(saver), delta_graph(InMemorySaver())
        for turn in range(9):
            got = graph.invoke({"turn": turn, "items": [f"in{turn}"]}, cfg("d"))
            want = reference.invoke({"turn": turn, "items": [f"in{turn}"]}, cfg("d"))
            assert got == want
        assert graph.get_state(cfg("d")).values == reference.get_state(cfg("d")).values
        kept = len(list(saver.list(cfg("d"))))
        # the newest `limit`, plus the ancestors back to the last snapshot the value needs
        assert limit <= kept < len(list(reference.get_state_history(cfg("d"))))


# -- per thread ----------------------------------------------------------------------------


def test_a_thread_gets_its_own_limit_kept_in_redis(redis_url: str) -> None:
    prefix = unique("mhthread")
    with RedisSaver.from_conn_string(redis_url, key_prefix=prefix, max_history=2) as saver:
        graph = chat_graph(saver)
        for turn in range(4):
            graph.invoke({"messages": [HumanMessage(f"q{turn}")]}, cfg("keep-all"))
            graph.invoke({"messages": [HumanMessage(f"q{turn}")]}, cfg("short"))
        assert saver.set_thread_max_history("keep-all", 0) == 0
        assert saver.set_thread_max_history("short", 1) == 1  # trimmed now, not at the next put
        assert len(list(saver.list(cfg("short")))) == 1
        for turn in range(4, 8):
            graph.invoke({"messages": [HumanMessage(f"q{turn}")]}, cfg("keep-all"))
    # another saver (another process) sees the threads' own limits; its default is unbounded
    with RedisSaver.from_conn_string(redis_url, key_prefix=prefix) as other:
        graph = chat_graph(other)
        graph.invoke({"messages": [HumanMessage("later")]}, cfg("short"))
        assert len(list(other.list(cfg("short")))) == 1
        assert len(list(other.list(cfg("keep-all")))) == 2 + 4 * 3
        # None: back to the saver's limit (here: none), nothing trimmed
        assert other.set_thread_max_history("short", None) == 0
        graph.invoke({"messages": [HumanMessage("again")]}, cfg("short"))
        assert len(list(other.list(cfg("short")))) == 4


async def test_async_per_thread_limit(redis_url: str) -> None:
    async with AsyncRedisSaver.from_conn_string(redis_url, key_prefix=unique("mhasync")) as saver:
        graph = chat_graph(saver)
        for turn in range(5):
            await graph.ainvoke({"messages": [HumanMessage(f"q{turn}")]}, cfg("a"))
        assert await saver.aset_thread_max_history("a", 2) == 13
        await graph.ainvoke({"messages": [HumanMessage("more")]}, cfg("a"))
        assert len([t async for t in saver.alist(cfg("a"))]) == 2


def test_bad_limits_are_clear_errors(redis_url: str) -> None:
    for bad in (0, -1, 2.5, "3", True):
        with pytest.raises(ValueError, match="max_history"):
            RedisSaver(redis.Redis.from_url(redis_url), max_history=bad)  # type: ignore[arg-type]
    with RedisSaver.from_conn_string(redis_url, key_prefix=unique("mhbad")) as saver:
        with pytest.raises(ValueError, match="max_history"):
            saver.set_thread_max_history("x", -1)
        with pytest.raises(KeyError, match="no checkpoints"):
            saver.set_thread_max_history("never-written", 3)


def test_copy_thread_does_not_copy_the_limit(redis_url: str) -> None:
    with RedisSaver.from_conn_string(redis_url, key_prefix=unique("mhcopy")) as saver:
        graph = chat_graph(saver)
        for turn in range(3):
            graph.invoke({"messages": [HumanMessage(f"q{turn}")]}, cfg("src"))
        saver.set_thread_max_history("src", 1)
        saver.copy_thread("src", "dst")
        assert saver.client.hget(saver.core.keys("dst").data, "h") is None
        assert saver.client.hget(saver.core.keys("src").data, "h") == b"1"


# -- the memory tier prunes as the Lua does --------------------------------------------------


def test_memory_tier_prunes_like_redis(redis_server: RedisServer, dead_url: str) -> None:
    prefix = unique("mhtier")
    with (
        RedisSaver.from_conn_string(redis_server.url, key_prefix=prefix, max_history=2) as on_redis,
        RedisSaver.from_conn_string(
            dead_url, require_redis=False, key_prefix=prefix, max_history=2
        ) as in_memory,
    ):
        script([on_redis, in_memory])
        assert in_memory.serving_from_memory
        assert observe(in_memory) == observe(on_redis)
        assert in_memory.memory is not None
        for thread_id in THREADS:
            keys = on_redis.core.keys(thread_id)
            held = in_memory.memory._threads[thread_id]
            assert held.members == on_redis.client.zrange(keys.idx, 0, -1)
            in_redis = on_redis.client.hgetall(keys.data)
            assert sorted(f for f in held.data if f != b"id") == sorted(
                f for f in in_redis if f != b"id"
            )
            assert len(held.members) == 4  # two per namespace


def test_an_outage_with_a_limit_writes_back_a_bounded_thread(fresh_redis: RedisServer) -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "checkpoint", failure_threshold=1, recovery_timeout=1.0, clock=lambda: now[0]
    )
    with RedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="mhout", max_history=2, breaker=breaker
    ) as saver:
        graph, reference = chat_graph(saver), chat_graph(InMemorySaver())

        def turn(text: str) -> None:
            for g in (graph, reference):
                g.invoke({"messages": [HumanMessage(text)]}, cfg("o"))

        for i in range(3):
            turn(f"before {i}")
        fresh_redis.kill()
        for i in range(3):
            turn(f"during {i}")
        assert saver.serving_from_memory
        fresh_redis.restart()
        now[0] += 2
        assert saver.ping()
        keys = saver.core.keys("o")
        members = saver.client.zrange(keys.idx, 0, -1)
        # the checkpoints pruned in memory left Redis's index with their records
        data = saver.client.hgetall(keys.data)
        assert all(m in data for m in members)
        turn("after")
        assert len(list(saver.list(cfg("o")))) == 2
        state = contents(graph.get_state(cfg("o")).values)
        assert state == contents(reference.get_state(cfg("o")).values) and len(state) == 14
