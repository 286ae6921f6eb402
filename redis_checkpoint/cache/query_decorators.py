"""``@cached_query`` and ``Invalidates``: the decorators and the write-path helper of the query
cache (:mod:`redis_checkpoint.cache.query`).

A decorated function's key is its module and qualified name plus its bound arguments in the
codec's stable encoding, without the database handle it runs on; its tags may hold
``{argument}`` fields filled from the same arguments.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.keys import digest
from redis_checkpoint.cache.query import QueryCache, plain_rows

__all__ = [
    "Invalidates",
    "cached_query",
    "expand_tags",
    "get_query_cache",
    "set_query_cache",
]

P = ParamSpec("P")
R = TypeVar("R")

_DRIVER_MODULES = ("sqlalchemy.", "sqlite3", "psycopg", "asyncpg", "aiosqlite")
_HANDLE_CLASSES = frozenset(
    {
        "Session",
        "AsyncSession",
        "scoped_session",
        "async_scoped_session",
        "Connection",
        "AsyncConnection",
        "Engine",
        "AsyncEngine",
        "Cursor",
        "AsyncCursor",
        "ServerCursor",
        "AsyncServerCursor",
        "Pool",
    }
)


def _is_db_handle(value: Any) -> bool:
    """A connection, session, cursor, engine or pool of SQLAlchemy, a known driver, or any
    DB-API connection (it has ``cursor()`` and ``commit()``). Statements and other values of
    those libraries are not handles: they stay in the key."""
    for cls in type(value).__mro__:
        if cls.__name__ in _HANDLE_CLASSES and cls.__module__.startswith(_DRIVER_MODULES):
            return True
    return callable(getattr(value, "cursor", None)) and callable(getattr(value, "commit", None))


class _CallKey:
    """Builds keys and tags from a function's bound arguments."""

    def __init__(
        self,
        function: Callable[..., Any],
        key: Callable[..., str] | None,
        tags: Sequence[str],
        ignore: Sequence[str],
    ) -> None:
        if isinstance(tags, str):
            raise TypeError("tags must be a sequence of strings, e.g. tags=['orders']")
        self.function = function
        self.name = f"{function.__module__}.{function.__qualname__}"
        self.signature = inspect.signature(function)
        self.custom = key
        self.tags = tuple(tags)
        self.ignore = frozenset(ignore)

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> inspect.BoundArguments:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound

    def key(self, bound: inspect.BoundArguments) -> str:
        if self.custom is not None:
            return digest(self.name, self.custom(*bound.args, **bound.kwargs))
        kept: list[Any] = []
        for name, value in bound.arguments.items():
            kind = self.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                kept.extend([k, v] for k, v in sorted(value.items()) if not _is_db_handle(v))
            elif name not in self.ignore and not _is_db_handle(value):
                kept.append([name, value])
        try:
            material = codec.dumps(plain_rows(kept))
        except TypeError as exc:
            raise TypeError(
                f"cannot build a cache key for {self.function.__qualname__}: {exc}; "
                "pass key=... or ignore=[...]"
            ) from None
        return digest(self.name, material)

    def expand(self, bound: inspect.BoundArguments) -> list[str]:
        return expand_tags(self.tags, bound.arguments)


def expand_tags(tags: Sequence[str], arguments: Mapping[str, Any]) -> list[str]:
    """Fill ``{name}`` fields of the tags from the arguments (KeyError names a missing one)."""
    try:
        return [tag.format_map(arguments) if "{" in tag else tag for tag in tags]
    except (KeyError, IndexError) as exc:
        raise ValueError(f"a tag in {list(tags)} names an unknown argument: {exc}") from None


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
    ``tags`` may hold ``{argument}`` fields. ``cache`` defaults to :func:`get_query_cache`.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        call_key = _CallKey(function, key, tags, ignore)

        def chosen() -> QueryCache:
            return cache if cache is not None else get_query_cache()

        if inspect.iscoroutinefunction(function):
            async_function = cast(Callable[..., Awaitable[Any]], function)

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                bound = call_key.bind(args, kwargs)
                return await chosen().acached_call(
                    call_key.key(bound),
                    lambda: async_function(*args, **kwargs),
                    ttl=ttl,
                    tags=call_key.expand(bound),
                )

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = call_key.bind(args, kwargs)
            result: R = chosen().cached_call(
                call_key.key(bound),
                lambda: function(*args, **kwargs),
                ttl=ttl,
                tags=call_key.expand(bound),
            )
            return result

        return wrapper

    return decorate


class Invalidates:
    """Invalidates tags when a block or a function finishes without an exception."""

    def __init__(self, cache: QueryCache, tags: Sequence[str]) -> None:
        if not tags:
            raise ValueError("name at least one tag to invalidate")
        self.cache = cache
        self.tags = tuple(tags)

    def _plain_tags(self) -> list[str]:
        if any("{" in tag for tag in self.tags):
            raise ValueError("tags with {fields} need the decorator form, which has arguments")
        return list(self.tags)

    def __enter__(self) -> Invalidates:
        self._plain_tags()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.cache.invalidate(*self._plain_tags())

    async def __aenter__(self) -> Invalidates:
        self._plain_tags()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            await self.cache.ainvalidate(*self._plain_tags())

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(function)

        def tags_for(args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[str]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return expand_tags(self.tags, bound.arguments)

        if inspect.iscoroutinefunction(function):
            async_function = cast(Callable[..., Awaitable[Any]], function)

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                result = await async_function(*args, **kwargs)
                await self.cache.ainvalidate(*tags_for(args, kwargs))
                return result

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            result = function(*args, **kwargs)
            self.cache.invalidate(*tags_for(args, kwargs))
            return result

        return wrapper
