"""NodeCache as LangGraph's node cache: CachePolicy nodes run once, clears need no scan."""

from __future__ import annotations

from typing import Any, TypedDict

import redis
from cache_helpers import engine, unique
from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy

from redis_checkpoint import NodeCache


class State(TypedDict):
    question: str
    answer: str


def build(runs: list[str]) -> StateGraph[State, Any, State, State]:
    def expensive(state: State) -> dict[str, str]:
        runs.append(state["question"])
        return {"answer": state["question"].upper()}

    builder = StateGraph(State)
    builder.add_node("expensive", expensive, cache_policy=CachePolicy(ttl=60))
    builder.add_edge(START, "expensive")
    builder.add_edge("expensive", END)
    return builder


def test_a_cached_node_runs_once(redis_url: str, redis_client: redis.Redis) -> None:
    runs: list[str] = []
    cache: NodeCache[Any] = NodeCache(engine=engine(redis_url, unique("node")))
    graph = build(runs).compile(cache=cache)
    assert graph.invoke({"question": "why"})["answer"] == "WHY"
    assert graph.invoke({"question": "why"})["answer"] == "WHY"
    assert runs == ["why"]
    graph.invoke({"question": "how"})
    assert runs == ["why", "how"]
    stats = cache.engine.stats()["node"]
    assert stats.hits >= 1 and stats.sets == 2
    entries = [k for k in redis_client.scan_iter(f"{cache.engine.core.layout.base('node')}:*")]
    assert entries and all(0 < redis_client.ttl(k) <= 60 for k in entries)
    cache.clear()
    graph.invoke({"question": "why"})
    assert runs == ["why", "how", "why"]


async def test_a_cached_node_runs_once_async(redis_url: str) -> None:
    runs: list[str] = []
    cache: NodeCache[Any] = NodeCache(engine=engine(redis_url, unique("anode")))
    graph = build(runs).compile(cache=cache)
    assert (await graph.ainvoke({"question": "a"}))["answer"] == "A"
    assert (await graph.ainvoke({"question": "a"}))["answer"] == "A"
    assert runs == ["a"]
    assert cache.async_engine.round_trips > 0 and cache.engine.round_trips == 0
    await cache.aclear()
    await graph.ainvoke({"question": "a"})
    assert runs == ["a", "a"]
    await cache.aclose()


def test_clear_one_namespace_from_another_client(redis_url: str) -> None:
    prefix = unique("nodeclear")
    mine: NodeCache[Any] = NodeCache(engine=engine(redis_url, prefix))
    other: NodeCache[Any] = NodeCache(engine=engine(redis_url, prefix))
    keys = [(("graph", "node:a"), "k1"), (("graph", "node:b"), "k1"), (("x",), "k2")]
    mine.set({key: ({"value": i}, None) for i, key in enumerate(keys)})
    assert mine.get(keys) == {key: {"value": i} for i, key in enumerate(keys)}
    other.clear([("graph", "node:a"), ("never", "used")])
    assert mine.get(keys) == {keys[1]: {"value": 1}, keys[2]: {"value": 2}}
    other.clear()
    assert mine.get(keys) == {}
