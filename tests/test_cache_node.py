"""NodeCache as LangGraph's node cache: CachePolicy nodes run once, clears need no scan, and
langgraph's own RedisCache behaviours hold however the cache was built."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio
from cache_helpers import engine, private_metrics, unique
from langgraph.cache.base import FullKey, Namespace
from langgraph.cache.memory import InMemoryCache
from node_helpers import build
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_checkpoint import NodeCache


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


# --- langgraph's RedisCache behaviours, for NodeCache built three ways, in sync and async code ---
#
# The facts come from langgraph's own tests of its RedisCache (libs/checkpoint/tests/
# test_redis_cache.py): set/get, batches across namespaces with and without TTL, expiry,
# namespace isolation, clear all, clear by namespace, empty calls, missing keys, async calls on a
# sync client, Redis unavailable, corrupt entries skipped, odd namespaces, large values. Each holds
# here for a cache built from a URL, a sync client and an asyncio client, called from sync code
# (no event loop running) and from async code (one loop per test).

BUILT_FROM = ("url", "sync client", "async client")
QUICK_RETRY = {"socket_connect_timeout": 0.5, "socket_timeout": 5.0}


def _own_client(how: str, url: str) -> redis.Redis | redis.asyncio.Redis | None:
    """The client a user would pass (None for a URL); no retry: a dead server fails at once."""
    parts = urlsplit(url)
    if how == "sync client":
        return redis.Redis(
            host=parts.hostname or "",
            port=parts.port or 0,
            retry=Retry(NoBackoff(), 0),
            **QUICK_RETRY,
        )
    if how == "async client":
        return redis.asyncio.Redis(
            host=parts.hostname or "",
            port=parts.port or 0,
            retry=AsyncRetry(NoBackoff(), 0),
            **QUICK_RETRY,
        )
    return None


class Face:
    """One NodeCache and the calls of one mode: plain method calls (sync) or the awaitable ones
    run on this test's own event loop (async)."""

    def __init__(self, how: str, mode: str, url: str) -> None:
        self.mode = mode
        self.runner = asyncio.Runner()
        self.own = _own_client(how, url)
        target: Any = self.own if self.own is not None else url
        self.cache: NodeCache[Any] = NodeCache(
            target, prefix=unique("lg"), metrics=private_metrics()
        )

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        if self.mode == "sync":
            return self.cache.get(keys)
        return self.runner.run(self.cache.aget(keys))

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        if self.mode == "sync":
            self.cache.set(pairs)
        else:
            self.runner.run(self.cache.aset(pairs))

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        if self.mode == "sync":
            self.cache.clear(namespaces)
        else:
            self.runner.run(self.cache.aclear(namespaces))

    def entry_keys(self, raw: redis.Redis) -> list[bytes]:
        """The entry keys this cache wrote on the server (not its #gen / #tag keys)."""
        base = self.cache.engine.core.layout.base(self.cache.namespace)
        return [k for k in raw.scan_iter(f"{base}:*") if not re.search(rb":#(gen|tag:)", k)]

    def close(self) -> None:
        if self.mode == "sync":
            self.cache.close()
        else:
            self.runner.run(self.cache.aclose())
        if isinstance(self.own, redis.asyncio.Redis):
            self.runner.run(self.own.aclose())
        elif self.own is not None:
            self.own.close()
        self.runner.close()


@pytest.fixture(
    params=[(how, mode) for how in BUILT_FROM for mode in ("sync", "async")],
    ids=lambda param: f"{param[0]}, {param[1]} code",
)
def face(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Face]:
    how, mode = request.param
    built = Face(how, mode, redis_url)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture(autouse=True)
def no_default_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # A cache that ignored the client it was given would fall back on REDIS_URL: make that a
    # dead address, never the system Redis.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")


def test_set_then_get_on_the_server(face: Face, redis_client: redis.Redis) -> None:
    key: FullKey = (("graph", "node"), "key1")
    face.set({key: ({"result": 42}, None)})
    assert face.get([key]) == {key: {"result": 42}}
    assert len(face.entry_keys(redis_client)) == 1  # in Redis, not in the memory tier
    assert face.cache.engine.stats()["node"].errors == 0


