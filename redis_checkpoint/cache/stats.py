"""Per-namespace cache statistics: readable in code as a snapshot, and fed to prometheus."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields

from redis_checkpoint.metrics import Metrics

__all__ = ["NAMESPACE_CACHE_TYPES", "CacheStats", "NamespaceStats", "default_cache_type"]

#: The ``cache_type`` label of a namespace no face declared, by the namespace's first
#: ``:``-separated part (the faces' default namespaces, and the usual names of the query and HTTP
#: caches); a namespace not listed here is labelled with that first part itself.
NAMESPACE_CACHE_TYPES: dict[str, str] = {
    "llm": "llm",
    "llm-calls": "llm",
    "emb": "embedding",
    "embedding": "embedding",
    "embeddings": "embedding",
    "node": "node",
    "query": "query",
    "queries": "query",
    "db": "query",
    "sql": "query",
    "http": "http",
    "api": "http",
    "asgi": "http",
}


def default_cache_type(namespace: str) -> str:
    head = namespace.split(":", 1)[0]
    return NAMESPACE_CACHE_TYPES.get(head, head)


@dataclass
class HitCounts:
    """Lookups answered and not, for any cache that counts them (a namespace, a middleware)."""

    hits: int = 0
    misses: int = 0
    semantic_hits: int = 0  # of the hits: on a similar, not the same, input

    @property
    def hit_ratio(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


@dataclass
class NamespaceStats(HitCounts):
    """Counters of one namespace. ``errors`` counts corrupt entries and Redis command errors;
    ``oversize`` writes refused for size; ``fallback`` operations the memory tier answered."""

    sets: int = 0
    deletes: int = 0
    errors: int = 0
    oversize: int = 0
    fallback: int = 0
    operations: int = 0
    seconds: float = 0.0

    @property
    def mean_latency_ms(self) -> float:
        return 1000 * self.seconds / self.operations if self.operations else 0.0

    def as_dict(self) -> dict[str, float]:
        data: dict[str, float] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["hit_ratio"] = self.hit_ratio
        data["mean_latency_ms"] = self.mean_latency_ms
        return data


class CacheStats:
    """Thread-safe counters per namespace, mirrored into :class:`Metrics` (per namespace, and
    per cache type: see :meth:`set_cache_type`)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._lock = threading.Lock()
        self._by_namespace: dict[str, NamespaceStats] = {}
        self._types: dict[str, str] = {}

    def set_cache_type(self, namespace: str, cache_type: str) -> None:
        """Label ``namespace``'s metrics with ``cache_type`` (faces call this for their own
        namespaces; others get :func:`default_cache_type`)."""
        if not cache_type:
            raise ValueError("a cache type must be a non-empty string")
        self._types[namespace] = cache_type

    def cache_type(self, namespace: str) -> str:
        found = self._types.get(namespace)
        if found is None:
            found = self._types.setdefault(namespace, default_cache_type(namespace))
        return found

    def namespaces(self) -> dict[str, str]:
        """Every namespace seen so far, with its cache type."""
        return dict(self._types)

    def _get(self, namespace: str) -> NamespaceStats:
        found = self._by_namespace.get(namespace)
        if found is None:
            found = self._by_namespace.setdefault(namespace, NamespaceStats())
        return found

    def lookups(self, namespace: str, hits: int, misses: int) -> None:
        with self._lock:
            stats = self._get(namespace)
            stats.hits += hits
            stats.misses += misses
        self.metrics.cache_lookups(namespace, hits, misses)
        self.metrics.lookups(self.cache_type(namespace), "get", hits, misses)

    def semantic_hit(self, namespace: str) -> None:
        """One lookup answered by a similar input's entry: a hit, and a semantic one."""
        with self._lock:
            self._get(namespace).semantic_hits += 1
        self.lookups(namespace, 1, 0)
        self.metrics.semantic_hit(self.cache_type(namespace))

    def stored(self, namespace: str, n: int) -> None:
        with self._lock:
            self._get(namespace).sets += n
        self.metrics.cache_write(namespace, "stored", n)

    def oversize(self, namespace: str) -> None:
        with self._lock:
            self._get(namespace).oversize += 1
        self.metrics.cache_write(namespace, "oversize")

    def deleted(self, namespace: str, scope: str, n: int = 1) -> None:
        with self._lock:
            self._get(namespace).deletes += n
        self.metrics.cache_delete(namespace, scope, n)

    def error(self, namespace: str, kind: str) -> None:
        with self._lock:
            self._get(namespace).errors += 1
        self.metrics.error(self.cache_type(namespace), kind)

    def fallback(self, namespace: str, operation: str) -> None:
        with self._lock:
            self._get(namespace).fallback += 1
        self.metrics.fallback(self.cache_type(namespace), operation)

    def singleflight_wait(self, namespace: str, scope: str) -> None:
        self.metrics.singleflight_wait(self.cache_type(namespace), scope)

    def timed(self, namespace: str, operation: str, seconds: float) -> None:
        with self._lock:
            stats = self._get(namespace)
            stats.operations += 1
            stats.seconds += seconds
        self.metrics.observe(self.cache_type(namespace), operation, seconds)

    def snapshot(self) -> dict[str, NamespaceStats]:
        """A copy of every namespace's counters."""
        with self._lock:
            return {ns: NamespaceStats(**vars(s)) for ns, s in self._by_namespace.items()}
