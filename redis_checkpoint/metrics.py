"""Prometheus metrics shared by every component of redis_checkpoint."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["CIRCUIT_STATE_VALUES", "OPERATION_BUCKETS", "OUTCOMES", "Metrics", "get_metrics"]

#: Allowed values of the ``outcome`` label of checkpoint_operations_total.
OUTCOMES: tuple[str, ...] = ("ok", "error", "fallback")

#: Histogram buckets from 50 µs (a pipelined local round trip) to 5 s.
OPERATION_BUCKETS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

#: Value of redis_circuit_state for each breaker state.
CIRCUIT_STATE_VALUES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}


class _Collectors:
    """The metric objects registered once per (registry, prefix)."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.registry = registry

        def name(base: str) -> str:
            return f"{prefix}_{base}" if prefix else base

        self.checkpoint_operations_total = Counter(
            name("checkpoint_operations_total"),
            "Checkpoint operations by operation and outcome (ok, error, fallback).",
            ["operation", "outcome"],
            registry=registry,
        )
        self.checkpoint_operation_duration_seconds = Histogram(
            name("checkpoint_operation_duration_seconds"),
            "Duration of checkpoint operations in seconds.",
            ["operation"],
            buckets=OPERATION_BUCKETS,
            registry=registry,
        )
        self.redis_round_trips_total = Counter(
            name("redis_round_trips_total"),
            "Network round trips to Redis by component and operation.",
            ["component", "operation"],
            registry=registry,
        )
        self.redis_fallback_active = Gauge(
            name("redis_fallback_active"),
            "1 while the component serves from its in-memory fallback.",
            ["component"],
            registry=registry,
        )
        self.redis_fallback_pending_operations = Gauge(
            name("redis_fallback_pending_operations"),
            "Writes held in memory waiting to be replayed to Redis.",
            ["component"],
            registry=registry,
        )
        self.redis_fallback_replayed_total = Counter(
            name("redis_fallback_replayed_total"),
            "Writes replayed from the in-memory fallback to Redis.",
            ["component"],
            registry=registry,
        )
        self.redis_circuit_state = Gauge(
            name("redis_circuit_state"),
            "Circuit breaker state: 0 closed, 1 half_open, 2 open.",
            ["breaker"],
            registry=registry,
        )
        self.redis_circuit_transitions_total = Counter(
            name("redis_circuit_transitions_total"),
            "Circuit breaker transitions by the state entered.",
            ["breaker", "state"],
            registry=registry,
        )
        self.cache_errors_total = Counter(
            name("cache_errors_total"),
            "Cache errors by cache and kind.",
            ["cache", "kind"],
            registry=registry,
        )
        self.cache_requests_total = Counter(
            name("cache_requests_total"),
            "Cache lookups by cache namespace and result (hit, miss).",
            ["cache", "result"],
            registry=registry,
        )
        self.cache_writes_total = Counter(
            name("cache_writes_total"),
            "Cache writes by cache namespace and outcome (stored, oversize).",
            ["cache", "outcome"],
            registry=registry,
        )
        self.cache_deletes_total = Counter(
            name("cache_deletes_total"),
            "Cache invalidations by cache namespace and scope (key, tag, namespace).",
            ["cache", "scope"],
            registry=registry,
        )
        self.cache_operation_duration_seconds = Histogram(
            name("cache_operation_duration_seconds"),
            "Duration of cache operations in seconds.",
            ["cache", "operation"],
            buckets=OPERATION_BUCKETS,
            registry=registry,
        )


# Keyed by (id(registry), prefix); the value keeps the registry alive, so the
# id cannot be reused by another registry while the entry exists.
_COLLECTORS: dict[tuple[int, str], _Collectors] = {}
_COLLECTORS_LOCK = threading.Lock()


def _collectors_for(registry: CollectorRegistry, prefix: str) -> _Collectors:
    key = (id(registry), prefix)
    with _COLLECTORS_LOCK:
        found = _COLLECTORS.get(key)
        if found is None or found.registry is not registry:
            found = _Collectors(registry, prefix)
            _COLLECTORS[key] = found
        return found


class Metrics:
    """Facade over the metrics; instances on one (registry, prefix) share them.

    Every method is cheap and never raises for unseen label values.
    """

    def __init__(self, registry: CollectorRegistry | None = None, prefix: str = "") -> None:
        self.registry = REGISTRY if registry is None else registry
        self.prefix = prefix
        c = _collectors_for(self.registry, prefix)
        self.checkpoint_operations_total = c.checkpoint_operations_total
        self.checkpoint_operation_duration_seconds = c.checkpoint_operation_duration_seconds
        self.redis_round_trips_total = c.redis_round_trips_total
        self.redis_fallback_active = c.redis_fallback_active
        self.redis_fallback_pending_operations = c.redis_fallback_pending_operations
        self.redis_fallback_replayed_total = c.redis_fallback_replayed_total
        self.redis_circuit_state = c.redis_circuit_state
        self.redis_circuit_transitions_total = c.redis_circuit_transitions_total
        self.cache_errors_total = c.cache_errors_total
        self.cache_requests_total = c.cache_requests_total
        self.cache_writes_total = c.cache_writes_total
        self.cache_deletes_total = c.cache_deletes_total
        self.cache_operation_duration_seconds = c.cache_operation_duration_seconds
        # labels() costs a lock and a dict lookup per call; hot paths reuse the children.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_operation(self, operation: str, seconds: float, outcome: str) -> None:
        """Count one checkpoint operation and record its duration."""
        self._child(self.checkpoint_operations_total, operation, outcome).inc()
        self._child(self.checkpoint_operation_duration_seconds, operation).observe(seconds)

    def breaker_transition(self, name: str, old: str, new: str) -> None:
        """Usable directly as ``CircuitBreaker(on_transition=...)``."""
        self.redis_circuit_state.labels(name).set(CIRCUIT_STATE_VALUES.get(new, 0))
        self.redis_circuit_transitions_total.labels(name, new).inc()

    def round_trip(self, component: str, operation: str, n: int = 1) -> None:
        self._child(self.redis_round_trips_total, component, operation).inc(n)

    def set_fallback(self, component: str, active: bool, pending: int) -> None:
        self.redis_fallback_active.labels(component).set(1 if active else 0)
        self.redis_fallback_pending_operations.labels(component).set(pending)

    def replayed(self, component: str, n: int) -> None:
        child = self.redis_fallback_replayed_total.labels(component)
        if n:
            child.inc(n)

    def error(self, cache: str, kind: str) -> None:
        self.cache_errors_total.labels(cache, kind).inc()

    def cache_lookups(self, cache: str, hits: int, misses: int) -> None:
        if hits:
            self._child(self.cache_requests_total, cache, "hit").inc(hits)
        if misses:
            self._child(self.cache_requests_total, cache, "miss").inc(misses)

    def cache_write(self, cache: str, outcome: str, n: int = 1) -> None:
        self._child(self.cache_writes_total, cache, outcome).inc(n)

    def cache_delete(self, cache: str, scope: str, n: int = 1) -> None:
        self._child(self.cache_deletes_total, cache, scope).inc(n)

    def observe_cache(self, cache: str, operation: str, seconds: float) -> None:
        self._child(self.cache_operation_duration_seconds, cache, operation).observe(seconds)


_default: Metrics | None = None
_default_lock = threading.Lock()


def get_metrics() -> Metrics:
    """The process-wide Metrics on the default prometheus registry."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Metrics()
    return _default