def test_a_batch_across_namespaces_with_and_without_ttl(
    face: Face, redis_client: redis.Redis
) -> None:
    keys: list[FullKey] = [
        (("graph", "node1"), "key1"),
        (("graph", "node2"), "key2"),
        (("other", "node"), "key3"),
    ]
    face.set({keys[0]: ({"r": 1}, None), keys[1]: ({"r": 2}, 60), keys[2]: ({"r": 3}, None)})
    assert face.get(keys) == {keys[0]: {"r": 1}, keys[1]: {"r": 2}, keys[2]: {"r": 3}}
    ttls = sorted(redis_client.ttl(k) for k in face.entry_keys(redis_client))
    assert ttls[:2] == [-1, -1] and 0 < ttls[2] <= 60


def test_an_entry_expires_after_its_ttl(face: Face) -> None:
    key: FullKey = (("graph", "node"), "ttl_key")
    face.set({key: ({"data": "expires_soon"}, 1)})
    assert face.get([key]) == {key: {"data": "expires_soon"}}
    time.sleep(1.1)
    assert face.get([key]) == {}


def test_the_same_key_in_two_namespaces_is_two_entries(face: Face) -> None:
    first: FullKey = (("graph1", "node"), "same_key")
    second: FullKey = (("graph2", "node"), "same_key")
    face.set({first: ({"graph": 1}, None), second: ({"graph": 2}, None)})
    assert face.get([first, second]) == {first: {"graph": 1}, second: {"graph": 2}}


def test_clear_all(face: Face) -> None:
    keys: list[FullKey] = [(("graph", "node1"), "key1"), (("other",), "key2")]
    face.set({keys[0]: ({"r": 1}, None), keys[1]: ({"r": 2}, 30)})
    assert len(face.get(keys)) == 2
    face.clear()
    assert face.get(keys) == {}


def test_clear_some_namespaces(face: Face) -> None:
    keys: list[FullKey] = [
        (("graph1", "node"), "key1"),
        (("graph2", "node"), "key2"),
        (("graph1", "other"), "key3"),
    ]
    face.set({key: ({"r": i}, None) for i, key in enumerate(keys)})
    face.clear([("graph1", "node"), ("graph1", "other"), ("never", "written")])
    assert face.get(keys) == {keys[1]: {"r": 1}}


def test_empty_calls_and_missing_keys(face: Face) -> None:
    assert face.get([]) == {}
    face.set({})
    assert face.get([(("graph", "node"), "nonexistent")]) == {}


def test_a_corrupt_entry_is_skipped(face: Face, redis_client: redis.Redis) -> None:
    good: FullKey = (("graph", "node"), "valid_key")
    bad: FullKey = (("graph", "node"), "corrupted_key")
    face.set({good: ({"data": "valid"}, None), bad: ({"data": "soon garbage"}, None)})
    layout, namespace = face.cache.engine.core.layout, face.cache.namespace
    redis_client.set(layout.entry(namespace, face.cache._key(bad)), b"invalid:data:format")
    assert face.get([good, bad]) == {good: {"data": "valid"}}


def test_empty_and_odd_namespaces(face: Face) -> None:
    keys: list[FullKey] = [
        ((), "empty_ns"),
        (("graph:with:colons", "node-with-dashes"), "key_with_underscores"),
        (("graph", "with", "colons"), "key_with_underscores"),  # the same text, split otherwise
        (("{slot}", "#tag:x", "%41"), "k:{y}"),
    ]
    face.set({key: ({"i": i}, None) for i, key in enumerate(keys)})
    assert face.get(keys) == {key: {"i": i} for i, key in enumerate(keys)}
    face.clear([()])
    assert face.get(keys) == {key: {"i": i} for i, key in enumerate(keys) if i}


def test_large_values(face: Face) -> None:
    key: FullKey = (("graph", "node"), "large_key")
    large = {"large_list": list(range(1000)), "nested": {"data": "x" * 100_000}}
    face.set({key: (large, None)})
    assert face.get([key]) == {key: large}


