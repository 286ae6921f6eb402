"""CacheEngine and AsyncCacheEngine: the sync and asyncio drivers of the cache core.

Each only sends the core's round trips (a lone command directly, several in one pipeline), sleeps
when a single-flight waiter backs off, and runs the caller's computation; all logic is in
:mod:`.core`. Both drivers of one cache can share a core (:meth:`CacheEngine.async_twin`): same
statistics, breaker and memory tier.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.core import (
    DEFAULT,
    MISSING,
    CacheCore,
    CachePlan,
    CacheStep,
    CoreOptions,
)
from redis_checkpoint.cache.stats import NamespaceStats
from redis_checkpoint.client import (
    AsyncRedisClient,
    SyncRedisClient,
    create_async_client,
    create_client,
    describe_client,
)
from redis_checkpoint.errors import ConfigurationError
from redis_checkpoint.settings import Settings
from redis_checkpoint.steps import Compute, LoadScripts, Send, Sleep, adrive, asend, drive, send

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncCacheEngine", "CacheEngine"]

T = TypeVar("T")
C = TypeVar("C")
Encode = Callable[[Any], bytes]
Decode = Callable[[bytes], Any]


def _resolve(target: Any, settings: Settings | None, overrides: Mapping[str, Any]) -> Settings:
    if isinstance(target, Settings):
        return target.replace(**overrides)
    if isinstance(target, str):
        return (settings or Settings.from_env(url=target)).replace(url=target, **overrides)
    return (settings or Settings.from_env()).replace(**overrides)


def _no_options_with_core(core: CacheCore | None, options: Mapping[str, Any]) -> None:
    if core is not None and options:
        raise TypeError(
            f"options {sorted(options)} belong to the core; a shared core= already has its own"
        )


class _Engine(Generic[C]):
    """What both drivers share: the core, the client and the round-trip count."""

    client: C
    _owns_client: bool

    def __init__(self, core: CacheCore, client: C, *, given: bool = False) -> None:
        self.core = core
        self.client = client
        if given:
            # A caller's client may point elsewhere than the settings' URL: messages name it.
            core.where = describe_client(client)
        #: Network round trips sent to Redis by this driver (script loads included).
        self.round_trips = 0

    @property
    def owns_client(self) -> bool:
        """True when this engine built its client (from a URL or Settings) and closes it; False
        for a client passed in, which stays the caller's to close."""
        return self._owns_client

    def stats(self) -> dict[str, NamespaceStats]:
        """A snapshot of the counters per namespace (shared with the twin driver)."""
        return self.core.stats.snapshot()

    @property
    def serving_from_memory(self) -> bool:
        return self.core.serving_from_memory

    def set_cache_type(self, namespace: str, cache_type: str) -> None:
        """Label ``namespace``'s metrics with ``cache_type`` (``llm``, ``query``, ...)."""
        self.core.stats.set_cache_type(namespace, cache_type)


