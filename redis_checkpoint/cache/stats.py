"""Per-namespace cache statistics: readable in code as a snapshot, and fed to prometheus."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields

from redis_checkpoint.metrics import Metrics

__all__ = ["CacheStats", "NamespaceStats"]


@dataclass
class NamespaceStats:
    """Counters of one namespace. ``errors`` counts corrupt entries and Redis command errors;
    ``oversize`` writes refused for size; ``fallback`` operations the memory tier answered."""

    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0
    oversize: int = 0
    fallback: int = 0
    operations: int = 0
    seconds: float = 0.0

    @property
    def hit_ratio(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0

    @property
    def mean_latency_ms(self) -> float:
        return 1000 * self.seconds / self.operations if self.operations else 0.0

    def as_dict(self) -> dict[str, float]:
        data: dict[str, float] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["hit_ratio"] = self.hit_ratio
        data["mean_latency_ms"] = self.mean_latency_ms
        return data


class CacheStats:
    """Thread-safe counters per namespace, mirrored into :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._lock = threading.Lock()
        self._by_namespace: dict[str, NamespaceStats] = {}

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
        self.metrics.error(namespace, kind)

    def fallback(self, namespace: str) -> None:
        with self._lock:
            self._get(namespace).fallback += 1

    def timed(self, namespace: str, operation: str, seconds: float) -> None:
        with self._lock:
            stats = self._get(namespace)
            stats.operations += 1
            stats.seconds += seconds
        self.metrics.observe_cache(namespace, operation, seconds)

    def snapshot(self) -> dict[str, NamespaceStats]:
        """A copy of every namespace's counters."""
        with self._lock:
            return {ns: NamespaceStats(**vars(s)) for ns, s in self._by_namespace.items()}
