"""Redis going away under the cache: the memory tier answers, nothing raises, Redis comes back.

A real redis-server is killed (SIGKILL) mid-use and restarted. The breaker runs on a hand-driven
clock, so "no call waits on the dead server" is checked by counting round trips, not by timing.
"""

from __future__ import annotations

import asyncio

import redis
from cache_helpers import CountingEmbeddings, private_metrics, unique

from redis_checkpoint import CachedEmbeddings, CacheEngine, CircuitBreaker, LLMCache
from redis_checkpoint.cache import MISSING
from redis_checkpoint.cache.memory import MemoryTier
from redis_checkpoint.testing import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def start(server: RedisServer, clock: Clock, **options: object) -> CacheEngine:
    breaker = CircuitBreaker("cache", failure_threshold=3, recovery_timeout=1.0, clock=clock)
    return CacheEngine(
        server.url,
        prefix=unique("outage"),
        breaker=breaker,
        metrics=private_metrics(),
        memory=MemoryTier(max_entries=100, clock=clock),
        **options,  # type: ignore[arg-type]
    )


def test_a_killed_redis_is_served_from_memory_then_recovers(fresh_redis: RedisServer) -> None:
    clock = Clock()
    with start(fresh_redis, clock) as cache:
        cache.set("ns", "before", "from redis", tags=["t"])
        cache.set("ns", "kept", "from redis")
        fresh_redis.kill()

        for _ in range(3):  # the failures that open the breaker: misses, not errors
            assert cache.get("ns", "before", MISSING) is MISSING
        assert cache.core.breaker.state == "open"
        trips = cache.round_trips
        assert cache.set("ns", "during", {"n": 1})
        assert cache.get("ns", "during") == {"n": 1}
        assert cache.get_or_compute("ns", "computed", lambda: 41 + 1) == 42
        assert cache.get_or_compute("ns", "computed", lambda: -1) == 42
        assert cache.invalidate_tags("ns", "t") == 0  # queued for Redis
        cache.clear("other")
        assert cache.core.pending_invalidations == 2
        clock.now += 0.5  # memory entries follow the same clock
        cache.set("ns", "short", 1, ttl=0.1)
        clock.now += 0.2
        assert cache.get("ns", "short", MISSING) is MISSING
        assert cache.round_trips == trips  # while open, nothing waits on the dead server
        assert cache.serving_from_memory

        fresh_redis.restart()  # AOF: "before" and "kept" come back with the server
        clock.now += 1.5  # past the recovery timeout: the next call probes
        assert cache.get("ns", "before", MISSING) is MISSING  # the queued tag invalidation ran
        assert cache.get("ns", "kept") == "from redis"
        assert cache.core.breaker.state == "closed"
        assert cache.core.pending_invalidations == 0
        assert cache.get("ns", "during", MISSING) is MISSING  # memory tier left behind
        assert cache.set("ns", "after", 2) and cache.get("ns", "after") == 2
        stats = cache.stats()["ns"]
        assert stats.fallback > 0 and stats.errors == 0


def test_a_cache_started_without_redis_works_from_memory(dead_url: str) -> None:
    clock = Clock()
    breaker = CircuitBreaker("cache", failure_threshold=1, recovery_timeout=1.0, clock=clock)
    with CacheEngine(
        dead_url, prefix=unique("dead"), breaker=breaker, metrics=private_metrics()
    ) as cache:
        llm = LLMCache(engine=cache)
        assert llm.lookup("prompt", "model") is None
        assert cache.set("ns", "k", b"v") and cache.get("ns", "k") == b"v"
        assert cache.serving_from_memory
        model = CountingEmbeddings()
        embeddings = CachedEmbeddings(model, engine=cache)
        first = embeddings.embed_documents(["a", "b"])
        assert embeddings.embed_documents(["b", "a"]) == [first[1], first[0]]
        assert model.documents == [["a", "b"]]  # the second batch came from memory


async def test_async_calls_survive_a_kill_in_their_middle(fresh_redis: RedisServer) -> None:
    clock = Clock()
    with start(fresh_redis, clock) as cache:
        twin = cache.async_twin()
        try:

            async def work(i: int) -> int:
                total = 0
                for j in range(20):
                    await twin.set("ns", f"{i}-{j}", j)
                    value = await twin.get("ns", f"{i}-{j}", MISSING)
                    total += 0 if value is MISSING else 1
                    await asyncio.sleep(0)
                return total

            running = asyncio.gather(*(work(i) for i in range(8)))
            await asyncio.sleep(0.01)
            fresh_redis.kill()
            hits = await running  # nothing raised
            assert sum(hits) > 0
            assert twin.serving_from_memory
            fresh_redis.restart()
            clock.now += 1.5
            assert await twin.set("ns", "back", 1)
            assert await twin.get("ns", "back") == 1
            assert cache.core.breaker.state == "closed"
        finally:
            await twin.aclose()


def test_non_outage_errors_are_counted_not_raised(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with CacheEngine(redis_url, prefix=unique("wrongtype"), metrics=private_metrics()) as cache:
        # A foreign key of the wrong type where the generation counter lives.
        redis_client.hset(cache.core.layout.generation("ns"), "f", "v")
        assert cache.set("ns", "k", 1) is False
        assert cache.stats()["ns"].errors == 1
        assert cache.core.breaker.state == "closed"  # the server answered: not an outage
