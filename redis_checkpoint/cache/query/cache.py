"""``QueryCache``: ``get_or_load``, tags, stale-while-revalidate, and its decorators.

Every entry is stored as ``[fresh_until, value]`` (``fresh_until`` in Unix seconds) with a Redis
TTL of ``ttl + stale_ttl``. Without ``stale_ttl`` that is a plain TTL cache. With it, an entry
past ``fresh_until`` is stale-while-revalidate: the first caller of a process to see it reloads
it (inline, so a loader that uses the caller's session never runs on another thread or task
while the caller uses that session) and every other caller meanwhile gets the stale value at
once. A miss goes through the engine's single-flight: concurrent identical loads run once
across threads, tasks and processes. One plan (:meth:`QueryCache._plan`) holds these steps for
both drivers: it yields :class:`~redis_checkpoint.steps.Invoke` (a method of the driver's
engine, sync or asyncio) and :class:`~redis_checkpoint.steps.Compute` (run the loader).

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

import contextlib
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.core import DEFAULT_TTLS, MISSING
from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine
from redis_checkpoint.cache.face import EngineOwner, UsesEngines
from redis_checkpoint.cache.query.keys import CallKey, expand_tags, params_key
from redis_checkpoint.cache.query.rows import is_empty, plain_rows
from redis_checkpoint.client import AsyncRedisClient, SyncRedisClient
from redis_checkpoint.settings import Settings
from redis_checkpoint.steps import Compute, Invoke, adrive, drive

if TYPE_CHECKING:
    from sqlalchemy.engine import Result
    from sqlalchemy.sql.elements import ClauseElement
    from sqlalchemy.sql.selectable import TypedReturnsRows
    from typing_extensions import TypeVarTuple, Unpack

    from redis_checkpoint.cache.core import CoreOptions

    #: The column types of a typed ``select(...)``, as SQLAlchemy 2.1 spells them.
    Columns = TypeVarTuple("Columns")

__all__ = ["Invalidates", "QueryCache", "QueryStats", "cache_calls"]

P = ParamSpec("P")
R = TypeVar("R")


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


class QueryCache(UsesEngines):
    """Query results in Redis, keyed by the SQL and its parameters (or a function's arguments).

    ``QueryCache(url)`` builds its own engine (keyword options as for
    :class:`~redis_checkpoint.CacheEngine`); ``QueryCache(engine=engine)`` shares one. ``ttl``
    defaults to 300 s (the "db" kind). ``stale_ttl`` > 0 turns on stale-while-revalidate.
    """

    def __init__(
        self,
        target: str | Settings | SyncRedisClient | AsyncRedisClient | None = None,
        *,
        engine: CacheEngine | None = None,
        async_engine: AsyncCacheEngine | None = None,
        namespace: str = "query",
        ttl: float = DEFAULT_TTLS["db"],
        stale_ttl: float = 0.0,
        cache_empty: bool = True,
        empty_ttl: float | None = None,
        **engine_options: Unpack[CoreOptions],
    ) -> None:
        for name, seconds in (("ttl", ttl), ("empty_ttl", empty_ttl)):
            if seconds is not None and not seconds > 0:
                raise ValueError(f"{name}={seconds!r} must be > 0 seconds")
        if not stale_ttl >= 0:
            raise ValueError(f"stale_ttl={stale_ttl!r} must be >= 0 seconds")
        self._engines = EngineOwner(
            target, engine, async_engine, engine_options, face=type(self).__name__
        )
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
        return params_key("sql", sql, params=params, what="from the query parameters")

    def _ttl(self, ttl: float | None) -> float:
        chosen = self.ttl if ttl is None else ttl
        if not chosen > 0:
            raise ValueError(f"ttl={chosen!r} must be > 0 seconds")
        return chosen

    def _entry(self, value: Any, ttl: float) -> list[Any]:
        lifetime = self.empty_ttl if self.empty_ttl is not None and is_empty(value) else ttl
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

    @contextlib.contextmanager
    def _loading(self) -> Iterator[None]:
        """Count one run of a loader and its time, whether it returns or raises."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self._count(loads=1, load_seconds=time.perf_counter() - started)

    def _write(self, ttl: float, tags: Sequence[str]) -> dict[str, Any]:
        return {"ttl": ttl + self.stale_ttl, "tags": tags}

    def _rewrite(self, entry: list[Any], tags: Sequence[str]) -> dict[str, Any]:
        """Options to store ``entry`` for the rest of its own lifetime."""
        return self._write(max(0.001, entry[0] - time.time()), tags)

    def _keep(self, entry: list[Any]) -> bool:
        """Whether a loaded result stays cached (an empty one only with negative caching)."""
        return self.cache_empty or not is_empty(entry[1])

    def _on(self, method: str, key: str, *args: Any, **kwargs: Any) -> Invoke:
        """The engine's ``method`` on entry ``key`` of this cache's namespace."""
        return Invoke(method, (self.namespace, key, *args), kwargs)

    def _plan(
        self, key: str, seconds: float, tags: Sequence[str], load: Callable[[], Any]
    ) -> Generator[Invoke | Compute, Any, Any]:
        """The steps of one cached call, shared by both drivers: :class:`Invoke` of the driver's
        engine (get, get_or_compute, set, delete) and :class:`Compute` (the driver runs
        ``load``; its result is a fresh entry). ``load`` is also what the single-flight runs."""
        state = "miss"
        if self.stale_ttl:
            # Only stale-while-revalidate needs to look before the single-flight does.
            found = yield self._on("get", key, MISSING, decode=self._decode)
            state, value = self._classify(found)
            if state == "fresh" or (state == "stale" and not self._claim_refresh(key)):
                self._served(state)
                return value
        if state == "stale":
            try:
                entry = yield Compute()
                self._count(refreshes=1)
                if self._keep(entry):
                    yield self._on("set", key, entry, **self._rewrite(entry, tags))
            finally:
                self._release_refresh(key)
        else:
            loaded: list[bool] = []

            def compute() -> Any:
                loaded.append(True)  # this call ran the loader: not a hit
                return load()

            options = self._write(seconds, tags)
            entry = yield self._on("get_or_compute", key, compute, decode=self._decode, **options)
            if not loaded:
                self._served("fresh")
                return entry[1]
            if self._keep(entry) and self.empty_ttl is not None and is_empty(entry[1]):
                # The single-flight stored it with the TTL of a full result: shorten it.
                yield self._on("set", key, entry, **self._rewrite(entry, tags))
        if not self._keep(entry):
            yield self._on("delete", key)
        return entry[1]

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
        engine = self.engine

        def load() -> list[Any]:
            with self._loading():
                return self._entry(plain_rows(loader()), seconds)

        plan = self._plan(key, seconds, tags, load)
        return drive(plan, lambda step: load() if isinstance(step, Compute) else step.on(engine))

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
        engine = self.async_engine

        async def load() -> list[Any]:
            with self._loading():
                return self._entry(plain_rows(await loader()), seconds)

        async def handle(step: Invoke | Compute) -> Any:
            return await (load() if isinstance(step, Compute) else step.on(engine))

        return await adrive(self._plan(key, seconds, tags, load), handle)

    async def ainvalidate(self, *tags: str) -> int:
        self._count(invalidations=1)
        return await self.async_engine.invalidate_tags(self.namespace, *tags)

    async def aclear(self) -> None:
        await self.async_engine.clear(self.namespace)

    # -- decorators and SQLAlchemy ----------------------------------------------------------

    def cached(
        self,
        *,
        ttl: float | None = None,
        tags: Sequence[str] = (),
        key: Callable[..., str] | None = None,
        ignore: Sequence[str] = (),
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a sync or async function that runs a query; see
        :func:`~redis_checkpoint.cache.query.decorators.cached_query`."""
        return cache_calls(lambda: self, ttl=ttl, tags=tags, key=key, ignore=ignore)

    def invalidates(self, *tags: str) -> Invalidates:
        """Invalidate ``tags`` after a write succeeds: ``with cache.invalidates("orders"):``,
        ``async with ...`` or ``@cache.invalidates("orders", "user:{user_id}")``."""
        return Invalidates(self, tags)

    # Typed like Session.execute: a typed select's rows unpack to its column types.
    @overload
    def execute(
        self,
        bind: Any,
        statement: TypedReturnsRows[Unpack[Columns]],
        *,
        ttl: float | None = None,
        tags: Sequence[str] | None = None,
    ) -> Result[Unpack[Columns]]: ...
    @overload
    def execute(
        self,
        bind: Any,
        statement: ClauseElement,
        *,
        ttl: float | None = None,
        tags: Sequence[str] | None = None,
    ) -> Result[Unpack[tuple[Any, ...]]]: ...
    def execute(
        self,
        bind: Any,
        statement: ClauseElement,
        *,
        ttl: float | None = None,
        tags: Sequence[str] | None = None,
    ) -> Result[Unpack[tuple[Any, ...]]]:
        """Run a SQLAlchemy ``Select`` on a Session or Connection through the cache: a real
        ``Result`` of the cached rows, keyed by the compiled statement and its database, tagged
        (``tags=None``) with the tables it reads; see :mod:`.sqlalchemy`."""
        with _needs_sqlalchemy():
            from redis_checkpoint.cache.query.sqlalchemy import as_result, key_and_tags, stored_rows
        key, chosen = key_and_tags(bind, statement, tags)
        stored = self.cached_call(
            key, lambda: stored_rows(bind.execute(statement)), ttl=ttl, tags=chosen
        )
        return as_result(stored)

    @overload
    async def aexecute(
        self,
        bind: Any,
        statement: TypedReturnsRows[Unpack[Columns]],
        *,
        ttl: float | None = None,
        tags: Sequence[str] | None = None,
    ) -> Result[Unpack[Columns]]: ...
    @overload
    async def aexecute(
        self,
        bind: Any,
        statement: ClauseElement,
        *,
        ttl: float | None = None,
        tags: Sequence[str] | None = None,
    ) -> Result[Unpack[tuple[Any, ...]]]: ...
    async def aexecute(
        self,
        bind: Any,
        statement: ClauseElement,
        *,
        ttl: float | None = None,
        tags: Sequence[str] | None = None,
    ) -> Result[Unpack[tuple[Any, ...]]]:
        """:meth:`execute` on an AsyncSession or AsyncConnection."""
        with _needs_sqlalchemy():
            from redis_checkpoint.cache.query.sqlalchemy import as_result, key_and_tags, stored_rows

        async def load() -> list[Any]:
            return stored_rows(await bind.execute(statement))

        key, chosen = key_and_tags(bind, statement, tags)
        return as_result(await self.acached_call(key, load, ttl=ttl, tags=chosen))


@contextlib.contextmanager
def _needs_sqlalchemy() -> Iterator[None]:
    """Import the SQLAlchemy integration (on first use only: SQLAlchemy is an optional
    dependency); without SQLAlchemy, say which extra installs it."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "sqlalchemy":
            raise
        raise ModuleNotFoundError(
            "QueryCache.execute/aexecute need SQLAlchemy 2: "
            "pip install 'redis-checkpoint[sqlalchemy]'",
            name="sqlalchemy",
        ) from exc


def cache_calls(
    cache: Callable[[], QueryCache],
    *,
    ttl: float | None,
    tags: Sequence[str],
    key: Callable[..., str] | None,
    ignore: Sequence[str],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The decorator of :meth:`QueryCache.cached` and ``@cached_query``: each call goes
    through the QueryCache that ``cache()`` returns at that call."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        call_key = CallKey(function, key, tags, ignore)

        if inspect.iscoroutinefunction(function):
            async_function = cast(Callable[..., Awaitable[Any]], function)

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                bound = call_key.bind(args, kwargs)
                return await cache().acached_call(
                    call_key.key(bound),
                    lambda: async_function(*args, **kwargs),
                    ttl=ttl,
                    tags=call_key.expand(bound),
                )

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = call_key.bind(args, kwargs)
            result: R = cache().cached_call(
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