def test_values_of_many_types_come_back_as_langgraph_returns_them(face: Face) -> None:
    values: list[Any] = [
        "text",
        7,
        3.5,
        True,
        None,
        [1, "a", None],
        (1, "x"),
        b"\x00\xff",
        {"nested": {"list": [1, 2]}},
        datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        uuid.UUID(int=5),
        decimal.Decimal("1.5"),
        {1, 2},
    ]
    pairs = {(("types",), str(i)): (value, None) for i, value in enumerate(values)}
    reference: InMemoryCache[Any] = InMemoryCache()
    reference.set(pairs)
    face.set(pairs)
    expected = reference.get(list(pairs))
    got = face.get(list(pairs))
    assert got == expected and len(got) == len(values)
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("how", BUILT_FROM)
def test_redis_unavailable_is_no_error(how: str, mode: str, dead_url: str) -> None:
    down = Face(how, mode, dead_url)
    try:
        key: FullKey = (("graph", "node"), "key")
        assert down.get([key]) == {}
        down.set({key: ({"data": "test"}, None)})  # no error
        assert down.get([(("graph", "node"), "other")]) == {}
        assert down.cache.engine.serving_from_memory
    finally:
        down.close()


# --- a compiled graph with CachePolicy, for each way of building the cache ---------------------


def _built(
    how: str, redis_url: str
) -> tuple[NodeCache[Any], redis.Redis | redis.asyncio.Redis | None]:
    own = _own_client(how, redis_url)
    target: Any = own if own is not None else redis_url
    return NodeCache(target, prefix=unique("graph"), metrics=private_metrics()), own


@pytest.mark.parametrize("how", BUILT_FROM)
def test_graph_invoke_runs_a_cached_node_once(how: str, redis_url: str) -> None:
    cache, own = _built(how, redis_url)
    runs: list[str] = []
    graph = build(runs).compile(cache=cache)
    try:
        assert graph.invoke({"question": "why"})["answer"] == "WHY"
        assert graph.invoke({"question": "why"})["answer"] == "WHY"
        assert runs == ["why"]
        graph.clear_cache()
        graph.invoke({"question": "why"})
        assert runs == ["why", "why"]
        assert cache.engine.stats()["node"].hits == 1
    finally:
        cache.close()
        if isinstance(own, redis.asyncio.Redis):
            asyncio.run(own.aclose())
        elif own is not None:
            own.close()


@pytest.mark.parametrize("how", BUILT_FROM)
async def test_graph_ainvoke_runs_a_cached_node_once(how: str, redis_url: str) -> None:
    cache, own = _built(how, redis_url)
    runs: list[str] = []
    graph = build(runs).compile(cache=cache)
    try:
        assert (await graph.ainvoke({"question": "why"}))["answer"] == "WHY"
        assert (await graph.ainvoke({"question": "why"}))["answer"] == "WHY"
        assert runs == ["why"]
        await graph.aclear_cache()
        await graph.ainvoke({"question": "why"})
        assert runs == ["why", "why"]
        assert cache.async_engine.stats()["node"].hits == 1
    finally:
        await cache.aclose()
        if isinstance(own, redis.asyncio.Redis):
            await own.aclose()
        elif own is not None:
            own.close()


@pytest.mark.parametrize("how", ["url", "sync client"])
def test_ainvoke_on_two_event_loops(how: str, redis_url: str) -> None:
    # asyncio.run twice is two loops: the async client the cache derived on the first is dead on
    # the second, so each loop gets its own.
    cache, own = _built(how, redis_url)
    runs: list[str] = []
    graph = build(runs).compile(cache=cache)
    try:
        for _ in range(3):
            assert asyncio.run(graph.ainvoke({"question": "loop"}))["answer"] == "LOOP"
        assert runs == ["loop"]
        assert len(cache._engines._async_by_loop) == 1  # the dead loops' clients are let go
    finally:
        cache.close()
        if own is not None:
            own.close()
