"""The cache engine on a real redis-server: values, keys, TTLs, invalidation, bad input, stats."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
import redis.asyncio
from cache_helpers import engine, invalidate_in_process, private_metrics, unique

from redis_checkpoint import AsyncCacheEngine, CacheEngine, Settings
from redis_checkpoint.cache import DEFAULT_TTLS, MISSING, codec
from redis_checkpoint.cache.keys import MAX_PLAIN_KEY, KeyLayout, digest, escape

VALUES: list[Any] = [
    "text é",
    b"\x00\xffbytes",
    0,
    -(2**63),
    2**64 - 1,
    2**100,
    -(2**90),
    0.1,
    float("inf"),
    True,
    False,
    None,
    [1, "a", [b"x", None]],
    (1, (2, "three")),
    {"a": 1, 2: "int key", "nested": {"list": [1.5, None]}},
    dt.datetime(2026, 11, 26, 15, 0, 1, 123456),
    dt.datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo("Europe/Paris")),
    dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    dt.date(2026, 2, 28),
    Decimal("1.10"),
    Decimal("-0E-7"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_codec_round_trip_is_exact(value: Any) -> None:
    back = codec.loads(codec.dumps(value))
    assert back == value
    assert type(back) is type(value)
    if isinstance(value, dt.datetime):
        assert back.tzinfo == value.tzinfo and back.utcoffset() == value.utcoffset()
    if isinstance(value, Decimal):
        assert str(back) == str(value)  # exponent kept, not only the numeric value


def test_codec_keeps_nested_types() -> None:
    value = {"when": [dt.datetime(2020, 1, 1)], "ids": (uuid.uuid4(), Decimal("2.50"))}
    back = codec.loads(codec.dumps(value))
    assert back == value and isinstance(back["ids"], tuple)


@pytest.mark.parametrize("value", [object(), {1, 2}, {"k": lambda: 1}, [frozenset()]])
def test_unencodable_value_is_a_clear_type_error(value: Any, redis_url: str) -> None:
    with pytest.raises(TypeError, match="cannot cache a value of type"):
        codec.dumps(value)
    with engine(redis_url, unique("enc")) as cache:
        with pytest.raises(TypeError, match="cannot cache"):
            cache.set("ns", "k", value)
        assert cache.get("ns", "k", MISSING) is MISSING  # nothing half-written


def test_keys_escape_user_strings_and_hash_long_ones() -> None:
    layout = KeyLayout("p")
    assert layout.entry("llm", "short") == "p:{llm}:short"
    hostile = layout.entry("a}:{b", "x:{y}#gen")
    assert hostile.count("{") == 1 and hostile.count("}") == 1  # one hash tag, ours
    assert hostile == "p:{a%7D%3A%7Bb}:x%3A%7By%7D%23gen"
    long_key = layout.entry("llm", "p" * 500)
    assert len(long_key) < 60 and long_key.endswith(digest("p" * 500))
    assert layout.entry("llm", "#gen") != layout.generation("llm")
    # A face's own digest reads as designed; a plain string that looks like one is escaped.
    hashed = digest("a prompt")
    assert layout.entry("llm", hashed) == f"p:{{llm}}:{hashed}" and hashed.startswith("#")
    assert layout.entry("llm", str(hashed)) == f"p:{{llm}}:%23{hashed[1:]}"
    assert digest("ab", "c") != digest("a", "bc")
    assert escape("ok-._~") == "ok-._~"


def test_key_parts_are_stable_and_their_bounds_exact() -> None:
    """Entries already in Redis are found by these exact strings: a digest's algorithm, size
    and length prefixes, and where a readable key part ends, may not drift."""
    assert digest("a", "b") == "#4fc56058b4df0ca122be9a2e429541d6"
    assert digest(b"\x00") == "#17bf093fd8028115ec45b142b9853b29"
    assert escape("a/b c") == "a%2Fb%20c"  # "/" too: nothing of a user's string stays raw
    layout = KeyLayout("p")
    assert layout.entry("ns", "k" * MAX_PLAIN_KEY) == f"p:{{ns}}:{'k' * MAX_PLAIN_KEY}"
    longer = "k" * (MAX_PLAIN_KEY + 1)
    assert layout.entry("ns", longer) == f"p:{{ns}}:{digest(longer)}"
    assert KeyLayout("aXb:cache").prefix == "aXb:cache"
    for bad in ("", "a{b", "a}b", "a b"):
        with pytest.raises(ValueError, match="Redis Cluster hash tag"):
            KeyLayout(bad)
    with pytest.raises(ValueError, match="non-empty string"):
        layout.base("")


def test_set_get_many_and_ttls(redis_url: str, redis_client: redis.Redis) -> None:
    prefix = unique("basic")
    with engine(redis_url, prefix, namespace_ttls={"short": 30}) as cache:
        assert cache.get("ns", "a") is None
        assert cache.set("ns", "a", {"v": 1}) and cache.set("ns", "b", None)
        assert cache.get_many("ns", ["a", "b", "c"]) == [{"v": 1}, None, MISSING]
        cache.set("short", "k", 1)
        cache.set("ns", "forever", 1, ttl=None)
        layout = cache.core.layout
        assert 0 < redis_client.ttl(layout.entry("short", "k")) <= 30
        assert redis_client.ttl(layout.entry("ns", "a")) == Settings().default_ttl
        assert redis_client.ttl(layout.entry("ns", "forever")) == -1
        with pytest.raises(ValueError, match="ttl"):
            cache.set("ns", "a", 1, ttl=0)
    assert DEFAULT_TTLS["ai"] == 1800 and DEFAULT_TTLS["db"] == 300
    assert DEFAULT_TTLS["embeddings"] > DEFAULT_TTLS["ai"]


def test_one_round_trip_per_batch(redis_url: str) -> None:
    with engine(redis_url, unique("trips")) as cache:
        cache.set_many("ns", [(f"k{i}", i) for i in range(200)])  # loads the script first
        trips = cache.round_trips
        cache.set_many("ns", [(f"k{i}", i) for i in range(200)])
        assert cache.get_many("ns", [f"k{i}" for i in range(200)]) == list(range(200))
        assert cache.round_trips - trips == 2


def test_invalidation_from_another_client_and_process(redis_url: str) -> None:
    prefix = unique("inval")
    with engine(redis_url, prefix) as mine, engine(redis_url, prefix) as other:
        mine.set("tagged", "user-1-profile", 1, tags=["user:1"])
        mine.set("tagged", "user-1-orders", 2, tags=["user:1", "orders"])
        mine.set("tagged", "user-2-profile", 3, tags=["user:2"])
        assert other.invalidate_tags("tagged", "user:1") == 2  # a second client
        assert mine.get_many("tagged", ["user-1-profile", "user-1-orders", "user-2-profile"]) == [
            MISSING,
            MISSING,
            3,
        ]
        mine.set("tagged", "user-1-profile", 4, tags=["user:1"])
        mine.set("other", "x", 5)
        mine.set("kept", "y", 6)
        process = multiprocessing.get_context("spawn").Process(
            target=invalidate_in_process, args=(redis_url, prefix, "user:1", "other")
        )
        process.start()
        process.join(60)
        assert process.exitcode == 0
        assert mine.get("tagged", "user-1-profile", MISSING) is MISSING
        assert mine.get("other", "x", MISSING) is MISSING  # namespace cleared elsewhere
        assert mine.get("kept", "y") == 6 and mine.get("tagged", "user-2-profile") == 3
        mine.set("other", "x", 7)  # a cleared namespace takes new entries at once
        assert other.get("other", "x") == 7
        assert mine.delete("tagged", "user-2-profile", "absent") == 1
        assert other.get("tagged", "user-2-profile", MISSING) is MISSING


def test_clear_never_scans_or_flushes(redis_url: str, redis_client: redis.Redis) -> None:
    def calls(name: str) -> int:
        stats = redis_client.info("commandstats").get(f"cmdstat_{name}", {})
        return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0

    watched = ("keys", "scan", "flushdb", "flushall")
    before = {name: calls(name) for name in watched}
    with engine(redis_url, unique("noscan")) as cache:
        cache.set_many("ns", [(str(i), i) for i in range(100)], tags=["all"])
        cache.clear("ns")
        assert cache.get_many("ns", ["0", "99"]) == [MISSING, MISSING]
        cache.set_many("ns", [(str(i), i) for i in range(10)], tags=["all"])
        # Entries of the cleared generation are still in Redis until their TTL: deleted too.
        assert cache.invalidate_tags("ns", "all") == 100
        assert cache.get_many("ns", ["0", "9"]) == [MISSING, MISSING]
    assert {name: calls(name) for name in watched} == before


def test_corrupt_and_foreign_entries_are_misses_and_errors(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with engine(redis_url, unique("corrupt")) as cache:
        layout = cache.core.layout
        redis_client.set(layout.entry("ns", "garbage"), b"\x00not ours")
        redis_client.set(layout.entry("ns", "bad-payload"), b"RC1:0:\xc1\xc1")
        redis_client.hset(layout.entry("ns", "a-hash"), "f", "v")
        redis_client.set(layout.entry("ns", "no-gen"), b"RC1")
        assert cache.get_many("ns", ["garbage", "bad-payload", "a-hash", "no-gen"]) == [MISSING] * 4
        stats = cache.stats()["ns"]
        assert stats.errors == 3 and stats.misses == 4 and stats.hits == 0
        cache.set("ns", "garbage", "fixed")  # a corrupt entry is simply overwritten
        assert cache.get("ns", "garbage") == "fixed"


def test_oversize_values_are_not_cached_but_counted(redis_url: str) -> None:
    with engine(redis_url, unique("big"), max_value_bytes=1000) as cache:
        assert not cache.set("ns", "big", b"x" * 2000)
        assert cache.set("ns", "small", b"x" * 100)
        assert cache.set_many("ns", [("a", b"x" * 5000), ("b", 1)]) == 1
        assert cache.get_many("ns", ["big", "small", "a", "b"]) == [MISSING, b"x" * 100, MISSING, 1]
        assert cache.stats()["ns"].oversize == 2
        assert cache.get_or_compute("ns", "computed", lambda: "y" * 5000) == "y" * 5000
        assert cache.get("ns", "computed", MISSING) is MISSING


def test_stats_snapshot_and_prometheus(redis_url: str) -> None:
    metrics = private_metrics()
    with CacheEngine(redis_url, prefix=unique("stats"), metrics=metrics) as cache:
        cache.set("llm", "a", 1)
        cache.get("llm", "a")
        cache.get("llm", "a")
        cache.get("llm", "b")
        cache.delete("llm", "a")
        stats = cache.stats()["llm"]
        assert (stats.hits, stats.misses, stats.sets, stats.deletes) == (2, 1, 1, 1)
        assert stats.hit_ratio == pytest.approx(2 / 3)
        assert stats.operations == 5 and stats.mean_latency_ms > 0

    def sample(name: str, **labels: str) -> float:
        value = metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    assert sample("cache_requests_total", cache="llm", result="hit") == 2
    assert sample("cache_requests_total", cache="llm", result="miss") == 1
    assert sample("cache_writes_total", cache="llm", outcome="stored") == 1
    assert sample("cache_deletes_total", cache="llm", scope="key") == 1
    assert sample("cache_operation_duration_seconds_count", cache_type="llm", operation="get") == 3
    assert sample("cache_hits_total", cache_type="llm", operation="get") == 2
    assert sample("cache_misses_total", cache_type="llm", operation="get") == 1
    assert sample("cache_hit_ratio", cache_type="llm", operation="get") == pytest.approx(2 / 3)


def test_disabled_cache_never_stores(redis_url: str) -> None:
    settings = Settings(url=redis_url, cache_enabled=False)
    with CacheEngine(settings, prefix=unique("off"), metrics=private_metrics()) as cache:
        assert cache.set("ns", "k", 1) is False
        assert cache.get("ns", "k", MISSING) is MISSING
        runs = []
        for _ in range(2):
            cache.get_or_compute("ns", "k", lambda: runs.append(1))
        assert len(runs) == 2 and cache.round_trips == 0


async def test_async_engine_shares_the_core(redis_url: str) -> None:
    with engine(redis_url, unique("twin")) as cache:
        twin = cache.async_twin()
        try:
            assert await twin.set("ns", "k", [1, 2], tags=["t"])
            assert cache.get("ns", "k") == [1, 2]
            assert await twin.get_many("ns", ["k", "x"]) == [[1, 2], MISSING]
            assert await twin.invalidate_tags("ns", "t") == 1
            await twin.set("ns", "k2", 1)
            await twin.clear("ns")
            assert await twin.get("ns", "k2", MISSING) is MISSING
            assert cache.stats()["ns"].sets == 2  # one set of counters for both drivers
        finally:
            await twin.aclose()


def test_engine_from_a_client_needs_an_async_client_for_its_twin(
    redis_client: redis.Redis,
) -> None:
    cache = CacheEngine(redis_client, prefix=unique("client"), metrics=private_metrics())
    cache.set("ns", "k", 1)
    assert cache.get("ns", "k") == 1
    with pytest.raises(ValueError, match="async_twin"):
        cache.async_twin()


async def test_async_engine_on_an_async_client(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    cache = AsyncCacheEngine(client, prefix=unique("aclient"), metrics=private_metrics())
    assert await cache.set("ns", "k", {"a": 1})
    assert await cache.get("ns", "k") == {"a": 1}
    await cache.aclose()  # not ours to close
    assert await client.ping()
    await client.aclose()


def test_prefix_must_not_break_the_hash_tag(redis_url: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        CacheEngine(redis_url, prefix="a{b}", metrics=private_metrics())


def test_tag_sets_shed_the_keys_of_expired_entries(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with engine(redis_url, unique("prune")) as cache:
        cache.core.tag_prune_threshold = 50
        cache.set_many("ns", [(f"old{i}", i) for i in range(100)], tags=["hot"])
        layout = cache.core.layout
        redis_client.delete(*(layout.entry("ns", f"old{i}") for i in range(100)))  # "expired"
        tag_set = layout.tag("ns", "hot")
        assert redis_client.scard(tag_set) == 100
        for i in range(20):
            cache.set("ns", f"new{i}", i, tags=["hot"])
        assert redis_client.scard(tag_set) < 100  # live members always stay
        assert {f"new{i}" for i in range(20)} <= {
            m.decode().rsplit(":", 1)[1] for m in redis_client.smembers(tag_set)
        }
        assert cache.invalidate_tags("ns", "hot") == 20


def _live(client: redis.Redis, cache: CacheEngine, keys: list[str]) -> list[str]:
    return [key for key in keys if client.exists(cache.core.layout.entry("ns", key))]


def test_a_limited_tag_evicts_only_its_own_entries(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with engine(redis_url, unique("limit")) as cache:
        others = [f"other{i}" for i in range(10)]
        cache.set_many("ns", [(key, key) for key in others], tags=["page"])
        flood = [f"flood{i}" for i in range(200)]
        for key in flood:
            cache.set_many("ns", [(key, key)], tags=["page", "flood"], tag_limits={"flood": 25})
        # Overwriting a live member does not make room for it.
        cache.set_many("ns", [(flood[-1], "again")], tags=["flood"], tag_limits={"flood": 25})
        tag_set = cache.core.layout.tag("ns", "flood")
        assert redis_client.scard(tag_set) == 25
        assert len(_live(redis_client, cache, flood)) == 25
        assert flood[-1] in _live(redis_client, cache, flood)
        assert _live(redis_client, cache, others) == others  # untouched
        # A batch larger than the room left takes it all, and no more.
        batch = [(f"batch{i}", i) for i in range(5)]
        assert cache.set_many("ns", batch, tags=["flood"], tag_limits={"flood": 25}) == 5
        assert redis_client.scard(tag_set) == 25
        assert len(_live(redis_client, cache, [key for key, _ in batch])) == 5


async def test_tag_limits_on_the_async_engine(redis_url: str, redis_client: redis.Redis) -> None:
    cache = AsyncCacheEngine(redis_url, prefix=unique("alimit"), metrics=private_metrics())
    for i in range(30):
        await cache.set_many("ns", [(f"k{i}", i)], tags=["t"], tag_limits={"t": 7})
    assert redis_client.scard(cache.core.layout.tag("ns", "t")) == 7
    found = [await cache.get("ns", f"k{i}", MISSING) for i in range(30)]
    assert sum(value is not MISSING for value in found) == 7
    await cache.aclose()


@pytest.mark.parametrize(
    ("limits", "message"),
    [({"t": 0}, ">= 1"), ({"t": True}, ">= 1"), ({"u": 3}, "not one of the tags")],
)
def test_tag_limits_are_checked(redis_url: str, limits: dict[str, Any], message: str) -> None:
    with engine(redis_url, unique("badlimit")) as cache, pytest.raises(ValueError, match=message):
        cache.set_many("ns", [("k", 1)], tags=["t"], tag_limits=limits)


@pytest.mark.parametrize("damage", ["garbage", "a hash"])
def test_a_damaged_generation_counter_still_clears(
    redis_url: str, redis_client: redis.Redis, damage: str
) -> None:
    with engine(redis_url, unique("gen")) as cache:
        cache.set("ns", "old", 1)
        counter = cache.core.layout.generation("ns")
        redis_client.delete(counter)
        if damage == "a hash":
            redis_client.hset(counter, "x", "y")
        else:
            redis_client.set(counter, damage)
        cache.clear("ns")  # no ResponseError: the counter starts again
        assert cache.get("ns", "old", MISSING) is MISSING
        cache.set("ns", "new", 2)
        assert cache.get("ns", "new") == 2
        cache.clear("ns")
        assert cache.get("ns", "new", MISSING) is MISSING


def test_a_waiter_computes_itself_after_wait_timeout(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with engine(redis_url, unique("stale-lock")) as cache:
        # A leader that crashed holding the lock (it would expire after lock_timeout).
        redis_client.set(cache.core.layout.lock("ns", "k"), "someone", px=60_000)
        runs: list[int] = []
        value = cache.get_or_compute("ns", "k", lambda: runs.append(1) or "mine", wait_timeout=0.05)
        assert value == "mine" and runs == [1]
        assert cache.get("ns", "k") == "mine"
