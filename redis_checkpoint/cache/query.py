"""The DB-query cache: ``QueryCache.get_or_load``, tags and stale-while-revalidate.

The decorators (``@cached_query``, ``@cache.invalidates``) are in :mod:`.query_decorators`, the
SQLAlchemy 2 integration (``cache.execute(session, select(...))``) in :mod:`.query_sqlalchemy`.

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

import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.core import DEFAULT_TTLS, MISSING
from redis_checkpoint.cache.engine import AsyncCacheEngine, AsyncClient, CacheEngine, SyncClient
from redis_checkpoint.cache.face import EngineOwner, UsesEngines
from redis_checkpoint.cache.keys import digest
from redis_checkpoint.settings import Settings
from redis_checkpoint.steps import adrive, drive

if TYPE_CHECKING:
    from sqlalchemy.engine import Result
    from sqlalchemy.sql.elements import ClauseElement
    from sqlalchemy.sql.selectable import TypedReturnsRows
    from typing_extensions import TypeVarTuple, Unpack

    from redis_checkpoint.cache.core import CoreOptions
    from redis_checkpoint.cache.query_decorators import Invalidates

    #: The column types of a typed ``select(...)``, as SQLAlchemy 2.1 spells them.
    Columns = TypeVarTuple("Columns")

__all__ = ["QueryCache", "QueryStats", "plain_rows"]

P = ParamSpec("P")
R = TypeVar("R")


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


class QueryCache(UsesEngines):
    """Query results in Redis, keyed by the SQL and its parameters (or a function's arguments).

    ``QueryCache(url)`` builds its own engine (keyword options as for
    :class:`~redis_checkpoint.CacheEngine`); ``QueryCache(engine=engine)`` shares one. ``ttl``
    defaults to 300 s (the "db" kind). ``stale_ttl`` > 0 turns on stale-while-revalidate.
    """

    def __init__(
        self,
        target: str | Settings | SyncClient | AsyncClient | None = None,
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

    def _rewrite(self, entry: list[Any], tags: Sequence[str]) -> dict[str, Any]:
        """Options to store ``entry`` for the rest of its own lifetime."""
        return self._write(max(0.001, entry[0] - time.time()), tags)

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
            if self._keep(entry) and self.empty_ttl is not None and _is_empty(entry[1]):
                # The single-flight stored it with the TTL of a full result: shorten it.
                yield ("set", entry)
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

        def handle(step: tuple[Any, ...]) -> Any:
            if step[0] == "get":
                return engine.get(namespace, key, MISSING, decode=self._decode)
            if step[0] == "load":
                return load()
            if step[0] == "get_or_compute":
                entry = engine.get_or_compute(
                    namespace, key, load, decode=self._decode, **self._write(seconds, tags)
                )
                return (entry, bool(loaded))
            if step[0] == "set":
                return engine.set(namespace, key, step[1], **self._rewrite(step[1], tags))
            return engine.delete(namespace, key)

        return drive(self._plan(key), handle)

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

        async def handle(step: tuple[Any, ...]) -> Any:
            if step[0] == "get":
                return await engine.get(namespace, key, MISSING, decode=self._decode)
            if step[0] == "load":
                return await load()
            if step[0] == "get_or_compute":
                entry = await engine.get_or_compute(
                    namespace, key, load, decode=self._decode, **self._write(seconds, tags)
                )
                return (entry, bool(loaded))
            if step[0] == "set":
                return await engine.set(namespace, key, step[1], **self._rewrite(step[1], tags))
            return await engine.delete(namespace, key)

        return await adrive(self._plan(key), handle)

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
        from redis_checkpoint.cache.query_decorators import cached_query

        return cached_query(ttl=ttl, tags=tags, key=key, ignore=ignore, cache=self)

    def invalidates(self, *tags: str) -> Invalidates:
        """Invalidate ``tags`` after a write succeeds: ``with cache.invalidates("orders"):``,
        ``async with ...`` or ``@cache.invalidates("orders", "user:{user_id}")``."""
        from redis_checkpoint.cache.query_decorators import Invalidates

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
        """Run a SQLAlchemy ``Select`` on a Session or Connection through the cache; see
        :func:`redis_checkpoint.cache.query_sqlalchemy.execute_cached`."""
        with _needs_sqlalchemy():
            from redis_checkpoint.cache.query_sqlalchemy import execute_cached
        return execute_cached(self, bind, statement, ttl=ttl, tags=tags)

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
            from redis_checkpoint.cache.query_sqlalchemy import aexecute_cached
        return await aexecute_cached(self, bind, statement, ttl=ttl, tags=tags)


@contextlib.contextmanager
def _needs_sqlalchemy() -> Iterator[None]:
    """Import the SQLAlchemy integration; without SQLAlchemy, say which extra installs it."""
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
