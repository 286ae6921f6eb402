"""The DB-query cache: ``@cached_query``, ``QueryCache.get_or_load`` and write-path invalidation.

Every entry is stored as ``[fresh_until, value]`` (``fresh_until`` in Unix seconds) with a Redis
TTL of ``ttl + stale_ttl``. Without ``stale_ttl`` that is a plain TTL cache. With it, an entry
past ``fresh_until`` is stale-while-revalidate: the first caller of a process to see it reloads
it (inline, so a loader that uses the caller's session never runs on another thread or task
while the caller uses that session) and every other caller meanwhile gets the stale value at
once. A miss goes through the engine's single-flight: concurrent identical loads run once
across threads, tasks and processes.

Tags name what a result depends on (usually table names). ``cache.invalidate("orders")`` deletes
every entry tagged ``orders`` in every process; ``with cache.invalidates("orders"): ...`` (or
``@cache.invalidates("orders")``) does it after the block or function succeeds, never when it
raises. A tag may hold ``{name}`` fields filled from the decorated function's arguments.

An empty result (``None`` or an empty list, tuple or dict) is cached like any other unless
``cache_empty=False``; ``empty_ttl`` gives it a shorter life. Rows must be data the codec keeps
exactly (dicts, lists, tuples, str, bytes, int, float, bool, None, datetime with its zone, date,
Decimal, UUID); mappings such as SQLAlchemy's ``RowMapping`` become dicts and rows become tuples,
on a miss as on a hit, so a caller never sees a difference between a warm and a cold cache.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.core import DEFAULT_TTLS, MISSING
from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine, SyncClient
from redis_checkpoint.cache.face import EngineFace, EngineOwner
from redis_checkpoint.cache.keys import digest
from redis_checkpoint.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Result
    from sqlalchemy.sql.elements import ClauseElement

__all__ = [
    "DB_HANDLE_PARAMETERS",
    "QueryCache",
    "QueryStats",
    "cached_query",
    "get_query_cache",
    "set_query_cache",
]

log = logging.getLogger("redis_checkpoint.cache")
P = ParamSpec("P")
R = TypeVar("R")

#: Parameters left out of a decorated function's key by name: the handle a query runs on, not
#: what it asks for.
DB_HANDLE_PARAMETERS = frozenset(
    {"self", "cls", "session", "db", "conn", "connection", "cursor", "engine", "tx", "transaction"}
)


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


def plain_rows(value: Any) -> Any:
    """Mappings as dicts and sequences of rows as lists of tuples: what the cache keeps exactly."""
    if isinstance(value, str):
        return str(value)  # a subclass (e.g. SQLAlchemy's quoted_name) becomes plain text
    if isinstance(value, (bytes, bytearray, int, float, bool)) or value is None:
        return bytes(value) if isinstance(value, bytearray) else value
    if isinstance(value, Mapping):
        return {key: plain_rows(item) for key, item in value.items()}
    if isinstance(value, tuple):
        # A SQLAlchemy Row is a tuple subclass: keep its values, lose the class.
        return tuple(plain_rows(item) for item in value)
    if isinstance(value, list):
        return [plain_rows(item) for item in value]
    mapping = getattr(value, "_mapping", None)  # SQLAlchemy Row
    if isinstance(mapping, Mapping):
        return tuple(plain_rows(item) for item in mapping.values())
    return value


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (list, tuple, dict)) and not value)


@dataclass
class QueryStats:
    """What one QueryCache saw in this process. ``load_seconds`` is the time spent in loaders;
    ``time_saved_seconds`` estimates what the hits saved at the mean load time."""

    hits: int = 0
    stale_hits: int = 0
    loads: int = 0
    load_seconds: float = 0.0
    refreshes: int = 0
    invalidations: int = 0

    @property
    def lookups(self) -> int:
        return self.hits + self.loads

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    @property
    def time_saved_seconds(self) -> float:
        return self.hits * self.load_seconds / self.loads if self.loads else 0.0


class QueryCache(EngineFace):
    """Query results in Redis, keyed by the SQL and its parameters (or a function's arguments).

    ``QueryCache(url)`` builds its own engine (keyword options as for
    :class:`~redis_checkpoint.CacheEngine`); ``QueryCache(engine=engine)`` shares one. ``ttl``
    defaults to 300 s (the "db" kind). ``stale_ttl`` > 0 turns on stale-while-revalidate.
    """

    def __init__(
        self,
        target: str | Settings | SyncClient | None = None,
        *,
        engine: CacheEngine | None = None,
        async_engine: AsyncCacheEngine | None = None,
        namespace: str = "db",
        ttl: float = DEFAULT_TTLS["db"],
        stale_ttl: float = 0.0,
        cache_empty: bool = True,
        empty_ttl: float | None = None,
        **engine_options: Any,
    ) -> None:
        for name, seconds in (("ttl", ttl), ("empty_ttl", empty_ttl)):
            if seconds is not None and not seconds > 0:
                raise ValueError(f"{name}={seconds!r} must be > 0 seconds")
        if not stale_ttl >= 0:
            raise ValueError(f"stale_ttl={stale_ttl!r} must be >= 0 seconds")
        self._engines = EngineOwner(target, engine, async_engine, engine_options)
        self.namespace = namespace
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.cache_empty = cache_empty
        self.empty_ttl = empty_ttl
        self._stats = QueryStats()
        self._stats_lock = threading.Lock()
        # Keys being refreshed in the background by this process (one refresh per key).
        self._refreshing: set[str] = set()

    def stats(self) -> QueryStats:
        """A snapshot of this process's counters (the engine's stats cover Redis itself)."""
        with self._stats_lock:
            return QueryStats(**vars(self._stats))

    def _count(self, **increments: float) -> None:
        with self._stats_lock:
            for name, amount in increments.items():
                setattr(self._stats, name, getattr(self._stats, name) + amount)

    # -- keys and entries (shared by both drivers) ------------------------------------------

    @staticmethod
    def query_key(sql: str, params: Any = None) -> str:
        """The key of ``sql`` with ``params`` (a sequence or a mapping; order of a mapping does
        not matter)."""
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError("sql must be a non-empty string")
        if isinstance(params, Mapping):
            params = sorted(([str(k), v] for k, v in params.items()), key=lambda kv: kv[0])
        try:
            material = codec.dumps(plain_rows(params))
        except TypeError as exc:
            raise TypeError(f"cannot build a cache key from the query parameters: {exc}") from None
        return digest("sql", sql, material)

    def _ttl(self, ttl: float | None) -> float:
        chosen = self.ttl if ttl is None else ttl
        if not chosen > 0:
            raise ValueError(f"ttl={chosen!r} must be > 0 seconds")
        return chosen

    def _entry(self, value: Any, ttl: float) -> list[Any]:
        lifetime = self.empty_ttl if self.empty_ttl is not None and _is_empty(value) else ttl
        return [time.time() + lifetime, value]

    @staticmethod
    def _decode(payload: bytes) -> list[Any]:
        entry = codec.loads(payload)
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], float)):
            raise ValueError("a query cache entry must be [fresh_until, value]")
        return entry

    def _classify(self, found: Any) -> tuple[str, Any]:
        """("fresh" | "stale" | "miss", value) for what a lookup returned."""
        if found is MISSING:
            return "miss", None
        fresh_until, value = found
        if self.stale_ttl and time.time() >= fresh_until:
            return "stale", value
        return "fresh", value

    def _claim_refresh(self, key: str) -> bool:
        with self._stats_lock:
            if key in self._refreshing:
                return False
            self._refreshing.add(key)
            return True

    def _release_refresh(self, key: str) -> None:
        with self._stats_lock:
            self._refreshing.discard(key)

    def _served(self, state: str) -> None:
        self._count(hits=1, stale_hits=int(state == "stale"))

    def _loaded(self, started: float) -> None:
        self._count(loads=1, load_seconds=time.perf_counter() - started)

    def _write(self, ttl: float, tags: Sequence[str]) -> dict[str, Any]:
        return {"ttl": ttl + self.stale_ttl, "tags": tags}

    def _plan(self, key: str) -> Generator[tuple[Any, ...], Any, Any]:
        """The steps of one cached call, shared by both drivers. Each step is a tuple the
        driver carries out with its engine: ("get",) -> the entry or MISSING; ("load",) -> a
        fresh entry; ("get_or_compute",) -> (the entry, whether this call loaded it);
        ("set", entry); ("delete",)."""
        state = "miss"
        if self.stale_ttl:
            # Only stale-while-revalidate needs to look before the single-flight does.
            state, value = self._classify((yield ("get",)))
            if state == "fresh" or (state == "stale" and not self._claim_refresh(key)):
                self._served(state)
                return value
        if state == "stale":
            try:
                entry = yield ("load",)
                self._count(refreshes=1)
                if self._keep(entry):
                    yield ("set", entry)
            finally:
                self._release_refresh(key)
        else:
            entry, loaded = yield ("get_or_compute",)
            if not loaded:
                self._served("fresh")
                return entry[1]
        if not self._keep(entry):
            yield ("delete",)
        return entry[1]

    def _keep(self, entry: list[Any]) -> bool:
        """Whether a loaded result stays cached (an empty one only with negative caching)."""
        return self.cache_empty or not _is_empty(entry[1])

    # -- sync -------------------------------------------------------------------------------

    def get_or_load(
        self,
        sql: str,
        params: Any,
        loader: Callable[[], Any],
        *,
        ttl: float | None = None,
        tags: Sequence[str] = (),
    ) -> Any:
        """The cached result of ``sql`` with ``params``, else ``loader()`` (run once across
        threads and processes) stored with ``tags``."""
        return self.cached_call(self.query_key(sql, params), loader, ttl=ttl, tags=tags)

    def cached_call(
        self,
        key: str,
        loader: Callable[[], Any],
        *,
        ttl: float | None = None,
        tags: Sequence[str] = (),
    ) -> Any:
        """:meth:`get_or_load` with a key of your own."""
        seconds = self._ttl(ttl)
        engine, namespace = self.engine, self.namespace
        loaded: list[bool] = []

        def load() -> list[Any]:
            started = time.perf_counter()
            loaded.append(True)
            try:
                return self._entry(plain_rows(loader()), seconds)
            finally:
                self._loaded(started)

        plan = self._plan(key)
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = plan.throw(error) if error is not None else plan.send(reply)
            except StopIteration as stop:
                return stop.value
            reply = error = None
            try:
                if step[0] == "get":
                    reply = engine.get(namespace, key, MISSING, decode=self._decode)
                elif step[0] == "load":
                    reply = load()
                elif step[0] == "get_or_compute":
                    entry = engine.get_or_compute(
                        namespace, key, load, decode=self._decode, **self._write(seconds, tags)
                    )
                    reply = (entry, bool(loaded))
                elif step[0] == "set":
                    reply = engine.set(namespace, key, step[1], **self._write(seconds, tags))
                else:
                    reply = engine.delete(namespace, key)
            except Exception as exc:
                error = exc

    def invalidate(self, *tags: str) -> int:
        """Delete every entry stored with one of ``tags``, in every process."""
        self._count(invalidations=1)
        return self.engine.invalidate_tags(self.namespace, *tags)

    def clear(self) -> None:
        """Forget every entry of this cache's namespace (one INCR)."""
        self.engine.clear(self.namespace)

    # -- async ------------------------------------------------------------------------------

    async def aget_or_load(
        self,
        sql: str,
        params: Any,
        loader: Callable[[], Awaitable[Any]],
        *,
        ttl: float | None = None,
        tags: Sequence[str] = (),
    ) -> Any:
        """:meth:`get_or_load` for an async ``loader``, on redis.asyncio."""
        return await self.acached_call(self.query_key(sql, params), loader, ttl=ttl, tags=tags)

    async def acached_call(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        *,
        ttl: float | None = None,
        tags: Sequence[str] = (),
    ) -> Any:
        """:meth:`cached_call` for an async ``loader``, on redis.asyncio."""
        seconds = self._ttl(ttl)
        engine, namespace = self.async_engine, self.namespace
        loaded: list[bool] = []

        async def load() -> list[Any]:
            started = time.perf_counter()
            loaded.append(True)
            try:
                return self._entry(plain_rows(await loader()), seconds)
            finally:
                self._loaded(started)

        plan = self._plan(key)
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = plan.throw(error) if error is not None else plan.send(reply)
            except StopIteration as stop:
                return stop.value
            reply = error = None
            try:
                if step[0] == "get":
                    reply = await engine.get(namespace, key, MISSING, decode=self._decode)
                elif step[0] == "load":
                    reply = await load()
                elif step[0] == "get_or_compute":
                    entry = await engine.get_or_compute(
                        namespace, key, load, decode=self._decode, **self._write(seconds, tags)
                    )
                    reply = (entry, bool(loaded))
                elif step[0] == "set":
                    reply = await engine.set(namespace, key, step[1], **self._write(seconds, tags))
                else:
                    reply = await engine.delete(namespace, key)
            except Exception as exc:
                error = exc

    async def ainvalidate(self, *tags: str) -> int:
        self._count(invalidations=1)
        return await self.async_engine.invalidate_tags(self.namespace, *tags)

    async def aclear(self) -> None:
        await self.async_engine.clear(self.namespace)

    # -- decorators and helpers -------------------------------------------------------------

    def cached(
        self,
        *,
        ttl: float | None = None,
        tags: Sequence[str] = (),
        key: Callable[..., str] | None = None,
        ignore: Sequence[str] = (),
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a sync or async function that runs a query; see :func:`cached_query`."""
        return cached_query(ttl=ttl, tags=tags, key=key, ignore=ignore, cache=self)

    def invalidates(self, *tags: str) -> Invalidates:
        """Invalidate ``tags`` after a write succeeds: ``with cache.invalidates("orders"):``,
        ``async with ...`` or ``@cache.invalidates("orders", "user:{user_id}")``."""
        return Invalidates(self, tags)

    def execute(self, bind: Any, statement: ClauseElement, **options: Any) -> Result[Any]:
        """Run a SQLAlchemy ``Select`` on a Session or Connection through the cache; see
        :func:`redis_checkpoint.cache.query_sqlalchemy.execute_cached`."""
        from redis_checkpoint.cache.query_sqlalchemy import execute_cached

        return execute_cached(self, bind, statement, **options)

    async def aexecute(self, bind: Any, statement: ClauseElement, **options: Any) -> Result[Any]:
        """:meth:`execute` on an AsyncSession or AsyncConnection."""
        from redis_checkpoint.cache.query_sqlalchemy import aexecute_cached

        return await aexecute_cached(self, bind, statement, **options)


# -- the decorator ----------------------------------------------------------------------------


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
        self.ignore = DB_HANDLE_PARAMETERS | set(ignore)

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
    applied, so ``f(1)`` and ``f(x=1)`` share an entry), without DB handles: parameters named
    in :data:`DB_HANDLE_PARAMETERS` or ``ignore`` and any SQLAlchemy, sqlite3, psycopg, asyncpg
    or DB-API connection, session or cursor. ``key(*args, **kwargs)`` replaces that. ``tags``
    may hold ``{argument}`` fields. ``cache`` defaults to :func:`get_query_cache`.
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
