"""Prometheus metrics shared by every component of redis_checkpoint.

Every cache type (``checkpoint``, ``llm``, ``embedding``, ``node``, ``query``, ``http``) reports
on the same families, labelled ``cache_type`` and ``operation``:

* ``cache_hits_total`` / ``cache_misses_total``: lookups that found / did not find an entry
  (for the saver: ``get_tuple`` returning a checkpoint or None);
* ``cache_hit_ratio``: hits / (hits + misses) since start, computed at scrape time;
* ``cache_operation_duration_seconds``: a histogram of every operation;
* ``cache_memory_usage_bytes{cache_type, tier}``: ``tier="redis"`` sampled by the health monitor
  or the management API, ``tier="memory"`` what the in-process fallback tier holds;
* ``cache_errors_total{cache_type, kind}``, ``cache_fallback_operations_total`` (served by the
  fallback tier), ``cache_singleflight_waits_total{cache_type, scope}``;
* ``cache_semantic_hits_total{cache_type}``: hits on a similar, not the same, input (counted in
  ``cache_hits_total`` too); ``cache_time_saved_seconds_total{cache_type}``: what the work a hit
  spared took when it was done (a model call, a tool run).

The saver keeps its own ``checkpoint_operations_total{operation, outcome}`` and
``checkpoint_operation_duration_seconds``; the breakers report ``redis_circuit_state`` and
``redis_circuit_transitions_total``; the health monitor the ``redis_*`` server gauges.

The store (cache type ``store``) keeps ``store_operations_total{op, outcome}`` (``get``: hit or
miss; ``put``, ``delete``, ``search``, ``list_namespaces``: ok; any: error),
``store_operation_seconds{op}`` (a batch's puts and deletes share one round trip: observed once
per batch), ``store_search_items`` (items a search looked at), ``store_snapshot_loads_total``
(namespace snapshots a search loaded from Redis, cold or changed) and
``store_vector_searches_total{ranked_by}`` (``module``: the server's search module found the
nearest vectors; ``exact``: the process ranked them all); it feeds the shared
``cache_*`` families too, so the stats show it beside the saver.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "CACHE_TYPES",
    "CIRCUIT_STATE_VALUES",
    "OPERATION_BUCKETS",
    "OUTCOMES",
    "SEARCH_ITEM_BUCKETS",
    "STORE_OPS",
    "STORE_OUTCOMES",
    "Metrics",
    "get_metrics",
]

#: The cache types of the package's faces (other values are accepted, e.g. a custom face's).
CACHE_TYPES: tuple[str, ...] = ("checkpoint", "llm", "embedding", "node", "query", "http")

#: Allowed values of the ``outcome`` label of checkpoint_operations_total.
OUTCOMES: tuple[str, ...] = ("ok", "error", "fallback")

#: Values of the ``op`` and ``outcome`` labels of store_operations_total.
STORE_OPS: tuple[str, ...] = ("get", "put", "delete", "search", "list_namespaces")
STORE_OUTCOMES: tuple[str, ...] = ("hit", "miss", "ok", "error")

#: Buckets of store_search_items: items a search looked at, 1 to a million.
SEARCH_ITEM_BUCKETS: tuple[float, ...] = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)

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
        self.store_operations_total = Counter(
            name("store_operations_total"),
            "Store operations by op and outcome (hit, miss, ok, error).",
            ["op", "outcome"],
            registry=registry,
        )
        self.store_operation_seconds = Histogram(
            name("store_operation_seconds"),
            "Duration of store operations in seconds (a batch's writes: one round trip).",
            ["op"],
            buckets=OPERATION_BUCKETS,
            registry=registry,
        )
        self.store_search_items = Histogram(
            name("store_search_items"),
            "Items a store search looked at: those of the namespaces under its prefix.",
            buckets=SEARCH_ITEM_BUCKETS,
            registry=registry,
        )
        self.store_snapshot_loads_total = Counter(
            name("store_snapshot_loads_total"),
            "Namespace snapshots a store search loaded from Redis (cold, or changed since).",
            registry=registry,
        )
        self.store_vector_searches_total = Counter(
            name("store_vector_searches_total"),
            "Store vector searches by what found the nearest vectors (module or exact).",
            ["ranked_by"],
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
        self.redis_fallback_refused_total = Counter(
            name("redis_fallback_refused_total"),
            "Writes the in-memory fallback refused: it held its budget of bytes owed to Redis.",
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
            "Errors by cache type and kind (corrupt, redis, unencodable, operation).",
            ["cache_type", "kind"],
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
            "Duration of cache operations in seconds, by cache type and operation.",
            ["cache_type", "operation"],
            buckets=OPERATION_BUCKETS,
            registry=registry,
        )
        self.cache_hits_total = Counter(
            name("cache_hits_total"),
            "Lookups that found an entry, by cache type and operation.",
            ["cache_type", "operation"],
            registry=registry,
        )
        self.cache_misses_total = Counter(
            name("cache_misses_total"),
            "Lookups that found no entry, by cache type and operation.",
            ["cache_type", "operation"],
            registry=registry,
        )
        self.cache_memory_usage_bytes = Gauge(
            name("cache_memory_usage_bytes"),
            "Bytes held per cache type: tier=redis (sampled), tier=memory (fallback tier).",
            ["cache_type", "tier"],
            registry=registry,
        )
        self.cache_keys = Gauge(
            name("cache_keys"),
            "Keys per cache type in Redis (sampled by the health monitor).",
            ["cache_type"],
            registry=registry,
        )
        self.cache_fallback_operations_total = Counter(
            name("cache_fallback_operations_total"),
            "Operations the in-memory fallback tier served, by cache type and operation.",
            ["cache_type", "operation"],
            registry=registry,
        )
        self.cache_semantic_hits_total = Counter(
            name("cache_semantic_hits_total"),
            "Hits on a similar (not the same) input, by cache type; also in cache_hits_total.",
            ["cache_type"],
            registry=registry,
        )
        self.cache_time_saved_seconds_total = Counter(
            name("cache_time_saved_seconds_total"),
            "Seconds of work (model calls, tool runs) that hits spared, as measured when done.",
            ["cache_type"],
            registry=registry,
        )
        self.cache_singleflight_waits_total = Counter(
            name("cache_singleflight_waits_total"),
            "Callers that waited for another's computation (scope: process, redis).",
            ["cache_type", "scope"],
            registry=registry,
        )
        self.redis_up = Gauge(
            name("redis_up"),
            "1 when the health monitor's last PING was answered.",
            registry=registry,
        )
        self.redis_health_checks_total = Counter(
            name("redis_health_checks_total"),
            "Health checks by result (up, down).",
            ["result"],
            registry=registry,
        )
        self.redis_ping_seconds = Histogram(
            name("redis_ping_seconds"),
            "Round-trip time of the health monitor's PING.",
            buckets=OPERATION_BUCKETS,
            registry=registry,
        )
        self.redis_used_memory_bytes = Gauge(
            name("redis_used_memory_bytes"),
            "used_memory of the Redis server (INFO memory).",
            registry=registry,
        )
        self.redis_maxmemory_bytes = Gauge(
            name("redis_maxmemory_bytes"),
            "maxmemory of the Redis server (0: no limit).",
            registry=registry,
        )
        self.redis_evicted_keys = Gauge(
            name("redis_evicted_keys"),
            "evicted_keys of the Redis server since it started (INFO stats).",
            registry=registry,
        )
        self.redis_maxmemory_policy = Gauge(
            name("redis_maxmemory_policy"),
            "1 for the server's current maxmemory-policy.",
            ["policy"],
            registry=registry,
        )
        self.cache_hit_ratio = _HitRatio(
            name("cache_hit_ratio"), self.cache_hits_total, self.cache_misses_total
        )
        registry.register(self.cache_hit_ratio)


class _HitRatio(Collector):
    """cache_hit_ratio computed at scrape time from the hit and miss counters: no cost per lookup,
    never out of step with them."""

    def __init__(self, name: str, hits: Counter, misses: Counter) -> None:
        self.name = name
        self._hits = hits
        self._misses = misses

    def ratios(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(cache_type, operation) -> (hits, misses)."""
        found: dict[tuple[str, str], list[float]] = {}
        for position, counter in enumerate((self._hits, self._misses)):
            for family in counter.collect():
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        labels = (sample.labels["cache_type"], sample.labels["operation"])
                        found.setdefault(labels, [0.0, 0.0])[position] += sample.value
        return {labels: (pair[0], pair[1]) for labels, pair in found.items()}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            self.name,
            "hits / (hits + misses) since the process started, by cache type and operation.",
            labels=["cache_type", "operation"],
        )
        for (cache_type, operation), (hits, misses) in sorted(self.ratios().items()):
            if hits + misses:
                family.add_metric([cache_type, operation], hits / (hits + misses))
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, "", labels=["cache_type", "operation"])]


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

    ``registry``: the application's own registry, a private ``CollectorRegistry()``, or the
    prometheus default (``None``). ``prefix`` is prepended to every name (``myapp_cache_...``).
    Every method is cheap and never raises for unseen label values.
    """

    def __init__(self, registry: CollectorRegistry | None = None, prefix: str = "") -> None:
        self.registry = REGISTRY if registry is None else registry
        self.prefix = prefix
        c = self._collectors = _collectors_for(self.registry, prefix)
        self.checkpoint_operations_total = c.checkpoint_operations_total
        self.checkpoint_operation_duration_seconds = c.checkpoint_operation_duration_seconds
        self.store_operations_total = c.store_operations_total
        self.store_operation_seconds = c.store_operation_seconds
        self.store_search_items = c.store_search_items
        self.store_snapshot_loads_total = c.store_snapshot_loads_total
        self.store_vector_searches_total = c.store_vector_searches_total
        self.redis_round_trips_total = c.redis_round_trips_total
        self.redis_fallback_active = c.redis_fallback_active
        self.redis_fallback_pending_operations = c.redis_fallback_pending_operations
        self.redis_fallback_replayed_total = c.redis_fallback_replayed_total
        self.redis_fallback_refused_total = c.redis_fallback_refused_total
        self.redis_circuit_state = c.redis_circuit_state
        self.redis_circuit_transitions_total = c.redis_circuit_transitions_total
        self.cache_errors_total = c.cache_errors_total
        self.cache_requests_total = c.cache_requests_total
        self.cache_writes_total = c.cache_writes_total
        self.cache_deletes_total = c.cache_deletes_total
        self.cache_operation_duration_seconds = c.cache_operation_duration_seconds
        self.cache_hits_total = c.cache_hits_total
        self.cache_misses_total = c.cache_misses_total
        self.cache_memory_usage_bytes = c.cache_memory_usage_bytes
        self.cache_keys = c.cache_keys
        self.cache_fallback_operations_total = c.cache_fallback_operations_total
        self.cache_semantic_hits_total = c.cache_semantic_hits_total
        self.cache_time_saved_seconds_total = c.cache_time_saved_seconds_total
        self.cache_singleflight_waits_total = c.cache_singleflight_waits_total
        self.redis_up = c.redis_up
        self.redis_health_checks_total = c.redis_health_checks_total
        self.redis_ping_seconds = c.redis_ping_seconds
        self.redis_used_memory_bytes = c.redis_used_memory_bytes
        self.redis_maxmemory_bytes = c.redis_maxmemory_bytes
        self.redis_evicted_keys = c.redis_evicted_keys
        self.redis_maxmemory_policy = c.redis_maxmemory_policy
        # labels() costs a lock and a dict lookup per call; hot paths reuse the children.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def name(self, base: str) -> str:
        """The exposed name of a metric (with the prefix)."""
        return f"{self.prefix}_{base}" if self.prefix else base

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- the checkpoint saver ------------------------------------------------------------------

    def observe_operation(self, operation: str, seconds: float, outcome: str) -> None:
        """Count one checkpoint operation and record its duration."""
        self._child(self.checkpoint_operations_total, operation, outcome).inc()
        self._child(self.checkpoint_operation_duration_seconds, operation).observe(seconds)
        self._child(self.cache_operation_duration_seconds, "checkpoint", operation).observe(seconds)
        if outcome == "fallback":
            self._child(self.cache_fallback_operations_total, "checkpoint", operation).inc()
        elif outcome == "error":
            self._child(self.cache_errors_total, "checkpoint", "operation").inc()

    # -- the store -----------------------------------------------------------------------------

    def store_operation(self, op: str, outcome: str, seconds: float, n: int = 1) -> None:
        """Count ``n`` store operations of one kind that took ``seconds`` together (one
        observation), in the store's families and the shared ones (cache type ``store``)."""
        self._child(self.store_operations_total, op, outcome).inc(n)
        self._child(self.store_operation_seconds, op).observe(seconds)
        self._child(self.cache_operation_duration_seconds, "store", op).observe(seconds)
        if outcome == "hit":
            self._child(self.cache_hits_total, "store", op).inc(n)
        elif outcome == "miss":
            self._child(self.cache_misses_total, "store", op).inc(n)
        elif outcome == "error":
            self._child(self.cache_errors_total, "store", "operation").inc(n)

    def store_search(self, items: int, ranked_by: str | None = None) -> None:
        """One search looked at ``items`` items (those of the namespaces under its prefix, or
        the candidates of the search module); a vector search names what ranked it."""
        self.store_search_items.observe(items)
        if ranked_by is not None:
            self.store_vector_searches_total.labels(ranked_by).inc()

    def store_snapshot_loads(self, n: int) -> None:
        """A search loaded ``n`` namespace snapshots from Redis."""
        if n:
            self.store_snapshot_loads_total.inc(n)

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

    def refused(self, component: str) -> None:
        """A write the in-memory fallback refused (its owed budget was reached)."""
        self._child(self.redis_fallback_refused_total, component).inc()

    # -- every cache type ----------------------------------------------------------------------

    def error(self, cache_type: str, kind: str) -> None:
        self._child(self.cache_errors_total, cache_type, kind).inc()

    def lookups(self, cache_type: str, operation: str, hits: int, misses: int) -> None:
        """Hits and misses of one lookup (or batch) of a cache type."""
        if hits:
            self._child(self.cache_hits_total, cache_type, operation).inc(hits)
        if misses:
            self._child(self.cache_misses_total, cache_type, operation).inc(misses)

    def semantic_hit(self, cache_type: str) -> None:
        """A hit on a similar input (count it in :meth:`lookups` as a hit too)."""
        self.cache_semantic_hits_total.labels(cache_type).inc()

    def time_saved(self, cache_type: str, seconds: float) -> None:
        """A hit spared work that took ``seconds`` when it was done."""
        if seconds > 0:
            self.cache_time_saved_seconds_total.labels(cache_type).inc(seconds)

    def fallback(self, cache_type: str, operation: str) -> None:
        """One operation served by the in-memory tier instead of Redis."""
        self._child(self.cache_fallback_operations_total, cache_type, operation).inc()

    def singleflight_wait(self, cache_type: str, scope: str) -> None:
        """A caller waited for another's computation (``process`` or across ``redis``)."""
        self._child(self.cache_singleflight_waits_total, cache_type, scope).inc()

    def observe(self, cache_type: str, operation: str, seconds: float) -> None:
        self._child(self.cache_operation_duration_seconds, cache_type, operation).observe(seconds)

    def memory_usage(self, cache_type: str, tier: str, size: float) -> None:
        self.cache_memory_usage_bytes.labels(cache_type, tier).set(size)

    # -- per-namespace detail of the cache engine ----------------------------------------------

    def cache_lookups(self, cache: str, hits: int, misses: int) -> None:
        if hits:
            self._child(self.cache_requests_total, cache, "hit").inc(hits)
        if misses:
            self._child(self.cache_requests_total, cache, "miss").inc(misses)

    def cache_write(self, cache: str, outcome: str, n: int = 1) -> None:
        self._child(self.cache_writes_total, cache, outcome).inc(n)

    def cache_delete(self, cache: str, scope: str, n: int = 1) -> None:
        self._child(self.cache_deletes_total, cache, scope).inc(n)

    # -- the Redis server, from the health monitor ---------------------------------------------

    def health_check(
        self,
        up: bool,
        ping_seconds: float | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.redis_up.set(1 if up else 0)
        self.redis_health_checks_total.labels("up" if up else "down").inc()
        if ping_seconds is not None:
            self.redis_ping_seconds.observe(ping_seconds)
        if not info:
            return
        for gauge, field in (
            (self.redis_used_memory_bytes, "used_memory"),
            (self.redis_maxmemory_bytes, "maxmemory"),
            (self.redis_evicted_keys, "evicted_keys"),
        ):
            if isinstance(info.get(field), (int, float)):
                gauge.set(info[field])
        policy = info.get("maxmemory_policy")
        if isinstance(policy, str):
            # One series per policy seen; only the current one is 1.
            for sample in list(self._policy_labels()):
                self.redis_maxmemory_policy.labels(sample).set(0)
            self.redis_maxmemory_policy.labels(policy).set(1)

    def _policy_labels(self) -> Iterator[str]:
        for family in self.redis_maxmemory_policy.collect():
            for sample in family.samples:
                yield sample.labels["policy"]

    # -- reading back --------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per cache type: hits, misses, hit ratio, operations, errors, fallback operations and
        latency percentiles (ms, interpolated in the histogram's buckets like PromQL's
        ``histogram_quantile``), from this process's metrics."""
        out: dict[str, dict[str, Any]] = {}

        def entry(cache_type: str) -> dict[str, Any]:
            return out.setdefault(
                cache_type,
                {"hits": 0, "misses": 0, "errors": 0, "fallback_operations": 0, "operations": 0},
            )

        for (cache_type, _), (hits, misses) in self._collectors.cache_hit_ratio.ratios().items():
            entry(cache_type)["hits"] += int(hits)
            entry(cache_type)["misses"] += int(misses)
        for counter, field in (
            (self.cache_errors_total, "errors"),
            (self.cache_fallback_operations_total, "fallback_operations"),
        ):
            for labels, value in _samples(counter, "_total"):
                entry(labels["cache_type"])[field] += int(value)
        buckets: dict[str, dict[float, float]] = {}
        for labels, value in _samples(self.cache_operation_duration_seconds, "_bucket"):
            le = float(labels["le"])
            per_type = buckets.setdefault(labels["cache_type"], {})
            per_type[le] = per_type.get(le, 0.0) + value
        for cache_type, cumulative in buckets.items():
            stats = entry(cache_type)
            ordered = sorted(cumulative.items())
            stats["operations"] = int(ordered[-1][1]) if ordered else 0
            for q in (0.5, 0.95, 0.99):
                stats[f"p{round(q * 100)}_ms"] = _quantile(q, ordered) * 1000
        for stats in out.values():
            looked_up = stats["hits"] + stats["misses"]
            stats["hit_ratio"] = stats["hits"] / looked_up if looked_up else None
        return dict(sorted(out.items()))


def _samples(metric: Any, suffix: str) -> Iterator[tuple[dict[str, str], float]]:
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith(suffix):
                yield sample.labels, sample.value


def _quantile(q: float, cumulative: list[tuple[float, float]]) -> float:
    """histogram_quantile over (upper bound, cumulative count) pairs, +Inf last."""
    if not cumulative or cumulative[-1][1] == 0:
        return 0.0
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


_process_metrics: Metrics | None = None
_process_metrics_lock = threading.Lock()


def get_metrics() -> Metrics:
    """The process-wide Metrics on the default prometheus registry."""
    global _process_metrics
    if _process_metrics is None:
        with _process_metrics_lock:
            if _process_metrics is None:
                _process_metrics = Metrics()
    return _process_metrics
