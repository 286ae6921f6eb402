"""The metrics every cache type shares: hits, misses, ratio, latency, fallback, single flight."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from prometheus_client import CollectorRegistry, generate_latest

from redis_checkpoint import AsyncRedisSaver, CacheEngine, LLMCache, NodeCache, RedisSaver
from redis_checkpoint.cache.stats import default_cache_type
from redis_checkpoint.metrics import Metrics
from tests.cache_helpers import unique


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(metrics.name(name), labels)
    return 0.0 if value is None else value


def test_hit_ratio_is_computed_from_the_counters_at_scrape_time() -> None:
    metrics = Metrics(CollectorRegistry(), prefix="app")
    metrics.lookups("query", "get", hits=3, misses=1)
    metrics.lookups("http", "get", hits=0, misses=2)
    assert sample(metrics, "cache_hits_total", cache_type="query", operation="get") == 3
    assert sample(metrics, "cache_hit_ratio", cache_type="query", operation="get") == 0.75
    assert sample(metrics, "cache_hit_ratio", cache_type="http", operation="get") == 0.0
    metrics.lookups("query", "get", hits=4, misses=0)
    assert sample(metrics, "cache_hit_ratio", cache_type="query", operation="get") == 7 / 8
    text = generate_latest(metrics.registry).decode()
    assert "# TYPE app_cache_hit_ratio gauge" in text
    assert "cache_hit_ratio{" not in text.replace("app_cache_hit_ratio{", "")


def test_summary_percentiles_follow_the_histogram_buckets() -> None:
    metrics = Metrics(CollectorRegistry())
    for _ in range(98):
        metrics.observe("llm", "get", 0.0002)  # in the (0.1 ms, 0.25 ms] bucket
    for _ in range(2):
        metrics.observe("llm", "get", 0.02)  # in the (10 ms, 25 ms] bucket
    metrics.lookups("llm", "get", 60, 40)
    metrics.fallback("llm", "set")
    metrics.error("llm", "corrupt")
    llm = metrics.summary()["llm"]
    assert (llm["hits"], llm["misses"], llm["operations"]) == (60, 40, 100)
    assert llm["hit_ratio"] == pytest.approx(0.6)
    assert (llm["fallback_operations"], llm["errors"]) == (1, 1)
    assert 0.1 < llm["p50_ms"] <= 0.25
    assert 0.1 < llm["p95_ms"] <= 0.25
    assert 10 < llm["p99_ms"] <= 25


def test_health_check_gauges_keep_one_current_policy() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.health_check(True, 0.0004, {"used_memory": 1000, "maxmemory_policy": "allkeys-lru"})
    metrics.health_check(True, 0.0004, {"used_memory": 2000, "maxmemory_policy": "noeviction"})
    assert sample(metrics, "redis_used_memory_bytes") == 2000
    assert sample(metrics, "redis_maxmemory_policy", policy="noeviction") == 1
    assert sample(metrics, "redis_maxmemory_policy", policy="allkeys-lru") == 0
    metrics.health_check(False)
    assert sample(metrics, "redis_up") == 0
    assert sample(metrics, "redis_health_checks_total", result="up") == 2
    assert sample(metrics, "redis_ping_seconds_count") == 2


def test_namespaces_get_a_cache_type() -> None:
    assert default_cache_type("llm") == "llm"
    assert default_cache_type("emb:doc:float32:m") == "embedding"
    assert default_cache_type("query") == "query"
    assert default_cache_type("db:users") == "query"
    assert default_cache_type("http") == "http"
    assert default_cache_type("reports") == "reports"


def test_faces_label_their_own_namespaces(redis_url: str) -> None:
    metrics = Metrics(CollectorRegistry())
    with CacheEngine(redis_url, prefix=unique("types"), metrics=metrics) as engine:
        llm = LLMCache(engine=engine, namespace="answers")
        NodeCache(engine=engine, namespace="steps")
        assert llm.lookup("p", "m") is None
        engine.get("query", "k")
        engine.get("steps", "k")
    assert sample(metrics, "cache_misses_total", cache_type="llm", operation="get") == 1
    assert sample(metrics, "cache_misses_total", cache_type="query", operation="get") == 1
    assert sample(metrics, "cache_misses_total", cache_type="node", operation="get") == 1


def test_single_flight_waits_are_counted(redis_url: str) -> None:
    metrics = Metrics(CollectorRegistry())
    with CacheEngine(redis_url, prefix=unique("sfw"), metrics=metrics) as engine:
        started = threading.Event()

        def slow() -> int:
            started.set()
            time.sleep(0.2)
            return 1

        waiter = threading.Thread(
            target=lambda: (started.wait(5), engine.get_or_compute("query", "k", slow))
        )
        waiter.start()
        assert engine.get_or_compute("query", "k", slow) == 1
        waiter.join(5)
    assert sample(metrics, "cache_singleflight_waits_total", cache_type="query", scope="process")


def test_saver_operations_feed_the_shared_families(redis_url: str) -> None:
    metrics = Metrics(CollectorRegistry())
    config = {"configurable": {"thread_id": unique("t"), "checkpoint_ns": ""}}
    with RedisSaver.from_conn_string(redis_url, key_prefix=unique("m"), metrics=metrics) as saver:
        assert saver.get_tuple(config) is None
        saver.put(config, empty_checkpoint(), {}, {})
        assert saver.get_tuple(config) is not None
    assert sample(metrics, "cache_hits_total", cache_type="checkpoint", operation="get_tuple") == 1
    miss = sample(metrics, "cache_misses_total", cache_type="checkpoint", operation="get_tuple")
    assert miss == 1
    count = "cache_operation_duration_seconds_count"
    assert sample(metrics, count, cache_type="checkpoint", operation="put") == 1
    # The saver's own family keeps working.
    assert sample(metrics, "checkpoint_operations_total", operation="put", outcome="ok") == 1


async def test_async_saver_reports_a_missing_thread_as_a_miss(redis_url: str) -> None:
    metrics = Metrics(CollectorRegistry())
    config = {"configurable": {"thread_id": unique("t"), "checkpoint_ns": ""}}
    async with AsyncRedisSaver.from_conn_string(redis_url, metrics=metrics) as saver:
        results = await asyncio.gather(*(saver.aget_tuple(config) for _ in range(3)))
    assert results == [None, None, None]
    miss = sample(metrics, "cache_misses_total", cache_type="checkpoint", operation="get_tuple")
    assert miss == 3
