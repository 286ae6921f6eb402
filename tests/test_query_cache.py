"""The DB-query cache on a real Redis and a real SQLite: keys, exact rows, tags, negative caching,
single-flight, stale-while-revalidate, corrupt entries."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import aiosqlite
import pytest
import redis
from cache_helpers import engine, private_metrics, unique
from query_helpers import invalidate_query_tag

from redis_checkpoint import QueryCache, cached_query
from redis_checkpoint.cache.core import MISSING


@pytest.fixture
def cache(redis_url: str) -> Iterator[QueryCache]:
    query_cache = QueryCache(redis_url, prefix=unique("query"), metrics=private_metrics())
    try:
        yield query_cache
    finally:
        query_cache.close()


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    connection.executescript(
        """
        CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
        INSERT INTO users VALUES (1, 'ada'), (2, 'bob');
        """
    )
    try:
        yield connection
    finally:
        connection.close()


ROW = {
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "zoned": dt.datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("Europe/Paris")),
    "offset": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    "naive": dt.datetime(2026, 1, 2, 3, 4, 5),
    "day": dt.date(2026, 2, 28),
    "price": Decimal("12.3400"),
    "blob": b"\x00\xff",
    "missing": None,
    "flag": True,
    "ratio": 0.1,
    "pair": (1, "a"),
}


def test_rows_round_trip_exactly(cache: QueryCache) -> None:
    loads: list[int] = []

    def loader() -> list[dict[str, Any]]:
        loads.append(1)
        return [dict(ROW), {"id": None}]

    first = cache.get_or_load("SELECT * FROM t WHERE a = %s", [1], loader)
    second = cache.get_or_load("SELECT * FROM t WHERE a = %s", [1], loader)
    assert len(loads) == 1
    assert first == second == [ROW, {"id": None}]
    for name, value in ROW.items():
        assert type(second[0][name]) is type(value), name
    assert second[0]["zoned"].tzinfo == ZoneInfo("Europe/Paris")
    assert str(second[0]["price"]) == "12.3400"  # the exponent survives, not just the value
    assert cache.stats().hits == 1 and cache.stats().loads == 1


def test_key_is_sql_and_params(cache: QueryCache) -> None:
    assert cache.query_key("SELECT 1", {"a": 1, "b": 2}) == cache.query_key(
        "SELECT 1", {"b": 2, "a": 1}
    )
    assert cache.query_key("SELECT 1", [1]) != cache.query_key("SELECT 1", [2])
    assert cache.query_key("SELECT 1", [1]) != cache.query_key("SELECT 2", [1])
    assert cache.query_key("SELECT 1", ["1"]) != cache.query_key("SELECT 1", [1])
    with pytest.raises(TypeError, match="query parameters"):
        cache.query_key("SELECT 1", [object()])
    with pytest.raises(ValueError, match="non-empty"):
        cache.query_key("  ", [])


def test_decorator_keys_on_arguments_not_on_the_connection(
    cache: QueryCache, db: sqlite3.Connection
) -> None:
    calls: list[tuple[int, int]] = []

    @cached_query(ttl=60, tags=["users"], cache=cache)
    def user_name(connection: sqlite3.Connection, user_id: int, limit: int = 1) -> list[Any]:
        calls.append((user_id, limit))
        return connection.execute("SELECT name FROM users WHERE id = ?", (user_id,)).fetchall()

    other = sqlite3.connect(":memory:")
    other.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    try:
        assert user_name(db, 1) == [("ada",)]
        assert user_name(other, 1) == [("ada",)]  # another connection: same key
        assert user_name(db, user_id=1, limit=1) == [("ada",)]  # defaults applied
        assert user_name(db, 2) == [("bob",)]
        assert calls == [(1, 1), (2, 1)]
    finally:
        other.close()


def test_custom_key_and_unkeyable_arguments(cache: QueryCache) -> None:
    calls: list[object] = []

    @cache.cached(key=lambda thing: f"thing:{id(thing)}")
    def by_identity(thing: object) -> int:
        calls.append(thing)
        return len(calls)

    marker = object()
    assert by_identity(marker) == by_identity(marker) == 1

    @cache.cached()
    def unkeyable(thing: object) -> int:
        return 1

    with pytest.raises(TypeError, match=r"pass key=\.\.\. or ignore="):
        unkeyable(object())


async def test_async_decorator_on_aiosqlite(cache: QueryCache) -> None:
    executed: list[str] = []
    async with aiosqlite.connect(":memory:") as db:
        await db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT)")
        await db.execute("INSERT INTO items VALUES (1, 'one'), (2, 'two')")

        @cached_query(ttl=60, tags=["items"], cache=cache)
        async def labels(db: aiosqlite.Connection, above: int) -> list[Any]:
            executed.append("select")
            cursor = await db.execute("SELECT label FROM items WHERE id > ?", (above,))
            return list(await cursor.fetchall())

        assert await labels(db, 0) == [("one",), ("two",)]
        assert await labels(db, 0) == [("one",), ("two",)]
        assert executed == ["select"]

        @cache.invalidates("items")
        async def add(db: aiosqlite.Connection, label: str) -> None:
            await db.execute("INSERT INTO items (label) VALUES (?)", (label,))

        await add(db, "three")
        assert await labels(db, 0) == [("one",), ("two",), ("three",)]
        assert executed == ["select", "select"]


def test_tag_invalidation_from_another_process(redis_url: str) -> None:
    prefix = unique("query-xproc")
    cache = QueryCache(redis_url, prefix=prefix, metrics=private_metrics())
    version = {"n": 1}
    try:
        loader = lambda: [version["n"]]  # noqa: E731
        assert cache.get_or_load("SELECT n", None, loader, tags=["orders"]) == [1]
        assert cache.get_or_load("SELECT m", None, lambda: [0], tags=["users"]) == [0]
        version["n"] = 2
        process = multiprocessing.get_context("spawn").Process(
            target=invalidate_query_tag, args=(redis_url, prefix, "orders")
        )
        process.start()
        process.join(60)
        assert process.exitcode == 0
        assert cache.get_or_load("SELECT n", None, loader, tags=["orders"]) == [2]
        assert cache.get_or_load("SELECT m", None, lambda: [9], tags=["users"]) == [0]
    finally:
        cache.close()


def test_invalidates_only_after_success(cache: QueryCache) -> None:
    version = {"n": 1}

    def read() -> Any:
        return cache.get_or_load("SELECT n", None, lambda: [version["n"]], tags=["t"])

    assert read() == [1]
    version["n"] = 2
    with pytest.raises(RuntimeError), cache.invalidates("t"):
        raise RuntimeError("the write failed")
    assert read() == [1]  # a failed write invalidates nothing
    with cache.invalidates("t"):
        pass
    assert read() == [2]


def test_invalidates_decorator_fills_tags_from_arguments(cache: QueryCache) -> None:
    loads: list[int] = []

    @cache.cached(tags=["user:{user_id}"])
    def profile(user_id: int) -> dict[str, int]:
        loads.append(user_id)
        return {"id": user_id, "version": len(loads)}

    @cache.invalidates("user:{user_id}")
    def rename(user_id: int, name: str) -> str:
        return name

    assert profile(1)["version"] == 1 and profile(2)["version"] == 2
    assert rename(1, "ada") == "ada"
    assert profile(1)["version"] == 3  # reloaded
    assert profile(2)["version"] == 2  # untouched
    with pytest.raises(ValueError, match="decorator form"), cache.invalidates("user:{user_id}"):
        pass
    with pytest.raises(ValueError, match="unknown argument"):

        @cache.invalidates("user:{nope}")
        def broken(user_id: int) -> None:
            return None

        broken(1)


def test_negative_caching(redis_url: str) -> None:
    prefix = unique("query-negative")
    loads: list[int] = []

    def empty() -> list[Any]:
        loads.append(1)
        return []

    with engine(redis_url, prefix) as shared:
        cached = QueryCache(engine=shared, namespace="neg")
        assert cached.get_or_load("SELECT none", None, empty) == []
        assert cached.get_or_load("SELECT none", None, empty) == []
        assert len(loads) == 1  # an empty result is a hit
        uncached = QueryCache(engine=shared, namespace="no-neg", cache_empty=False)
        assert uncached.get_or_load("SELECT none", None, empty) == []
        assert uncached.get_or_load("SELECT none", None, empty) == []
        assert len(loads) == 3
        assert uncached.get_or_load("SELECT some", None, lambda: [1]) == [1]
        assert uncached.get_or_load("SELECT some", None, lambda: [2]) == [1]


def test_concurrent_misses_load_once(cache: QueryCache) -> None:
    loads: list[int] = []
    start = threading.Barrier(8)
    results: list[Any] = []

    def slow() -> list[int]:
        loads.append(1)
        time.sleep(0.2)  # long enough for every thread to arrive while it runs
        return [42]

    def worker() -> None:
        start.wait()
        results.append(cache.get_or_load("SELECT slow", None, slow))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [[42]] * 8
    assert len(loads) == 1


def test_stale_while_revalidate(redis_url: str) -> None:
    cache = QueryCache(
        redis_url, prefix=unique("swr"), metrics=private_metrics(), ttl=0.2, stale_ttl=60
    )
    version = {"n": 1}
    release = threading.Event()
    refreshing = threading.Event()

    def loader() -> list[int]:
        if version["n"] > 1:
            refreshing.set()
            release.wait(10)
        return [version["n"]]

    try:
        assert cache.get_or_load("SELECT v", None, loader) == [1]
        time.sleep(0.3)  # past the fresh lifetime, well inside the stale window
        version["n"] = 2
        refreshed: list[Any] = []
        refresher = threading.Thread(
            target=lambda: refreshed.append(cache.get_or_load("SELECT v", None, loader))
        )
        refresher.start()
        assert refreshing.wait(10)
        # While one caller reloads, the others get the stale value without waiting for it.
        assert cache.get_or_load("SELECT v", None, loader) == [1]
        release.set()
        refresher.join(10)
        assert refreshed == [[2]]
        assert cache.get_or_load("SELECT v", None, loader) == [2]
        stats = cache.stats()
        assert stats.stale_hits == 1 and stats.refreshes == 1
    finally:
        release.set()
        cache.close()


def test_corrupt_entry_is_a_miss_and_counted(cache: QueryCache, redis_client: redis.Redis) -> None:
    key = cache.query_key("SELECT c", None)
    assert cache.get_or_load("SELECT c", None, lambda: [1]) == [1]
    entry_key = cache.engine.core.layout.entry(cache.namespace, key)
    raw = redis_client.get(entry_key)
    assert isinstance(raw, bytes)
    generation = raw.split(b":")[1]
    redis_client.set(entry_key, b"RC1:" + generation + b":\xc1not msgpack")
    assert cache.get_or_load("SELECT c", None, lambda: [2]) == [2]
    assert cache.engine.stats()[cache.namespace].errors == 1
    assert cache.engine.get(cache.namespace, key, MISSING) is not MISSING


def test_bad_configuration_is_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="ttl"):
        QueryCache(redis_url, ttl=0)
    with pytest.raises(ValueError, match="stale_ttl"):
        QueryCache(redis_url, stale_ttl=-1)
    with pytest.raises(TypeError, match="tags must be a sequence"):
        cached_query(tags="orders")(lambda: None)  # type: ignore[arg-type]


async def test_async_single_flight_and_tags(cache: QueryCache) -> None:
    loads: list[int] = []

    async def slow() -> list[int]:
        loads.append(1)
        await asyncio.sleep(0.1)
        return [len(loads)]

    results = await asyncio.gather(
        *(cache.aget_or_load("SELECT a", [1], slow, tags=["a"]) for _ in range(10))
    )
    assert results == [[1]] * 10 and len(loads) == 1
    async with cache.invalidates("a"):
        pass
    assert await cache.aget_or_load("SELECT a", [1], slow, tags=["a"]) == [2]
    await cache.aclose()


async def test_db_handles_are_recognised_and_statements_are_not() -> None:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from sqlalchemy.orm import Session

    from redis_checkpoint.cache.query.keys import _is_db_handle

    sync_engine = sa.create_engine("sqlite://")
    async_engine = create_async_engine("sqlite+aiosqlite://")
    raw = sqlite3.connect(":memory:")
    try:
        with Session(sync_engine) as session, sync_engine.connect() as connection:
            handles = [sync_engine, session, connection, raw, raw.cursor()]
            handles += [async_engine, AsyncSession(async_engine)]
            assert all(_is_db_handle(handle) for handle in handles)
        statement = sa.select(sa.literal(1))
        assert not any(_is_db_handle(v) for v in (statement, sa.text("SELECT 1"), "db", 1, None))
    finally:
        raw.close()
        sync_engine.dispose()
        await async_engine.dispose()


async def test_async_stale_while_revalidate_and_no_negative_caching(redis_url: str) -> None:
    cache = QueryCache(
        redis_url,
        prefix=unique("aswr"),
        metrics=private_metrics(),
        ttl=0.2,
        stale_ttl=60,
        cache_empty=False,
    )
    version = {"n": 1}

    async def loader() -> list[int]:
        return [version["n"]] if version["n"] < 3 else []

    try:
        assert await cache.aget_or_load("SELECT v", None, loader) == [1]
        await asyncio.sleep(0.3)  # stale now
        version["n"] = 2
        assert await cache.aget_or_load("SELECT v", None, loader) == [2]  # this caller reloads
        assert cache.stats().refreshes == 1
        await asyncio.sleep(0.3)
        version["n"] = 3
        assert await cache.aget_or_load("SELECT v", None, loader) == []  # refreshed to empty
        version["n"] = 1
        assert await cache.aget_or_load("SELECT v", None, loader) == [1]  # empty was not kept
    finally:
        await cache.aclose()


def test_cached_query_uses_the_configured_default_cache(cache: QueryCache) -> None:
    from redis_checkpoint import set_query_cache
    from redis_checkpoint.cache.query import get_query_cache

    calls: list[int] = []

    @cached_query(ttl=30)
    def answer(x: int) -> int:
        calls.append(x)
        return x * 2

    set_query_cache(cache)
    try:
        assert get_query_cache() is cache
        assert answer(21) == answer(21) == 42
        assert calls == [21]
    finally:
        set_query_cache(None)


def test_empty_ttl_shortens_the_life_of_empty_results(
    redis_url: str, redis_client: redis.Redis
) -> None:
    cache = QueryCache(
        redis_url, prefix=unique("empty-ttl"), metrics=private_metrics(), ttl=600, empty_ttl=5
    )
    try:
        assert cache.get_or_load("SELECT none", None, lambda: []) == []
        assert cache.get_or_load("SELECT some", None, lambda: [1]) == [1]

        def pttl(sql: str) -> int:
            key = cache.engine.core.layout.entry(cache.namespace, cache.query_key(sql, None))
            return int(redis_client.pttl(key))

        assert 0 < pttl("SELECT none") <= 5000
        assert 590_000 < pttl("SELECT some") <= 600_000
    finally:
        cache.close()


def test_arguments_named_like_handles_stay_in_the_key(cache: QueryCache) -> None:
    class Repository:
        def __init__(self, connection: sqlite3.Connection) -> None:
            self.connection = connection

        @cache.cached(ignore=["self"])
        def count(self, db: str) -> str:
            return f"rows in {db}"

    repository = Repository(sqlite3.connect(":memory:"))
    try:
        assert repository.count("sales") == "rows in sales"
        assert repository.count("hr") == "rows in hr"  # `db` is data here, not a handle
    finally:
        repository.connection.close()
