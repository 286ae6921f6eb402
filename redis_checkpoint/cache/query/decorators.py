"""``@cached_query``: the query cache's decorator on the process's default QueryCache
(:func:`set_query_cache`), or on the one it is given."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

from redis_checkpoint.cache.query.cache import QueryCache, cache_calls

__all__ = ["cached_query", "get_query_cache", "set_query_cache"]

P = ParamSpec("P")
R = TypeVar("R")

_default_cache: QueryCache | None = None
_default_lock = threading.Lock()


def set_query_cache(cache: QueryCache | None) -> None:
    """The QueryCache that ``@cached_query`` uses when none is passed (None: build one from
    REDIS_URL and the other environment settings on first use)."""
    global _default_cache
    with _default_lock:
        _default_cache = cache


def get_query_cache() -> QueryCache:
    global _default_cache
    with _default_lock:
        if _default_cache is None:
            _default_cache = QueryCache()
        return _default_cache


def cached_query(
    *,
    ttl: float | None = None,
    tags: Sequence[str] = (),
    key: Callable[..., str] | None = None,
    ignore: Sequence[str] = (),
    cache: QueryCache | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Cache what a sync or async query function returns.

    The key is the function's module and qualified name plus its bound arguments (defaults
    applied, so ``f(1)`` and ``f(x=1)`` share an entry), without DB handles: any SQLAlchemy
    session, connection or engine, any sqlite3, psycopg, asyncpg or aiosqlite connection, cursor
    or pool, any DB-API connection. Handles are recognised by their type, never by a parameter's
    name (a ``db: str`` holding a database name must stay in the key). Other arguments that are
    not data, such as ``self`` of a repository method, need ``ignore=["self"]`` or a ``key``
    function: a TypeError says so. ``key(*args, **kwargs)`` replaces the whole derivation.
    ``tags`` may hold ``{argument}`` fields. ``cache`` defaults to :func:`get_query_cache`,
    looked up at each call.
    """
    return cache_calls(
        lambda: cache if cache is not None else get_query_cache(),
        ttl=ttl,
        tags=tags,
        key=key,
        ignore=ignore,
    )
