"""Redis going away: the in-memory tier serves, and what it took is written back on recovery.

Each test kills a real redis-server (SIGKILL) in the middle of a conversation and restarts it.
The breaker runs on a hand-driven clock, so "no timeout paid per call" is checked by counting
round trips, not by timing.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from redis_checkpoint import AsyncRedisSaver, CircuitBreaker, RedisSaver, RedisUnavailableError
from redis_checkpoint.testing import RedisServer


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def answer(state: State) -> dict[str, Any]:
    last = state["messages"][-1].content
    return {"messages": [AIMessage(f"reply #{len(state['messages'])} to {last}")]}


def build() -> Any:
    builder = StateGraph(State)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("checkpoint", failure_threshold=3, recovery_timeout=1.0, clock=clock)


def cfg(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def turn(graph: Any, thread_id: str, text: str) -> int:
    return len(graph.invoke({"messages": [HumanMessage(text)]}, cfg(thread_id))["messages"])


def reference_history(turns: dict[str, list[str]]) -> dict[str, list[Any]]:
    """The checkpoints InMemorySaver keeps for the same turns (values of each, newest first)."""
    saver = InMemorySaver()
    graph = build().compile(checkpointer=saver)
    for thread_id, texts in turns.items():
        for text in texts:
            turn(graph, thread_id, text)
    return {
        t: [[m.content for m in s.values["messages"]] for s in graph.get_state_history(cfg(t))]
        for t in turns
    }


def stored_history(url: str, prefix: str, thread_ids: list[str]) -> dict[str, list[Any]]:
    with RedisSaver.from_conn_string(url, key_prefix=prefix, fallback=False) as fresh:
        graph = build().compile(checkpointer=fresh)
        return {
            t: [[m.content for m in s.values["messages"]] for s in graph.get_state_history(cfg(t))]
            for t in thread_ids
        }


def test_sync_conversation_survives_a_killed_redis(fresh_redis: RedisServer, clock: Clock) -> None:
    with RedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="outage", breaker=breaker(clock)
    ) as saver:
        graph = build().compile(checkpointer=saver)
        for i in range(3):
            turn(graph, "a", f"before {i}")
        fresh_redis.kill()

        assert turn(graph, "a", "during 0") == 8  # no exception, history intact
        assert saver.breaker.state == "open"
        assert saver.breaker.failures <= 3
        trips = saver.round_trips
        for i in range(1, 4):
            assert turn(graph, "a", f"during {i}") == 8 + 2 * i
        assert turn(graph, "b", "new thread during the outage") == 2
        assert saver.round_trips == trips  # while open, no call waits on the dead server
        assert saver.serving_from_memory and saver.memory is not None
        assert saver.memory.pending == 2

        fresh_redis.restart()
        clock.now += 1.5  # past the breaker's recovery timeout: the next call probes
        assert turn(graph, "a", "after") == 16
        assert saver.breaker.state == "closed"
        assert saver.memory.pending == 0

    expected = reference_history(
        {
            "a": [*(f"before {i}" for i in range(3)), *(f"during {i}" for i in range(4)), "after"],
            "b": ["new thread during the outage"],
        }
    )
    assert stored_history(fresh_redis.url, "outage", ["a", "b"]) == expected


async def test_async_conversations_survive_a_kill_in_their_middle(
    fresh_redis: RedisServer, clock: Clock
) -> None:
    threads = [f"c{i}" for i in range(12)]
    async with AsyncRedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="aoutage", breaker=breaker(clock)
    ) as saver:
        graph = build().compile(checkpointer=saver)

        async def talk(thread_id: str, turns: range) -> None:
            for i in turns:
                await graph.ainvoke(
                    {"messages": [HumanMessage(f"{thread_id}-{i}")]}, cfg(thread_id)
                )
                await asyncio.sleep(0)

        first = asyncio.gather(*(talk(t, range(0, 6)) for t in threads))
        await asyncio.sleep(0.05)
        fresh_redis.kill()  # while the conversations are running
        await first
        await asyncio.gather(*(talk(t, range(6, 8)) for t in threads))
        assert saver.serving_from_memory

        fresh_redis.restart()
        clock.now += 1.5
        await asyncio.gather(*(talk(t, range(8, 10)) for t in threads))
        assert saver.breaker.state == "closed"
        assert saver.memory is not None and saver.memory.pending == 0

    expected = reference_history({t: [f"{t}-{i}" for i in range(10)] for t in threads})
    assert stored_history(fresh_redis.url, "aoutage", threads) == expected


def test_delete_during_an_outage_is_replayed(fresh_redis: RedisServer, clock: Clock) -> None:
    with RedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="odel", breaker=breaker(clock)
    ) as saver:
        graph = build().compile(checkpointer=saver)
        turn(graph, "gone", "hello")
        turn(graph, "kept", "hello")
        fresh_redis.kill()
        turn(graph, "kept", "more")
        saver.delete_thread("gone")
        assert saver.get_tuple(cfg("gone")) is None
        fresh_redis.restart()
        clock.now += 1.5
        assert saver.get_tuple(cfg("gone")) is None
    history = stored_history(fresh_redis.url, "odel", ["gone", "kept"])
    assert history["gone"] == []
    assert history["kept"][0] == ["hello", "reply #1 to hello", "more", "reply #3 to more"]


def test_without_fallback_an_outage_is_a_clear_error(
    fresh_redis: RedisServer, clock: Clock
) -> None:
    with RedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="nofb", fallback=False, breaker=breaker(clock)
    ) as saver:
        graph = build().compile(checkpointer=saver)
        turn(graph, "x", "hello")
        fresh_redis.kill()
        for _ in range(4):
            with pytest.raises(RedisUnavailableError, match=str(fresh_redis.port)):
                saver.get_tuple(cfg("x"))
        trips = saver.round_trips
        with pytest.raises(RedisUnavailableError):
            saver.get_tuple(cfg("x"))
        assert saver.round_trips == trips  # open breaker: failing fast, not waiting


def test_operations_across_threads_need_redis(fresh_redis: RedisServer, clock: Clock) -> None:
    with RedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="admin", breaker=breaker(clock)
    ) as saver:
        graph = build().compile(checkpointer=saver)
        turn(graph, "x", "hello")
        fresh_redis.kill()
        for call in (
            lambda: saver.copy_thread("x", "y"),
            lambda: saver.prune(["x"]),
            lambda: saver.delete_for_runs(["run"]),
            lambda: list(saver.list(None)),
        ):
            with pytest.raises(RedisUnavailableError, match="spans threads"):
                call()


def test_a_saver_started_without_redis_serves_from_memory(dead_url: str) -> None:
    with RedisSaver.from_conn_string(dead_url, require_redis=False, key_prefix="m") as saver:
        graph = build().compile(checkpointer=saver)
        for i in range(3):
            assert turn(graph, "solo", f"q{i}") == 2 * (i + 1)
        assert saver.serving_from_memory
        history = [
            [m.content for m in s.values["messages"]] for s in graph.get_state_history(cfg("solo"))
        ]
        assert history == reference_history({"solo": ["q0", "q1", "q2"]})["solo"]
