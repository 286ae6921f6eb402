"""Helpers for the query cache tests that spawned worker processes import."""

from __future__ import annotations

import os

from cache_helpers import private_metrics

from redis_checkpoint.cache.query import QueryCache

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def invalidate_query_tag(url: str, prefix: str, tag: str) -> None:
    """A worker process invalidating one tag of the query cache."""
    cache = QueryCache(url, prefix=prefix, metrics=private_metrics())
    try:
        cache.invalidate(tag)
    finally:
        cache.close()
