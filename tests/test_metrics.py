from __future__ import annotations

import threading

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from redis_checkpoint.breaker import CircuitBreaker
from redis_checkpoint.metrics import Metrics, get_metrics


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def test_observe_operation(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.observe_operation("put", 0.0003, "ok")
    metrics.observe_operation("put", 0.002, "ok")
    metrics.observe_operation("put", 0.5, "fallback")
    metrics.observe_operation("get_tuple", 7.0, "error")
    value = registry.get_sample_value
    assert value("checkpoint_operations_total", {"operation": "put", "outcome": "ok"}) == 2
    assert value("checkpoint_operations_total", {"operation": "put", "outcome": "fallback"}) == 1
    assert value("checkpoint_operations_total", {"operation": "get_tuple", "outcome": "error"}) == 1
    assert value("checkpoint_operation_duration_seconds_count", {"operation": "put"}) == 3
    assert value(
        "checkpoint_operation_duration_seconds_sum", {"operation": "put"}
    ) == pytest.approx(0.5023)
    # Fine buckets at the fast end, 5 s at the slow end, 7 s only in +Inf.
    bucket = "checkpoint_operation_duration_seconds_bucket"
    assert value(bucket, {"operation": "put", "le": "5e-05"}) == 0
    assert value(bucket, {"operation": "put", "le": "0.0005"}) == 1
    assert value(bucket, {"operation": "put", "le": "0.0025"}) == 2
    assert value(bucket, {"operation": "get_tuple", "le": "5.0"}) == 0
    assert value(bucket, {"operation": "get_tuple", "le": "+Inf"}) == 1


def test_round_trips_and_errors(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.round_trip("saver", "put")
    metrics.round_trip("saver", "put", n=3)
    metrics.error("llm_cache", "decode")
    metrics.error("llm_cache", "decode")
    assert (
        registry.get_sample_value(
            "redis_round_trips_total", {"component": "saver", "operation": "put"}
        )
        == 4
    )
    assert (
        registry.get_sample_value(
            "cache_errors_total", {"cache_type": "llm_cache", "kind": "decode"}
        )
        == 2
    )


def test_fallback_gauges_and_replay(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.set_fallback("saver", True, 5)
    assert registry.get_sample_value("redis_fallback_active", {"component": "saver"}) == 1
    assert (
        registry.get_sample_value("redis_fallback_pending_operations", {"component": "saver"}) == 5
    )
    metrics.replayed("saver", 5)
    metrics.set_fallback("saver", False, 0)
    assert registry.get_sample_value("redis_fallback_active", {"component": "saver"}) == 0
    assert (
        registry.get_sample_value("redis_fallback_pending_operations", {"component": "saver"}) == 0
    )
    assert registry.get_sample_value("redis_fallback_replayed_total", {"component": "saver"}) == 5
    # Zero replays still export the series so dashboards see 0, not "no data".
    metrics.replayed("other", 0)
    assert registry.get_sample_value("redis_fallback_replayed_total", {"component": "other"}) == 0


def test_breaker_transitions_feed_metrics(metrics: Metrics, registry: CollectorRegistry) -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "redis-main",
        failure_threshold=1,
        recovery_timeout=1.0,
        clock=lambda: now[0],
        on_transition=metrics.breaker_transition,
    )

    def state() -> float | None:
        return registry.get_sample_value("redis_circuit_state", {"breaker": "redis-main"})

    def entered(s: str) -> float | None:
        return registry.get_sample_value(
            "redis_circuit_transitions_total", {"breaker": "redis-main", "state": s}
        )

    breaker.record_failure()
    assert state() == 2
    now[0] = 1.0
    assert breaker.allow_request()
    assert state() == 1
    breaker.record_success()
    assert state() == 0
    assert entered("open") == 1
    assert entered("half_open") == 1
    assert entered("closed") == 1


def test_prefix(registry: CollectorRegistry) -> None:
    m = Metrics(registry, prefix="myapp")
    m.round_trip("c", "op")
    assert (
        registry.get_sample_value(
            "myapp_redis_round_trips_total", {"component": "c", "operation": "op"}
        )
        == 1
    )
    assert (
        registry.get_sample_value("redis_round_trips_total", {"component": "c", "operation": "op"})
        is None
    )


def test_second_instance_on_same_registry_shares_metrics(registry: CollectorRegistry) -> None:
    first = Metrics(registry)
    second = Metrics(registry)  # must not raise "Duplicated timeseries"
    first.error("c", "k")
    second.error("c", "k")
    assert second.cache_errors_total is first.cache_errors_total
    assert registry.get_sample_value("cache_errors_total", {"cache_type": "c", "kind": "k"}) == 2
    # A different prefix on the same registry is a separate family.
    third = Metrics(registry, prefix="other")
    assert third.cache_errors_total is not first.cache_errors_total


def test_separate_registries_are_independent() -> None:
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    Metrics(r1).error("c", "k")
    assert r1.get_sample_value("cache_errors_total", {"cache_type": "c", "kind": "k"}) == 1
    assert r2.get_sample_value("cache_errors_total", {"cache_type": "c", "kind": "k"}) is None


def test_all_families_exported(metrics: Metrics, registry: CollectorRegistry) -> None:
    text = generate_latest(registry).decode()
    for name in (
        "checkpoint_operations_total",
        "checkpoint_operation_duration_seconds",
        "redis_round_trips_total",
        "redis_fallback_active",
        "redis_fallback_pending_operations",
        "redis_fallback_replayed_total",
        "redis_circuit_state",
        "redis_circuit_transitions_total",
        "cache_errors_total",
    ):
        assert f"# TYPE {name} " in text


def test_get_metrics_is_a_thread_safe_singleton_on_default_registry() -> None:
    results: list[Metrics] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(get_metrics())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in results}) == 1
    default = results[0]
    assert default.registry is prometheus_client.REGISTRY
    # Another Metrics() on the default registry reuses the same collectors.
    assert Metrics().checkpoint_operations_total is default.checkpoint_operations_total
