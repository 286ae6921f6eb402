"""Helpers shared by the cache tests; importable by spawned worker processes (no fixtures)."""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from typing import Any

from langchain_core.embeddings import Embeddings
from prometheus_client import CollectorRegistry

from redis_checkpoint.cache import CacheEngine
from redis_checkpoint.metrics import Metrics

_ids = itertools.count()


def unique(name: str) -> str:
    """A prefix no other test (or earlier run on the same server) uses."""
    return f"t{os.getpid()}-{next(_ids)}-{name}"


def private_metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def engine(url: str, prefix: str, **options: Any) -> CacheEngine:
    return CacheEngine(url, prefix=prefix, metrics=private_metrics(), **options)


def compute_once_in_process(url: str, prefix: str, start: Any, results: Any) -> None:
    """A worker process: wait for the start signal, then get_or_compute the same key.

    The computation INCRs a counter in Redis, so the parent can count how often it ran.
    """
    with engine(url, prefix) as cache:
        counter = f"{prefix}:runs"

        def slow_answer() -> dict[str, Any]:
            cache.client.incr(counter)
            time.sleep(0.3)  # long enough for every other process to arrive while it runs
            return {"answer": 42, "by": os.getpid()}

        start.wait(30)
        results.put(cache.get_or_compute("sf", "the-question", slow_answer))


def invalidate_in_process(url: str, prefix: str, tag: str, namespace_to_clear: str) -> None:
    """A worker process invalidating a tag and clearing a namespace."""
    with engine(url, prefix) as cache:
        cache.invalidate_tags("tagged", tag)
        cache.clear(namespace_to_clear)


class CountingEmbeddings(Embeddings):
    """Deterministic 8-dimensional vectors; records every text it is asked to embed."""

    def __init__(self, model: str = "counting-v1") -> None:
        self.model = model
        self.documents: list[list[str]] = []
        self.queries: list[str] = []

    def vector(self, text: str) -> list[float]:
        seed = hashlib.sha256(f"{self.model}/{text}".encode()).digest()
        return [b / 255 + 1e-12 for b in seed[:8]]  # the 1e-12 is lost in float32

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.documents.append(list(texts))
        return [self.vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.queries.append(text)
        return [-x for x in self.vector(text)]