class CacheEngine(_Engine[SyncRedisClient]):
    """The cache engine on redis-py's sync client.

    ``target`` is a URL, a :class:`Settings`, a redis-py client, or ``None`` for REDIS_URL and
    the other environment settings. Keyword options are those of :class:`CacheCore`; pass
    ``core=`` to share one with another driver.
    """

    def __init__(
        self,
        target: str | Settings | SyncRedisClient | None = None,
        *,
        core: CacheCore | None = None,
        settings: Settings | None = None,
        **options: Unpack[CoreOptions],
    ) -> None:
        if isinstance(target, (redis.Redis, redis.cluster.RedisCluster)):
            client = create_client(target)
            resolved = core.settings if core is not None else (settings or Settings.from_env())
            self._owns_client = False
        else:
            resolved = _resolve(target, settings, {})
            client = create_client(resolved)
            self._owns_client = True
        _no_options_with_core(core, options)
        given = core is None and not self._owns_client
        super().__init__(core or CacheCore(resolved, **options), client, given=given)
        self._client_given = not self._owns_client
        self._flights: dict[tuple[str, str | bytes], _Flight] = {}
        self._flights_lock = threading.Lock()

    def async_twin(self, client: AsyncRedisClient | None = None) -> AsyncCacheEngine:
        """An AsyncCacheEngine on the same core (stats, breaker, memory tier)."""
        if client is None and self._client_given:
            raise ConfigurationError(
                "this engine was built from a client, so its async twin needs one too: "
                "engine.async_twin(redis.asyncio.Redis(...))"
            )
        return AsyncCacheEngine(client if client is not None else None, core=self.core)

    def ping(self) -> bool:
        """Health check: see :meth:`CacheCore.probe`."""
        return self._run(self.core.probe())

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> CacheEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the driver ----------------------------------------------------------------------------

    def _execute(self, commands: tuple[tuple[Any, ...], ...]) -> list[Any]:
        self.round_trips += 1
        return send(self.client, commands)

    def _run(self, op: CachePlan[T], compute: Callable[[], Any] | None = None) -> T:
        def handle(step: CacheStep) -> Any:
            if isinstance(step, Send):
                return self._execute(step.commands)
            if isinstance(step, LoadScripts):
                for script in step.scripts:
                    self.client.script_load(script.source)
                self.round_trips += len(step.scripts)
                return None
            if isinstance(step, Sleep):
                return time.sleep(step.seconds)
            if isinstance(step, Compute) and compute is not None:
                return compute()
            raise RuntimeError(f"unexpected step {step!r}")  # pragma: no cover

        return drive(op, handle)

    # -- the API -------------------------------------------------------------------------------

    def get(
        self, namespace: str, key: str | bytes, default: Any = None, *, decode: Decode = codec.loads
    ) -> Any:
        """The cached value, or ``default``."""
        [value] = self._run(self.core.get_many(namespace, [key], decode))
        return default if value is MISSING else value

    def get_many(
        self,
        namespace: str,
        keys: Sequence[str | bytes],
        *,
        decode: Decode = codec.loads,
        count: bool = True,
    ) -> list[Any]:
        """One MGET for all ``keys``: each value, or :data:`MISSING`. ``count=False`` leaves
        the hit and miss counters to the caller (a face that decides what a lookup was)."""
        return self._run(self.core.get_many(namespace, keys, decode, count=count))

    def set(
        self,
        namespace: str,
        key: str | bytes,
        value: Any,
        *,
        ttl: Any = DEFAULT,
        tags: Sequence[str] = (),
        encode: Encode = codec.dumps,
    ) -> bool:
        """Store ``value``; False when it was not stored (oversize, or an error was counted)."""
        op = self.core.set_many(namespace, [(key, value)], encode, ttl=ttl, tags=tags)
        return self._run(op) == 1

    def set_many(
        self,
        namespace: str,
        items: Sequence[tuple[str | bytes, Any]],
        *,
        ttl: Any = DEFAULT,
        tags: Sequence[str] = (),
        tag_limits: Mapping[str, int] | None = None,
        encode: Encode = codec.dumps,
    ) -> int:
        """Store all ``items`` in one round trip; returns how many were stored. ``tag_limits``:
        at most this many entries per tag, see :meth:`CacheCore.set_many`."""
        return self._run(
            self.core.set_many(namespace, items, encode, ttl=ttl, tags=tags, tag_limits=tag_limits)
        )

    def delete(self, namespace: str, *keys: str | bytes) -> int:
        return self._run(self.core.delete(namespace, keys))

    def claim(self, namespace: str, key: str | bytes, seconds: float) -> bool:
        """Whether this caller, alone across processes, holds ``key``'s lock for ``seconds``."""
        return self._run(self.core.claim(namespace, key, seconds))

    def invalidate_tags(self, namespace: str, *tags: str) -> int:
        """Delete the entries written with any of ``tags``; returns the keys deleted (entries
        of a cleared generation not yet expired included)."""
        return self._run(self.core.invalidate_tags(namespace, tags))

    def clear(self, namespace: str) -> None:
        self._run(self.core.clear(namespace))

    def get_or_compute(
        self,
        namespace: str,
        key: str | bytes,
        compute: Callable[[], T],
        *,
        ttl: Any = DEFAULT,
        tags: Sequence[str] = (),
        encode: Encode = codec.dumps,
        decode: Decode = codec.loads,
        lock_timeout: float | None = None,
        wait_timeout: float | None = None,
    ) -> T:
        """The cached value, else ``compute()`` run once across threads and processes."""
        flight_key = (namespace, key)
        with self._flights_lock:
            flight = self._flights.get(flight_key)
            leader = flight is None
            if flight is None:
                flight = self._flights[flight_key] = _Flight()
        if not leader:
            self.core.stats.singleflight_wait(namespace, "process")
            flight.done.wait()
            if flight.ok:
                return flight.value  # type: ignore[no-any-return]
        op = self.core.get_or_compute(
            namespace,
            key,
            decode,
            encode,
            ttl=ttl,
            tags=tags,
            lock_timeout=lock_timeout,
            wait_timeout=wait_timeout,
        )
        try:
            value: T = self._run(op, compute)
            if leader:
                flight.value, flight.ok = value, True
            return value
        finally:
            if leader:
                with self._flights_lock:
                    del self._flights[flight_key]
                flight.done.set()


