"""HealthMonitor on real redis-server processes: server facts, breakers, flush on recovery."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from prometheus_client import CollectorRegistry

from redis_checkpoint import (
    AsyncCacheEngine,
    AsyncRedisSaver,
    CacheEngine,
    ConfigurationError,
    HealthMonitor,
    LLMCache,
    RedisSaver,
    Settings,
)
from redis_checkpoint.metrics import Metrics
from redis_checkpoint.ops.health import Monitored
from redis_checkpoint.testing import RedisClusterServers, RedisServer
from tests.cache_helpers import unique


def cfg(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


def slow_recovery(url: str) -> Settings:
    """Breakers that would stay open for a minute unless something closes them."""
    return Settings(url=url, breaker_recovery_timeout=60.0, breaker_max_recovery_timeout=60.0)


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_check_records_the_server(redis_server: RedisServer) -> None:
    metrics = Metrics(CollectorRegistry())
    prefix = unique("hk")
    with CacheEngine(redis_server.url, prefix=f"{prefix}:cache", metrics=metrics) as engine:
        engine.set("llm", "a", "x" * 100)
        engine.set("query", "b", "y" * 100)
        monitor = HealthMonitor(
            redis_server.url, components=[engine], metrics=metrics, keyspace_sample=1000
        )
        report = monitor.check()
        monitor.stop()
    assert report.status == "ok" and report.up
    assert report.redis["used_memory"] > 0
    assert report.redis["maxmemory_policy"] == "noeviction"
    assert "evicted_keys" in report.redis and report.redis["ping_ms"] > 0
    assert report.components[0].breaker == "closed" and report.components[0].reachable
    assert report.keyspace is not None and report.keyspace["complete"]
    # One entry each plus the generation counters are not written by set: 1 key per type.
    assert report.keyspace["by_type"]["llm"]["keys"] == 1
    assert report.keyspace["by_type"]["query"]["keys"] == 1
    assert value(metrics, "redis_up") == 1
    assert value(metrics, "redis_maxmemory_policy", policy="noeviction") == 1
    assert value(metrics, "redis_used_memory_bytes") == report.redis["used_memory"]
    memory = value(metrics, "cache_memory_usage_bytes", cache_type="llm", tier="redis")
    assert memory is not None and memory > 100
    assert value(metrics, "cache_keys", cache_type="query") == 1


def test_the_monitor_opens_and_closes_the_breakers(fresh_redis: RedisServer) -> None:
    metrics = Metrics(CollectorRegistry())
    settings = slow_recovery(fresh_redis.url)
    with (
        RedisSaver.from_conn_string(settings=settings, key_prefix="hm", metrics=metrics) as saver,
        CacheEngine(settings, prefix="hm:cache", metrics=metrics) as engine,
    ):
        llm = LLMCache(engine=engine)
        monitor = HealthMonitor(settings, components=[saver, engine, llm], metrics=metrics)
        assert monitor.check().status == "ok"
        fresh_redis.kill()
        # An idle application: only the monitor's probes see the outage.
        for _ in range(3):
            report = monitor.check()
        assert report.status == "down" and report.error
        assert saver.breaker.state == "open" and engine.core.breaker.state == "open"
        assert len(report.components) == 3  # the face shares the engine's breaker: probed once

        # Meanwhile the app writes to the fallback tiers.
        config = saver.put(cfg("during"), empty_checkpoint(), {}, {})
        engine.set("query", "k", 1)
        engine.invalidate_tags("query", "users")
        assert saver.memory is not None and saver.memory.pending == 1
        assert engine.core.pending_invalidations == 1

        fresh_redis.restart()
        report = monitor.check()  # long before the 60 s recovery timeout
        monitor.stop()
        assert report.status == "ok", report.as_dict()
        assert saver.breaker.state == "closed" and engine.core.breaker.state == "closed"
        assert saver.memory.pending == 0 and engine.core.pending_invalidations == 0
        assert engine.core.memory is not None and len(engine.core.memory) == 0
    with RedisSaver.from_conn_string(fresh_redis.url, key_prefix="hm", fallback=False) as fresh:
        stored = fresh.get_tuple(config)
        assert stored is not None
    assert value(metrics, "redis_health_checks_total", result="down") == 3
    assert value(metrics, "redis_circuit_transitions_total", breaker="checkpoint", state="open")


async def test_the_asyncio_monitor_probes_asyncio_components(fresh_redis: RedisServer) -> None:
    metrics = Metrics(CollectorRegistry())
    settings = slow_recovery(fresh_redis.url)
    async with AsyncRedisSaver.from_conn_string(
        settings=settings, key_prefix="ham", metrics=metrics
    ) as saver:
        engine = AsyncCacheEngine(settings, prefix="ham:cache", metrics=metrics)
        monitor = HealthMonitor(
            settings, components=[saver, engine], metrics=metrics, interval=0.05
        )
        with pytest.raises(ConfigurationError, match="astart"):
            monitor.start()
        fresh_redis.kill()
        async with monitor:
            for _ in range(100):
                if saver.breaker.state == "open" and engine.core.breaker.state == "open":
                    break
                await asyncio.sleep(0.05)
            assert saver.breaker.state == "open" and engine.core.breaker.state == "open"
            await saver.aput(cfg("a"), empty_checkpoint(), {}, {})
            fresh_redis.restart()
            for _ in range(100):
                if saver.breaker.state == "closed" and engine.core.breaker.state == "closed":
                    break
                await asyncio.sleep(0.05)
        assert saver.breaker.state == "closed" and engine.core.breaker.state == "closed"
        assert saver.memory is not None and saver.memory.pending == 0
        assert monitor.last_report is not None and monitor.last_report.status == "ok"
        assert await saver.alist_threads() == ["a"]
        await engine.aclose()


def test_bad_options_are_refused(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="interval"):
        HealthMonitor(redis_url, interval=0)
    with pytest.raises(ConfigurationError, match="cannot monitor"):
        HealthMonitor(redis_url, components=[object()])


@pytest.mark.cluster
async def test_keyspace_sample_covers_every_cluster_primary(
    redis_cluster: RedisClusterServers,
) -> None:
    metrics = Metrics(CollectorRegistry())
    prefix = unique("hcl")
    namespaces = ["llm", "query", "http", "node"]  # hash tags that land on different nodes
    with CacheEngine(redis_cluster.url, prefix=f"{prefix}:cache", metrics=metrics) as engine:
        for namespace in namespaces:
            engine.set(namespace, "k", "v")
        sync_report = HealthMonitor(
            redis_cluster.url, components=[engine], metrics=metrics, keyspace_sample=10_000
        ).check()
    monitor = HealthMonitor(redis_cluster.url, metrics=metrics, keyspace_sample=10_000)
    monitor.add(AsyncCacheEngine(redis_cluster.url, prefix=f"{prefix}:cache", metrics=metrics))
    async_report = await monitor.acheck()
    await monitor.astop()
    await monitor.components[0].target.aclose()
    for report in (sync_report, async_report):
        assert report.status == "ok" and report.keyspace is not None
        by_type = report.keyspace["by_type"]
        assert {t: by_type[t]["keys"] for t in namespaces} == dict.fromkeys(namespaces, 1)


@pytest.mark.cluster
def test_a_cluster_saver_reports_its_worst_primary(redis_cluster: RedisClusterServers) -> None:
    """Each cluster primary has its own breaker; ``saver.breaker`` is only their template."""
    with RedisSaver.from_conn_string(redis_cluster.url, key_prefix=unique("hsh")) as saver:
        for i in range(12):  # threads on every primary
            saver.put(cfg(f"t{i}"), empty_checkpoint(), {}, {})
        shards = saver._router.all_shards()
        assert len(shards) == 3
        monitored = Monitored(saver)
        assert monitored.health(False, None).breaker == "closed"
        breaker = shards[1].breaker
        while breaker.state != "open":
            breaker.record_failure()
        health = monitored.health(False, None)
        assert saver.breaker.state == "closed"
        assert health.breaker == "open" and health.serving_from_memory
