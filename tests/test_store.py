"""RedisStore and AsyncRedisStore, LangGraph's BaseStore on plain Redis, on real servers: every
scenario runs on both through one face (tests/store_helpers.py), and answers are checked against
InMemoryStore's, with our store's differences by design modelled there."""

from __future__ import annotations

import ast
import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.base import (
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from langgraph.store.memory import InMemoryStore
from matrix_helpers import MatrixServer
from redis.crc import key_slot
from store_helpers import (
    DIMS,
    Face,
    FaceMaker,
    HashedWords,
    Namespace,
    Target,
    check_timestamps,
    index_config,
    matching,
    new_prefix,
    prune,
    same_as_reference,
)

import redis_checkpoint
from redis_checkpoint import AsyncRedisStore, RedisStore
from redis_checkpoint.errors import CorruptEntryError
from redis_checkpoint.testing import RedisClusterServers, RedisServer


@pytest.fixture(params=["sync", "async"])
async def make(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[FaceMaker]:
    """Makes stores of one kind on the session's server, each under a prefix of its own."""
    target = Target(redis_server.host, (redis_server.port,))
    async with AsyncExitStack() as stack:
        yield FaceMaker(target, request.param == "async", stack)


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


MARKER = "c0rrupt-me"


def holder_of(face: Face, marker: str) -> tuple[bytes, bytes | None]:
    """The Redis key (and hash field) that holds the item whose value contains ``marker``."""
    layout = []
    for key in face.redis_keys():
        kind = face.raw.type(key)
        layout.append((key, kind))
        if kind == b"string" and marker.encode() in face.raw.get(key):
            return key, None
        if kind == b"hash":
            for field, blob in face.raw.hgetall(key).items():
                if marker.encode() in blob:
                    return key, field
    pytest.fail(f"no string or hash field holds {marker!r} in plain bytes: {layout}")


# -- values, timestamps, keys ---------------------------------------------------------------------

VALUES: list[dict[str, Any]] = [
    {"text": "héllo wörld ✓", "n": 1},
    {
        "nested": {"a": [1, 2.5, None, True, "x"], "b": {"c": {}, "d": []}},
        "big": 2**53,
        "small": -0.125,
        "empty": "",
    },
    {"quote": 'a"b\\c\n\t\x00\x7f', "cjk": "日本語", "emoji": "🎉", "null": None},
    {},
    {"tuple": (1, "a"), "when": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "huge": 2**70},
]


async def test_values_round_trip_and_created_at_survives_a_put(make: FaceMaker) -> None:
    face = await make()
    ns = ("docs", "user:1")
    for i, value in enumerate(VALUES):
        await face.put(ns, f"k{i}", value)
    for i, value in enumerate(VALUES):
        item = await face.get(ns, f"k{i}")
        assert item is not None
        assert (item.namespace, item.key, item.value) == (ns, f"k{i}", value)
        check_timestamps(item)
    assert await face.get(ns, "missing") is None
    assert await face.get(("docs",), "k0") is None
    assert await face.get(("docs", "user:1", "deeper"), "k0") is None

    first = await face.get(ns, "k0")
    assert first is not None
    await asyncio.sleep(0.02)
    await face.put(ns, "k0", {"text": "again"})
    again = await face.get(ns, "k0")
    assert again is not None and again.value == {"text": "again"}
    assert again.created_at == first.created_at
    assert again.updated_at > first.updated_at
    [found] = await face.search(ns, filter={"text": "again"})
    assert (found.created_at, found.updated_at) == (again.created_at, again.updated_at)

    await face.delete(ns, "k0")
    assert await face.get(ns, "k0") is None
    await face.delete(ns, "k0")  # deleting what is not there is no error
    await asyncio.sleep(0.02)
    await face.put(ns, "k0", {"text": "new"})
    reborn = await face.get(ns, "k0")
    assert reborn is not None and reborn.created_at > first.created_at


async def test_deleting_every_item_leaves_no_key_under_the_prefix(make: FaceMaker) -> None:
    face = await make(index=index_config())
    for ns in [("a",), ("a", "b"), ("c",)]:
        await face.put(ns, "k1", {"text": "one"})
        await face.put(ns, "k2", {"text": "two"}, index=False)
    assert face.redis_keys()
    for ns in [("a",), ("a", "b"), ("c",)]:
        await face.delete(ns, "k1")
        await face.delete(ns, "k2")
    assert await face.list_namespaces() == []
    assert face.redis_keys() == []


async def test_nothing_is_pickled(make: FaceMaker) -> None:
    face = await make(index=index_config())
    await face.put(("p",), "k", {"marker": MARKER, "text": "some words", "n": [1, 2]})
    key, field = holder_of(face, MARKER)  # the value is in plain bytes, not pickled
    blob = face.raw.get(key) if field is None else face.raw.hget(key, field)
    # pickle's opening: PROTO 2 or 3 then a dict, or PROTO 4 or 5 then FRAME
    assert not re.search(rb"\x80[\x02\x03]\}|\x80[\x04\x05]\x95", blob), blob
    for path in Path(redis_checkpoint.__file__).parent.joinpath("store").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any("pickle" in name or name == "dill" for name in names), path
        assert "pickle_fallback=True" not in path.read_text(), path


# -- namespaces -----------------------------------------------------------------------------------

ODD_NAMESPACES: list[Namespace] = [
    ("a",),
    ("a", "b"),
    ("a:b",),
    ("ab",),
    ("a b",),
    ("a-b",),
    ("a", "b:c"),
    ("a", "b", "c"),
    ("a", "b c"),
    ("{a}",),
    ("a}",),
    ("{",),
    ("ü", "日本"),
    ("*x?", "[y]"),
    ("a\\b",),
    (" ", "a b "),
]
ODD_KEYS = ["k", "k:1", "{k}", "*", "ключ", "a b", "[k]", ""]


async def test_odd_labels_and_keys_stay_apart(make: FaceMaker) -> None:
    face = await make()
    ref = InMemoryStore()
    puts = [
        PutOp(ns, key, {"ns": list(ns), "key": key})
        for ns in ODD_NAMESPACES
        for key in ODD_KEYS[: 1 + len(ns[0]) % len(ODD_KEYS)]
    ]
    await same_as_reference(face, ref, *puts[:20])
    for op in puts[20:]:
        await same_as_reference(face, ref, op)
    for ns in ODD_NAMESPACES:
        await same_as_reference(face, ref, SearchOp(ns, limit=100))
        await same_as_reference(face, ref, ListNamespacesOp(matching(prefix=ns)))
        await same_as_reference(face, ref, ListNamespacesOp(matching(suffix=ns[-1:])))
        for key in ODD_KEYS:
            await same_as_reference(face, ref, GetOp(ns, key))
    reads: list[Op] = [
        SearchOp((), limit=1000),
        SearchOp(("a",), limit=1000),
        SearchOp(("a", "b"), limit=3, offset=1),
        SearchOp(("a",), filter={"key": "k"}, limit=1000),
        SearchOp(("*x?",)),
        SearchOp(("*",)),
        ListNamespacesOp(),
        ListNamespacesOp(max_depth=1),
        ListNamespacesOp(matching(prefix=("a", "*"))),
        ListNamespacesOp(matching(prefix=("*", "b")), max_depth=2),
        ListNamespacesOp(matching(suffix=("*",))),
        ListNamespacesOp(limit=3, offset=2),
    ]
    for read in reads:
        await same_as_reference(face, ref, read)
    # The plain order: the namespaces sorted as tuples, "a" before "a b" before "a-b".
    listed = await face.list_namespaces(limit=1000)
    assert listed == sorted(ODD_NAMESPACES)


async def _on_face(face: Face, what: str, ns: tuple[Any, ...]) -> Any:
    if what == "put":
        return await face.put(ns, "k", {"v": 1})
    if what == "get":
        return await face.get(ns, "k")
    if what == "delete":
        return await face.delete(ns, "k")
    if what == "search":
        return await face.search(ns)
    if what == "prefix":
        return await face.list_namespaces(prefix=ns)
    return await face.list_namespaces(suffix=ns)


def _on_reference(ref: InMemoryStore, what: str, ns: tuple[Any, ...]) -> Any:
    if what == "put":
        return ref.put(ns, "k", {"v": 1})
    if what == "get":
        return ref.get(ns, "k")
    if what == "delete":
        return ref.delete(ns, "k")
    if what == "search":
        return ref.search(ns)
    if what == "prefix":
        return ref.list_namespaces(prefix=ns)
    return ref.list_namespaces(suffix=ns)


BAD_NAMESPACES: list[tuple[Any, ...]] = [
    (),
    ("a.b",),
    ("langgraph", "x"),
    ("",),
    ("a", ""),
    ("a\x00",),
    ("a", 1),
]


async def test_bad_namespaces_are_refused_as_in_memory_store_refuses_them(
    make: FaceMaker,
) -> None:
    face = await make()
    ref = InMemoryStore()
    for ns in BAD_NAMESPACES:
        for what in ["put", "get", "delete", "search", "prefix", "suffix"]:
            ours: Any
            theirs: Any
            try:
                ours = await _on_face(face, what, ns)
            except Exception as exc:
                ours = type(exc)
            try:
                theirs = _on_reference(ref, what, ns)
            except Exception as exc:
                theirs = type(exc)
            prune(ref)  # InMemoryStore remembers the namespace of a get
            assert ours == theirs, (what, ns)
            if what == "put":
                assert ours is InvalidNamespaceError, ns
    assert await face.list_namespaces() == []


async def test_a_label_with_a_period_in_a_direct_batch_is_refused_or_kept_apart(
    make: FaceMaker,
) -> None:
    # BaseStore's methods check labels; ops handed to batch itself skip that check.
    face = await make()
    try:
        await face.batch([PutOp(("x.y",), "k", {"v": 1})])
    except InvalidNamespaceError:
        return
    assert await face.get(("x", "y"), "k") is None
    assert await face.search(("x",)) == []
    assert await face.list_namespaces(prefix=("x",)) == []


# -- batches, filters, vector search --------------------------------------------------------------


async def test_reads_in_a_batch_see_the_state_before_its_puts(make: FaceMaker) -> None:
    face = await make(index=index_config())
    ref = InMemoryStore(index=index_config())
    ns = ("b",)
    await same_as_reference(face, ref, PutOp(ns, "seed", {"text": "red apple"}))
    results = await same_as_reference(
        face,
        ref,
        PutOp(ns, "k", {"text": "red one"}),
        GetOp(ns, "k"),
        SearchOp(ns, query="red", limit=10),
        SearchOp((), limit=10),
        ListNamespacesOp(),
        PutOp(ns, "k", {"text": "red two"}),
        GetOp(ns, "seed"),
        PutOp(ns, "seed", None),
        PutOp(("c",), "x", {"text": "three"}),
        PutOp(("c",), "y", {"text": "four"}),
        PutOp(("c",), "y", None),
        ListNamespacesOp(matching(prefix=("c",))),
    )
    assert results[1] is None and results[4] == [("b",)] and results[11] == []
    after: list[Op] = [
        GetOp(ns, "k"),
        GetOp(ns, "seed"),
        GetOp(("c",), "x"),
        GetOp(("c",), "y"),
        ListNamespacesOp(),
        SearchOp((), query="red two", limit=10),
    ]
    for read in after:
        await same_as_reference(face, ref, read)


FILTER_VALUES: list[dict[str, Any]] = [
    {"n": 1, "tag": "red", "meta": {"lvl": 1, "tags": ["p", "q"]}, "flag": True},
    {"n": 2.0, "tag": "blue", "meta": {"lvl": 2, "tags": []}, "flag": False},
    {
        "n": 2,
        "tag": None,
        "meta": {"lvl": 1, "tags": ["q", "p"], "extra": {"deep": [1, {"x": "y"}]}},
    },
    {"n": "x", "tag": "red"},
    {"n": -3.5, "items": [], "meta": "not a dict"},
    {
        "n": 10**12,
        "meta": {"lvl": 0, "tags": ["p", "q"], "extra": {"deep": [1, {"x": "y", "z": 1}]}},
    },
    {"tag": "red", "nums": [1, 2, 3]},
    {"n": None, "text": "ü"},
]
FILTERS: list[dict[str, Any]] = [
    {"tag": "red"},
    {"tag": None},
    {"n": 2},
    {"n": {"$eq": 2}},
    {"n": {"$ne": 2}},
    {"n": {"$gt": 1}},
    {"n": {"$gte": 2, "$lt": 100}},
    {"n": {"$lte": -3.5}},
    {"n": {"$lt": 0}},
    {"meta": {"lvl": 1}},
    {"meta": {"tags": ["p", "q"]}},
    {"meta": {"tags": []}},
    {"meta": {"extra": {"deep": [1, {"x": "y"}]}}},
    {"meta": {"lvl": {"$gt": 0}}},
    {"flag": True},
    {"flag": False},
    {"items": []},
    {"nums": [1, 2, 3]},
    {"nums": [1, 2]},
    {"tag": "red", "n": {"$lt": 3}},
    {"missing": None},
    {"n": None},
    {"n": {"$ne": None}},
    {"n": "x"},
    {"n": {"$eq": "x"}},
    {"text": "ü"},
]


async def test_filters_match_in_memory_store(make: FaceMaker) -> None:
    face = await make()
    ref = InMemoryStore()
    for i, value in enumerate(FILTER_VALUES):
        await same_as_reference(face, ref, PutOp(("f", str(i % 2)), f"k{i}", value))
    for condition in FILTERS:  # a comparison on a missing or text value: see the next test
        for prefix in [("f",), ("f", "0")]:
            await same_as_reference(face, ref, SearchOp(prefix, filter=condition, limit=100))
        await same_as_reference(face, ref, SearchOp(("f", "1"), filter=condition, limit=1))


async def test_a_comparison_on_a_missing_or_text_value_is_no_match(make: FaceMaker) -> None:
    face = await make()
    ns = ("cmp",)
    await face.put(ns, "number", {"n": 5})
    await face.put(ns, "text", {"n": "five"})
    await face.put(ns, "none", {"n": None})
    await face.put(ns, "missing", {"m": 5})
    for condition in [{"n": {"$gt": 1}}, {"n": {"$gte": 5}}, {"n": {"$lt": 9}}, {"n": {"$lte": 5}}]:
        found = await face.search(ns, filter=condition)
        assert [item.key for item in found] == ["number"], condition
    with pytest.raises((TypeError, ValueError)):  # where InMemoryStore gives up
        reference = InMemoryStore()
        reference.put(ns, "text", {"n": "five"})
        reference.search(ns, filter={"n": {"$gt": 1}})


async def test_vector_search_scores_and_pages_as_in_memory_store(make: FaceMaker) -> None:
    face = await make(index=index_config())
    ref = InMemoryStore(index=index_config())
    docs: list[tuple[Namespace, str, dict[str, Any], Any]] = [
        (("v", "1"), "red", {"text": "red apple", "n": 1}, None),
        (("v", "1"), "green", {"text": "green apple pie", "n": 2}, None),
        (("v", "1"), "plain", {"title": "no text here", "n": 3}, None),
        (("v", "1"), "off", {"text": "red red red", "n": 4}, False),
        (
            ("v", "2"),
            "items",
            {"items": [{"text": "sky"}, {"text": "red sea"}], "n": 5},
            ["items[*].text"],
        ),
        (("v", "2"), "two", {"text": "stone", "title": "red fire", "n": 6}, ["text", "title"]),
        (("v", "2"), "same", {"text": "red apple", "n": 7}, None),
        (("v", "2"), "bare", {"n": 8}, None),
        (("v",), "top", {"text": "pear", "n": 9}, ["text"]),
        (("w",), "other", {"text": "red apple", "n": 10}, None),
    ]
    await same_as_reference(
        face, ref, *(PutOp(ns, key, value, index) for ns, key, value, index in docs[:5])
    )
    for ns, key, value, index in docs[5:]:
        await same_as_reference(face, ref, PutOp(ns, key, value, index))
    queries = ["red apple", "sky", "fire stone", "nothing matches"]
    for query in queries:
        for prefix in [("v",), ("v", "1"), ("v", "2"), ()]:
            for limit, offset in [(10, 0), (2, 0), (2, 1), (3, 4), (1, 7), (20, 20)]:
                op = SearchOp(prefix, query=query, limit=limit, offset=offset)
                await same_as_reference(face, ref, op)
        await same_as_reference(face, ref, SearchOp(("v",), query=query, filter={"n": {"$gte": 2}}))
    # Unscored items come only after the scored ones, and only on a short page.
    found = await face.search(("v",), query="red apple", limit=100)
    scores = [item.score for item in found]
    assert None in scores and all(s is not None for s in scores[: scores.index(None)])
    assert all(s is None for s in scores[scores.index(None) :])
    assert all(item.score is not None for item in await face.search(("v",), query="red", limit=3))
    # A re-put replaces the item's vectors: "red" no longer scores it as a red apple.
    await same_as_reference(face, ref, PutOp(("v", "1"), "red", {"text": "blue sky"}))
    await same_as_reference(face, ref, PutOp(("v", "2"), "same", {"text": "red apple"}, False))
    for query in queries:
        await same_as_reference(face, ref, SearchOp((), query=query, limit=100))


async def test_an_index_without_fields_embeds_the_whole_value(make: FaceMaker) -> None:
    face = await make(index=IndexConfig(dims=DIMS, embed=HashedWords()))
    ref = InMemoryStore(index=IndexConfig(dims=DIMS, embed=HashedWords()))
    values: list[tuple[str, dict[str, Any]]] = [
        ("a", {"text": "red apple"}),
        ("b", {"note": "blue sky", "n": 1}),
    ]
    for key, value in values:
        await same_as_reference(face, ref, PutOp(("whole",), key, value))
    await same_as_reference(face, ref, PutOp(("whole",), "c", {"text": "red"}, ["text"]))
    found = await same_as_reference(face, ref, SearchOp(("whole",), query="red apple"))
    assert isinstance(found[0], list) and all(isinstance(i, SearchItem) for i in found[0])
    assert [i.score is not None for i in found[0] if isinstance(i, SearchItem)] == [True] * 3


async def test_a_query_without_an_index_is_a_plain_search(make: FaceMaker) -> None:
    face = await make()
    ref = InMemoryStore()
    await same_as_reference(face, ref, PutOp(("q",), "a", {"text": "red"}, ["text"]))
    await same_as_reference(face, ref, PutOp(("q", "r"), "b", {"text": "blue"}))
    for offset in (0, 1):
        await same_as_reference(face, ref, SearchOp(("q",), query="blue", offset=offset))


async def test_search_without_a_query_orders_by_namespace_then_first_insertion(
    make: FaceMaker,
) -> None:
    face = await make()
    for ns, key in [
        (("b",), "k3"),
        (("b",), "k1"),
        (("a", "z"), "k9"),
        (("b",), "k2"),
        (("a",), "k5"),
    ]:
        await face.put(ns, key, {"v": key})
    await face.put(("b",), "k1", {"v": "again"})  # keeps its place

    async def order() -> list[tuple[Namespace, str]]:
        return [(item.namespace, item.key) for item in await face.search((), limit=100)]

    assert await order() == [
        (("a",), "k5"),
        (("a", "z"), "k9"),
        (("b",), "k3"),
        (("b",), "k1"),
        (("b",), "k2"),
    ]
    await face.delete(("b",), "k3")
    await face.put(("b",), "k3", {"v": "back"})  # moves to the end
    assert [key for _, key in await order()] == ["k5", "k9", "k1", "k2", "k3"]
    paged = [(item.namespace, item.key) for item in await face.search((), limit=2, offset=1)]
    assert paged == [(("a", "z"), "k9"), (("b",), "k1")]


async def test_a_search_sees_what_another_store_wrote_since_its_last_search(
    make: FaceMaker,
) -> None:
    # Two stores on one prefix stand for two processes: each may keep what it read.
    reader = await make(index=index_config(), ttl=TTLConfig(default_ttl=0.02))  # 1.2 s
    writer = await make(index=index_config(), ttl=TTLConfig(default_ttl=0.02), prefix=reader.prefix)
    ns = ("shared",)
    ref = InMemoryStore(index=index_config())
    for key, text in [("a", "red apple"), ("b", "green pear"), ("c", "blue sky")]:
        await writer.put(ns, key, {"text": text}, ttl=None)
        ref.put(ns, key, {"text": text})
    await reader.search(ns, query="red")  # warm
    await writer.put(ns, "b", {"text": "red fire"}, ttl=None)
    await writer.delete(ns, "c")
    await writer.put(ns, "d", {"text": "red sea"}, ttl=None)
    for op in [
        PutOp(ns, "b", {"text": "red fire"}),
        PutOp(ns, "c", None),
        PutOp(ns, "d", {"text": "red sea"}),
    ]:
        ref.batch([op])
    for search in [SearchOp(ns, query="red fire", limit=10), SearchOp(ns, limit=10)]:
        await same_as_reference(reader, ref, search)
    # Emptied and made again by the other store.
    for key in ["a", "b", "d"]:
        await writer.delete(ns, key)
    await writer.put(ns, "e", {"text": "stone"}, ttl=None)
    assert [(i.key, i.value) for i in await reader.search(ns, query="red")] == [
        ("e", {"text": "stone"})
    ]
    # Expiry, and a refresh made by the other store, which changes no version.
    await writer.put(ns, "short", {"text": "red short"})
    await writer.put(ns, "kept", {"text": "red kept"})
    start = time.monotonic()
    assert {i.key for i in await reader.search(ns, query="red", refresh_ttl=False)} == {
        "e",
        "short",
        "kept",
    }
    await sleep_until(start + 0.6)
    assert await writer.get(ns, "kept") is not None  # refreshed: until 1.8
    await sleep_until(start + 1.4)
    found = await reader.search(ns, query="red", refresh_ttl=False)
    assert sorted(i.key for i in found) == ["e", "kept"]


# -- TTL ------------------------------------------------------------------------------------------


async def test_expired_items_are_gone_and_so_are_their_keys(make: FaceMaker) -> None:
    assert (await make()).store.supports_ttl
    face = await make(ttl=TTLConfig(default_ttl=0.02))  # 1.2 s
    gone = await make(ttl=TTLConfig(default_ttl=0.01), index=index_config())  # 0.6 s
    await face.put(("t", "1"), "a", {"v": 1})
    await face.put(("t", "1"), "keep", {"v": 2}, ttl=None)
    await face.put(("t", "2"), "b", {"v": 3}, ttl=0.01)
    await gone.put(("x",), "1", {"text": "one"})
    await gone.put(("x",), "2", {"text": "two"}, index=False)
    await gone.put(("y", "z"), "3", {"text": "three"})
    start = time.monotonic()
    assert gone.redis_keys()
    assert await face.list_namespaces() == [("t", "1"), ("t", "2")]

    await sleep_until(start + 0.8)
    while gone.redis_keys() and time.monotonic() < start + 1.0:  # "a" lives until 1.2
        await asyncio.sleep(0.05)
    left = gone.redis_keys()  # before any read, which might tidy up
    assert await gone.list_namespaces() == []
    assert await gone.search((), limit=100) == []
    assert await gone.search((), query="one", limit=100) == []
    assert await gone.get(("x",), "1") is None
    assert await face.get(("t", "2"), "b", refresh_ttl=False) is None
    assert await face.list_namespaces() == [("t", "1")]
    assert [i.key for i in await face.search(("t",), refresh_ttl=False)] == ["a", "keep"]

    await sleep_until(start + 1.5)
    assert await face.get(("t", "1"), "a") is None
    assert [i.key for i in await face.search(("t",))] == ["keep"]
    assert await face.list_namespaces() == [("t", "1")]
    assert left == [], "keys left after every item expired"
    assert gone.redis_keys() == [], "keys left after every item expired, and reads"


async def test_reads_refresh_the_ttl_as_configured(make: FaceMaker) -> None:
    eager = await make(ttl=TTLConfig(default_ttl=0.02, refresh_on_read=True))  # 1.2 s
    lazy = await make(ttl=TTLConfig(default_ttl=0.02, refresh_on_read=False))
    ns = ("r",)
    for key in ["get", "search", "peek", "untouched"]:
        await eager.put(ns, key, {"id": key})
    for key in ["get", "forced"]:
        await lazy.put(ns, key, {"id": key})
    start = time.monotonic()

    await sleep_until(start + 0.6)
    assert await eager.get(ns, "get") is not None
    assert [i.key for i in await eager.search(ns, filter={"id": "search"})] == ["search"]
    assert await eager.get(ns, "peek", refresh_ttl=False) is not None
    assert await lazy.get(ns, "get") is not None
    assert await lazy.get(ns, "forced", refresh_ttl=True) is not None

    await sleep_until(start + 1.4)  # past the first expiry, before the refreshed one
    assert await eager.get(ns, "get", refresh_ttl=False) is not None
    assert await eager.get(ns, "search", refresh_ttl=False) is not None
    assert await eager.get(ns, "peek", refresh_ttl=False) is None
    assert await eager.get(ns, "untouched", refresh_ttl=False) is None
    assert await lazy.get(ns, "get") is None
    assert await lazy.get(ns, "forced") is not None

    await sleep_until(start + 2.0)
    assert await eager.search(ns, refresh_ttl=False) == []
    assert await lazy.search(ns) == []
    assert await eager.list_namespaces() == [] and await lazy.list_namespaces() == []


async def test_a_ttl_per_put_without_a_ttl_config(make: FaceMaker) -> None:
    face = await make()
    ns = ("p",)
    await face.put(ns, "short", {"v": 1}, ttl=0.01)
    await face.put(ns, "pinned", {"v": 2}, ttl=0.01)
    await face.put(ns, "pinned", {"v": 3})  # a put without a ttl: no expiry
    await asyncio.sleep(0.8)
    assert await face.get(ns, "short") is None
    pinned = await face.get(ns, "pinned")
    assert pinned is not None and pinned.value == {"v": 3}


# -- damage ---------------------------------------------------------------------------------------


def corrupt(face: Face, how: str) -> bytes:
    """Damage the stored item holding MARKER: its bytes replaced by garbage ("garbage"), or its
    text made invalid UTF-8 in place, any header kept ("utf-8"). Returns the Redis key."""
    key, field = holder_of(face, MARKER)
    old = face.raw.get(key) if field is None else face.raw.hget(key, field)
    if how == "garbage":
        new = b"\xc1 neither json nor msgpack \xff"
    else:
        new = old.replace(MARKER.encode(), b"\xff" * len(MARKER))
    if field is None:
        ttl = face.raw.pttl(key)
        face.raw.set(key, new, px=ttl if ttl > 0 else None)
    else:
        face.raw.hset(key, field, new)
    return key


@pytest.mark.parametrize("how", ["garbage", "utf-8"])
@pytest.mark.parametrize("refresh", [True, False])
async def test_a_corrupt_item_raises_naming_its_key(
    make: FaceMaker, how: str, refresh: bool
) -> None:
    face = await make(ttl=TTLConfig(refresh_on_read=refresh))
    ns = ("c", "1")
    await face.put(ns, "bad", {"marker": MARKER})
    await face.put(ns, "good", {"v": 1})
    await face.put(("c", "2"), "other", {"v": 2})
    key = corrupt(face, how)
    with pytest.raises(CorruptEntryError) as err:
        await face.get(ns, "bad")
    assert key.decode() in str(err.value)
    from_get = str(err.value)
    with pytest.raises(CorruptEntryError) as err:
        await face.search(ns)
    assert key.decode() in str(err.value) and "'bad'" in str(err.value)
    good = await face.get(ns, "good")
    assert good is not None and good.value == {"v": 1}
    other = await face.get(("c", "2"), "other")
    assert other is not None and other.value == {"v": 2}
    assert await face.list_namespaces() == [("c", "1"), ("c", "2")]
    await face.delete(ns, "bad")
    assert [item.key for item in await face.search(ns)] == ["good"]
    assert "'bad'" in from_get, "the item's key"


async def test_a_key_of_another_type_is_a_corrupt_entry(make: FaceMaker) -> None:
    face = await make()
    ns = ("wt",)
    await face.put(ns, "bad", {"marker": MARKER})
    key, _ = holder_of(face, MARKER)
    face.raw.delete(key)
    face.raw.rpush(key, b"written by something else")
    with pytest.raises(CorruptEntryError) as err:
        await face.get(ns, "bad")
    assert key.decode() in str(err.value)


# -- construction, sharing ------------------------------------------------------------------------


def test_the_sync_store_from_a_url(redis_url: str) -> None:
    ns = ("url", new_prefix())
    with RedisStore.from_conn_string(
        redis_url, index=index_config(), ttl=TTLConfig(default_ttl=5)
    ) as store:
        assert store.supports_ttl
        store.put(ns, "k", {"text": "red apple"})
        store.put(ns, "j", {"text": "blue sky"})
        item = store.get(ns, "k")
        assert item is not None and item.value == {"text": "red apple"}
        found = store.search(ns, query="apple")
        assert [i.key for i in found] == ["k", "j"] and found[0].score is not None
        assert store.list_namespaces(prefix=ns) == [ns]
        store.delete(ns, "k")
        store.delete(ns, "j")
        assert store.list_namespaces(prefix=ns) == []


async def test_the_async_store_from_a_url(redis_url: str) -> None:
    ns = ("url", new_prefix())
    async with AsyncRedisStore.from_conn_string(
        redis_url, index=index_config(), ttl=TTLConfig(default_ttl=5)
    ) as store:
        assert store.supports_ttl
        await store.aput(ns, "k", {"text": "red apple"})
        await store.aput(ns, "j", {"text": "blue sky"})
        item = await store.aget(ns, "k")
        assert item is not None and item.value == {"text": "red apple"}
        found = await store.asearch(ns, query="apple")
        assert [i.key for i in found] == ["k", "j"] and found[0].score is not None
        assert await store.alist_namespaces(prefix=ns) == [ns]
        await store.adelete(ns, "k")
        await store.adelete(ns, "j")
        assert await store.alist_namespaces(prefix=ns) == []


async def test_sync_and_async_stores_share_a_prefix_and_not_another(
    redis_server: RedisServer,
) -> None:
    target = Target(redis_server.host, (redis_server.port,))
    prefix = new_prefix()
    async with AsyncExitStack() as stack:
        sync = await FaceMaker(target, False, stack)(index=index_config(), prefix=prefix)
        async_ = await FaceMaker(target, True, stack)(index=index_config(), prefix=prefix)
        stranger = await FaceMaker(target, False, stack)(index=index_config())
        await sync.put(("s",), "from-sync", {"text": "red apple"})
        await async_.put(("s",), "from-async", {"text": "red sea"})
        for face in (sync, async_):
            found = await face.search(("s",), query="red apple")
            assert [(i.key, i.score is not None) for i in found] == [
                ("from-sync", True),
                ("from-async", True),
            ]
            item = await face.get(("s",), "from-async")
            assert item is not None and item.value == {"text": "red sea"}
        assert await stranger.list_namespaces() == []
        assert await stranger.search(()) == []
        assert await stranger.get(("s",), "from-sync") is None


# -- the same small scenario on a cluster and on each server of the matrix ------------------------

WORDS = ["red", "green", "apple", "sky", "sea", "stone", "fire", "leaf"]


async def small_scenario(face: Face) -> None:
    """Puts over namespaces in different slots, then reads over prefixes that span them."""
    ref = InMemoryStore(index=index_config())
    namespaces: list[Namespace] = [("users", f"u{i}") for i in range(6)]
    namespaces += [("docs",), ("docs", "a:b"), ("{tag}", "x y"), ("ü",)]
    puts = [
        PutOp(ns, f"k{j}", {"text": f"{WORDS[(i + j) % 8]} {WORDS[(i * j) % 8]}", "n": i + j})
        for i, ns in enumerate(namespaces)
        for j in range(3)
    ]
    await same_as_reference(face, ref, *puts[:15])
    for op in puts[15:]:
        await same_as_reference(face, ref, op)
    reads: list[Op] = [
        SearchOp(("users",), limit=100),
        SearchOp((), limit=100),
        SearchOp((), limit=5, offset=7),
        SearchOp((), query="red sky", limit=5),
        SearchOp((), query="stone", limit=100),
        SearchOp(("users",), query="green leaf", filter={"n": {"$gte": 3}}, limit=4, offset=1),
        SearchOp(("docs",), filter={"n": 7}),
        ListNamespacesOp(),
        ListNamespacesOp(matching(prefix=("users",))),
        ListNamespacesOp(matching(suffix=("x y",))),
        ListNamespacesOp(max_depth=1),
        ListNamespacesOp(limit=3, offset=2),
        GetOp(("users", "u3"), "k1"),
        GetOp(("docs", "a:b"), "k2"),
    ]
    for read in reads:
        await same_as_reference(face, ref, read)
    await same_as_reference(face, ref, *reads, PutOp(("users", "u1"), "k0", {"text": "new"}))
    deletes: list[Op] = [PutOp(("users", "u2"), f"k{j}", None) for j in range(3)]
    await same_as_reference(face, ref, *deletes, PutOp(("docs",), "k0", None))
    for read in reads:
        await same_as_reference(face, ref, read)


@pytest.mark.cluster
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_the_store_on_a_cluster(redis_cluster: RedisClusterServers, is_async: bool) -> None:
    target = Target(redis_cluster.startup_nodes[0].host, tuple(redis_cluster.ports), cluster=True)
    async with AsyncExitStack() as stack:
        face = await FaceMaker(target, is_async, stack)(index=index_config())
        await small_scenario(face)
        slots = {key_slot(key) for key in face.redis_keys()}
        assert len(slots) > 1, "every namespace in one slot"
        short = await FaceMaker(target, is_async, stack)()
        await short.put(("users", "u1"), "k", {"v": 1}, ttl=0.01)
        await short.put(("docs",), "k", {"v": 1}, ttl=0.01)
        await asyncio.sleep(0.8)
        assert await short.list_namespaces() == []
        assert short.redis_keys() == []


async def test_the_store_on_each_server_of_the_matrix(matrix_server: MatrixServer) -> None:
    target = Target(matrix_server.server.host, (matrix_server.server.port,))
    async with AsyncExitStack() as stack:
        for is_async in (False, True):
            await small_scenario(await FaceMaker(target, is_async, stack)(index=index_config()))
        short = await FaceMaker(target, False, stack)(ttl=TTLConfig(default_ttl=0.01))  # 0.6 s
        await short.put(("a",), "k", {"v": 1})
        await short.put(("b", "c"), "k", {"v": 1})
        start = time.monotonic()
        await sleep_until(start + 0.4)
        assert isinstance(await short.get(("b", "c"), "k"), Item)  # refreshed: now until 1.0
        await sleep_until(start + 0.75)
        assert await short.list_namespaces() == [("b", "c")]
        assert await short.get(("b", "c"), "k", refresh_ttl=False) is not None
        await sleep_until(start + 1.2)
        assert await short.list_namespaces() == []
        assert short.redis_keys() == []


def test_the_fake_embedding_is_deterministic_and_never_zero() -> None:
    embed = HashedWords()
    assert embed.embed_query("red apple") == embed.embed_documents(["red apple"])[0]
    assert all(x > 0 for x in embed.embed_query(""))