class _Flight:
    """One in-process computation other threads wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False
        self.value: Any = None


class AsyncCacheEngine(_Engine[AsyncRedisClient]):
    """The cache engine on redis.asyncio; the same API as :class:`CacheEngine`, awaitable."""

    def __init__(
        self,
        target: str | Settings | AsyncRedisClient | None = None,
        *,
        core: CacheCore | None = None,
        settings: Settings | None = None,
        **options: Unpack[CoreOptions],
    ) -> None:
        if isinstance(target, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)):
            client = create_async_client(target)
            resolved = core.settings if core is not None else (settings or Settings.from_env())
            self._owns_client = False
        else:
            if target is None and core is not None:
                target = core.settings
            resolved = _resolve(target, settings, {})
            client = create_async_client(resolved)
            self._owns_client = True
        _no_options_with_core(core, options)
        given = core is None and not self._owns_client
        super().__init__(core or CacheCore(resolved, **options), client, given=given)
        self._flights: dict[tuple[str, str | bytes], asyncio.Future[Any]] = {}

    async def ping(self) -> bool:
        """Health check: see :meth:`CacheCore.probe`."""
        return await self._run(self.core.probe())

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> AsyncCacheEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the driver ----------------------------------------------------------------------------

    async def _execute(self, commands: tuple[tuple[Any, ...], ...]) -> list[Any]:
        self.round_trips += 1
        return await asend(self.client, commands)

    async def _run(
        self, op: CachePlan[T], compute: Callable[[], Awaitable[Any]] | None = None
    ) -> T:
        async def handle(step: CacheStep) -> Any:
            if isinstance(step, Send):
                return await self._execute(step.commands)
            if isinstance(step, LoadScripts):
                for script in step.scripts:
                    await self.client.script_load(script.source)
                self.round_trips += len(step.scripts)
                return None
            if isinstance(step, Sleep):
                return await asyncio.sleep(step.seconds)
            if isinstance(step, Compute) and compute is not None:
                return await compute()
            raise RuntimeError(f"unexpected step {step!r}")  # pragma: no cover

        return await adrive(op, handle)

    # -- the API -------------------------------------------------------------------------------

    async def get(
        self, namespace: str, key: str | bytes, default: Any = None, *, decode: Decode = codec.loads
    ) -> Any:
        [value] = await self._run(self.core.get_many(namespace, [key], decode))
        return default if value is MISSING else value

    async def get_many(
        self,
        namespace: str,
        keys: Sequence[str | bytes],
        *,
        decode: Decode = codec.loads,
        count: bool = True,
    ) -> list[Any]:
        return await self._run(self.core.get_many(namespace, keys, decode, count=count))

    async def set(
        self,
        namespace: str,
        key: str | bytes,
        value: Any,
        *,
        ttl: Any = DEFAULT,
        tags: Sequence[str] = (),
        encode: Encode = codec.dumps,
    ) -> bool:
        op = self.core.set_many(namespace, [(key, value)], encode, ttl=ttl, tags=tags)
        return await self._run(op) == 1

    async def set_many(
        self,
        namespace: str,
        items: Sequence[tuple[str | bytes, Any]],
        *,
        ttl: Any = DEFAULT,
        tags: Sequence[str] = (),
        tag_limits: Mapping[str, int] | None = None,
        encode: Encode = codec.dumps,
    ) -> int:
        return await self._run(
            self.core.set_many(namespace, items, encode, ttl=ttl, tags=tags, tag_limits=tag_limits)
        )

    async def delete(self, namespace: str, *keys: str | bytes) -> int:
        return await self._run(self.core.delete(namespace, keys))

    async def claim(self, namespace: str, key: str | bytes, seconds: float) -> bool:
        return await self._run(self.core.claim(namespace, key, seconds))

    async def invalidate_tags(self, namespace: str, *tags: str) -> int:
        return await self._run(self.core.invalidate_tags(namespace, tags))

    async def clear(self, namespace: str) -> None:
        await self._run(self.core.clear(namespace))

    async def get_or_compute(
        self,
        namespace: str,
        key: str | bytes,
        compute: Callable[[], Awaitable[T]],
        *,
        ttl: Any = DEFAULT,
        tags: Sequence[str] = (),
        encode: Encode = codec.dumps,
        decode: Decode = codec.loads,
        lock_timeout: float | None = None,
        wait_timeout: float | None = None,
    ) -> T:
        """The cached value, else ``await compute()`` run once across tasks, threads and
        processes."""
        flight_key = (namespace, key)
        flight = self._flights.get(flight_key)
        if flight is not None:
            self.core.stats.singleflight_wait(namespace, "process")
            try:
                return await asyncio.shield(flight)  # type: ignore[no-any-return]
            except Exception:
                pass  # the leader failed: nothing was cached, try on our own
        leader = flight is None
        if leader:
            flight = self._flights[flight_key] = asyncio.get_running_loop().create_future()
        op = self.core.get_or_compute(
            namespace,
            key,
            decode,
            encode,
            ttl=ttl,
            tags=tags,
            lock_timeout=lock_timeout,
            wait_timeout=wait_timeout,
        )
        try:
            value: T = await self._run(op, compute)
        except BaseException as exc:
            if leader and flight is not None:
                self._flights.pop(flight_key, None)
                if not flight.done():
                    flight.set_exception(exc if isinstance(exc, Exception) else RuntimeError())
                    flight.exception()  # mark retrieved: waiters retry on their own
            raise
        if leader and flight is not None:
            self._flights.pop(flight_key, None)
            flight.set_result(value)
        return value
