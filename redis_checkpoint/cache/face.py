"""What every face (LLM, embeddings, node cache, query cache) needs: a sync engine and an async
engine on one core (stats, breaker, memory tier), whichever of the two it was given.

A face built from a URL or Settings builds the other engine from the same settings. A face built
from a redis-py client, sync or asyncio, standalone or cluster, derives the other side's client
from the given one's connection settings, so it serves ``graph.invoke`` and ``graph.ainvoke``
alike. Whether the client can be mirrored is checked at construction: one that cannot (a Sentinel
pool, a custom connection class, a sync-only TLS option) is refused there with the fix, never in
the middle of a run. A face closes only the clients it built or derived, never one passed in.

A derived async engine is kept per event loop: a redis.asyncio connection works only on the loop
that opened it, and two ``asyncio.run`` calls are two loops.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, overload

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.retry
import redis.cluster
import redis.connection
import redis.retry

from redis_checkpoint.cache.core import CacheCore
from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine
from redis_checkpoint.client import (
    AsyncRedisClient,
    SyncRedisClient,
    describe_client,
    is_own_connect_hook,
)
from redis_checkpoint.errors import ConfigurationError
from redis_checkpoint.settings import Settings

if TYPE_CHECKING:
    from redis_checkpoint.cache.core import CoreOptions

__all__ = ["EngineOwner", "UsesEngines", "mirror_client"]

AsyncSide = tuple[AsyncCacheEngine, Callable[[], Awaitable[None]]]
SyncSide = tuple[CacheEngine, Callable[[], None]]


def _both_ways(*pairs: tuple[type, type]) -> dict[type, type]:
    table = dict(pairs)
    table.update((async_class, sync_class) for sync_class, async_class in pairs)
    return table


# Each redis-py sync class and its asyncio counterpart, looked up by exact type: a subclass (a
# Sentinel pool, a custom connection or retry policy) may carry behaviour that cannot be copied.
_COUNTERPART = _both_ways(
    (redis.ConnectionPool, redis.asyncio.ConnectionPool),
    (redis.BlockingConnectionPool, redis.asyncio.BlockingConnectionPool),
    (redis.connection.Connection, redis.asyncio.connection.Connection),
    (redis.connection.SSLConnection, redis.asyncio.connection.SSLConnection),
    (
        redis.connection.UnixDomainSocketConnection,
        redis.asyncio.connection.UnixDomainSocketConnection,
    ),
    (redis.retry.Retry, redis.asyncio.retry.Retry),
)
_SSL = (redis.connection.SSLConnection, redis.asyncio.connection.SSLConnection)
_PLAIN = (redis.connection.Connection, redis.asyncio.connection.Connection)

# Connection settings both sides take under the same name and meaning: copied as they are.
_PORTABLE = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "credential_provider",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "socket_read_size",
        "retry_on_timeout",
        "retry_on_error",
        "encoding",
        "encoding_errors",
        "decode_responses",
        "health_check_interval",
        "client_name",
        "protocol",
        "legacy_responses",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_include_verify_flags",
        "ssl_exclude_verify_flags",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
        "ssl_password",
    }
)
# Set up by redis-py itself for each client (or copied on their own, like the retry policy and
# the pool size): the derived client makes its own.
_REBUILT = frozenset(
    {
        "retry",
        "connection_class",
        "max_connections",
        "driver_info",
        "lib_name",
        "lib_version",
        "event_dispatcher",
        "response_callbacks",
        "himport_registry",
        "maint_notifications_config",
        "maint_notifications_pool_handler",
        "oss_cluster_maint_notifications_handler",
        "orig_host_address",
        "orig_socket_timeout",
        "orig_socket_connect_timeout",
    }
)
# A cluster client hooks its own on_connect into every node connection.
_REBUILT_IN_CLUSTER = _REBUILT | {"redis_connect_func"}

Refuse = Callable[[str], ConfigurationError]


def _refusal(client: object, face: str) -> Refuse:
    kind = type(client)
    other = "sync" if kind.__module__.startswith("redis.asyncio") else "asyncio"

    def refuse(why: str) -> ConfigurationError:
        return ConfigurationError(
            f"{face} was given a {kind.__module__}.{kind.__name__} for "
            f"{describe_client(client)} and needs a {other} client on the same server too, "
            f"which it cannot derive: {why}. Pass a URL instead, or both clients on one core: "
            f"engine = CacheEngine(sync_client); "
            f"{face}(engine=engine, async_engine=engine.async_twin(async_client))"
        )

    return refuse


def _named_parameters(factory: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword names ``factory`` takes; None when it takes any (``**kwargs``)."""
    parameters = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)


def _connection_parameters(connection_class: type) -> frozenset[str] | None:
    """The keyword names a connection class takes, following ``**kwargs`` up its bases: what
    one side's redis-py takes that the other's does not must fail here, not at connect time."""
    names: set[str] = set()
    for base in connection_class.__mro__:
        init = base.__dict__.get("__init__")
        if init is None:
            continue
        named = _named_parameters(init)
        if named is not None:
            return frozenset(names | named)
        names.update(
            p.name
            for p in inspect.signature(init).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        )
    return None  # every chain ends in AbstractConnection, which names all it takes


def _portable_settings(
    kwargs: Mapping[str, Any],
    rebuilt: frozenset[str],
    accepted: frozenset[str] | None,
    refuse: Refuse,
) -> dict[str, Any]:
    copied: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in rebuilt or (name == "redis_connect_func" and is_own_connect_hook(value)):
            continue  # ours only makes a missing db's error clearer
        if name in _PORTABLE and (accepted is None or name in accepted):
            copied[name] = value
        elif value is not None and value is not False:
            # Dropping a set option could silently weaken the link (TLS checks, say). The value
            # is not shown: it may be a secret.
            raise refuse(f"its connection setting {name!r} has no counterpart on the other side")
    return copied


def _retry_copier(retry: object, refuse: Refuse) -> Callable[[], Any]:
    """A factory of the other side's copy of ``retry`` (a fresh backoff each: some keep state)."""
    if retry is None:
        return lambda: None
    other = _COUNTERPART.get(type(retry))
    backoff = getattr(retry, "_backoff", None)
    retries = getattr(retry, "_retries", None)
    errors = getattr(retry, "_supported_errors", None)
    if other is None or backoff is None or retries is None or errors is None:
        raise refuse(f"its retry policy is a custom {type(retry).__name__}")
    checker = getattr(retry, "_is_retryable", None)
    extra = {"is_retryable": checker} if checker is not None else {}

    def copy_retry() -> Any:
        return other(copy.copy(backoff), retries, supported_errors=tuple(errors), **extra)

    return copy_retry


def _standalone_mirror(client: Any, refuse: Refuse) -> Callable[[], Any]:
    pool = client.connection_pool
    pool_class = _COUNTERPART.get(type(pool))
    connection_class = _COUNTERPART.get(pool.connection_class)
    if pool_class is None or connection_class is None:
        raise refuse(
            f"it connects through a {type(pool).__name__} of {pool.connection_class.__name__}"
        )
    kwargs = pool.connection_kwargs
    settings = _portable_settings(
        kwargs, _REBUILT, _connection_parameters(connection_class), refuse
    )
    copy_retry = _retry_copier(kwargs.get("retry"), refuse)
    sizing: dict[str, Any] = {"max_connections": pool.max_connections}
    if isinstance(pool, (redis.BlockingConnectionPool, redis.asyncio.BlockingConnectionPool)):
        sizing["timeout"] = pool.timeout
    other_redis: Any = redis.asyncio.Redis if isinstance(client, redis.Redis) else redis.Redis

    def build() -> Any:
        retry = copy_retry()
        extra = {"retry": retry} if retry is not None else {}
        other_pool = pool_class(connection_class=connection_class, **sizing, **extra, **settings)
        return other_redis.from_pool(other_pool)  # the client owns the pool: close() closes it

    return build


def _cluster_mirror(client: Any, refuse: Refuse) -> Callable[[], Any]:
    to_async = isinstance(client, redis.cluster.RedisCluster)
    other_cluster: Any = (
        redis.asyncio.cluster.RedisCluster if to_async else redis.cluster.RedisCluster
    )
    other_node: Any = redis.asyncio.cluster.ClusterNode if to_async else redis.cluster.ClusterNode
    manager = client.nodes_manager
    nodes = [(node.host, node.port) for node in manager.startup_nodes.values()]
    kwargs = manager.connection_kwargs
    connection_class = kwargs.get("connection_class", _PLAIN[0] if to_async else _PLAIN[1])
    if connection_class not in _PLAIN + _SSL:
        raise refuse(f"its nodes connect through a custom {connection_class.__name__}")
    settings = _portable_settings(
        kwargs, _REBUILT_IN_CLUSTER, _named_parameters(other_cluster), refuse
    )
    options: dict[str, Any] = {"ssl": True} if connection_class in _SSL else {}
    if kwargs.get("max_connections") is not None:
        options["max_connections"] = kwargs["max_connections"]
    if getattr(client, "load_balancing_strategy", None) is not None:
        options["load_balancing_strategy"] = client.load_balancing_strategy
    elif getattr(client, "read_from_replicas", False):
        options["read_from_replicas"] = True
    if getattr(manager, "address_remap", None) is not None:
        options["address_remap"] = manager.address_remap
    copy_retry = _retry_copier(getattr(client, "retry", None), refuse)

    def build() -> Any:
        retry = copy_retry()
        extra = {"retry": retry} if retry is not None else {}
        startup = [other_node(host, port) for host, port in nodes]
        return other_cluster(startup_nodes=startup, **options, **extra, **settings)

    return build


@overload
def mirror_client(client: SyncRedisClient, face: str = ...) -> Callable[[], AsyncRedisClient]: ...
@overload
def mirror_client(client: AsyncRedisClient, face: str = ...) -> Callable[[], SyncRedisClient]: ...
def mirror_client(
    client: SyncRedisClient | AsyncRedisClient, face: str = "this cache"
) -> Callable[[], Any]:
    """A factory of the other side's client (asyncio for a sync one, and back) on the same
    server with the same connection settings: host, port or socket path, db, credentials, TLS,
    timeouts, retry policy, pool size; a cluster's known nodes.

    The settings are read and checked now, the client is built by each call (a sync cluster
    client connects as it is built). Raises :class:`ConfigurationError`, naming ``face`` and the
    fix, for a client that cannot be mirrored.
    """
    refuse = _refusal(client, face)
    if isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)):
        return _cluster_mirror(client, refuse)
    return _standalone_mirror(client, refuse)


def _async_side(engine: CacheEngine, face: str) -> Callable[[], AsyncSide]:
    """How to build ``engine``'s async twin, and what closes what was built for it."""
    if engine.owns_client:

        def from_settings() -> AsyncSide:
            twin = engine.async_twin()
            return twin, twin.aclose

        return from_settings
    build_client = mirror_client(engine.client, face)

    def from_client() -> AsyncSide:
        client = build_client()
        return engine.async_twin(client), client.aclose

    return from_client


def _sync_side(engine: AsyncCacheEngine, face: str) -> Callable[[], SyncSide]:
    """How to build the sync driver of ``engine``'s core, and what closes what was built."""
    if engine.owns_client:

        def from_settings() -> SyncSide:
            twin = CacheEngine(engine.core.settings, core=engine.core)
            return twin, twin.close

        return from_settings
    build_client = mirror_client(engine.client, face)

    def from_client() -> SyncSide:
        client = build_client()
        return CacheEngine(client, core=engine.core), client.close

    return from_client


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class EngineOwner:
    """Holds a face's engines on one core: the one it was given or built from ``target``, and
    the other side derived on first use (see the module docstring).

    ``face`` names the face in error messages.
    """

    def __init__(
        self,
        target: str | Settings | SyncRedisClient | AsyncRedisClient | None,
        engine: CacheEngine | None,
        async_engine: AsyncCacheEngine | None,
        options: CoreOptions,
        *,
        face: str = "this cache",
    ) -> None:
        if (engine is not None or async_engine is not None) and (target is not None or options):
            raise TypeError(
                "pass either engine=/async_engine= or a target and engine options, not both"
            )
        self._lock = threading.Lock()
        self._engine = engine
        self._async_engine = async_engine
        # What close() closes: only what this face built or derived, never what was passed in.
        self._close_sync: Callable[[], None] | None = None
        if engine is None and async_engine is None:
            if isinstance(target, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)):
                self._async_engine = AsyncCacheEngine(target, **options)
            else:
                self._engine = CacheEngine(target, **options)
                self._close_sync = self._engine.close
        # Decided (and a client checked) now, built on first use.
        self._derive_sync: Callable[[], SyncSide] | None = None
        self._derive_async: Callable[[], AsyncSide] | None = None
        if self._async_engine is None and self._engine is not None:
            self._derive_async = _async_side(self._engine, face)
        elif self._engine is None and self._async_engine is not None:
            self._derive_sync = _sync_side(self._async_engine, face)
        # Keyed by loop, not weakly: a client's connections hold their loop anyway. A closed
        # loop's entry is dropped when another loop adds one, so they do not pile up.
        self._async_by_loop: dict[asyncio.AbstractEventLoop, AsyncSide] = {}
        # Derived outside any event loop (e.g. to read its stats); the first loop adopts it.
        self._async_unbound: AsyncSide | None = None

    @property
    def core(self) -> CacheCore:
        """The one core both engines share."""
        given = self._engine if self._engine is not None else self._async_engine
        assert given is not None  # __init__ sets at least one
        return given.core

    @property
    def engine(self) -> CacheEngine:
        engine = self._engine
        if engine is None:
            with self._lock:
                engine = self._engine
                if engine is None:
                    assert self._derive_sync is not None
                    engine, self._close_sync = self._derive_sync()
                    self._engine = engine
        return engine

    @property
    def async_engine(self) -> AsyncCacheEngine:
        if self._derive_async is None:
            assert self._async_engine is not None
            return self._async_engine
        loop = _running_loop()
        with self._lock:
            if loop is None:
                if self._async_unbound is None:
                    self._async_unbound = self._derive_async()
                return self._async_unbound[0]
            side = self._async_by_loop.get(loop)
            if side is None:
                self._forget_closed_loops()
                side = self._async_unbound or self._derive_async()
                self._async_unbound = None
                self._async_by_loop[loop] = side
            return side[0]

    def _forget_closed_loops(self) -> None:
        # Their clients cannot be awaited any more; the sockets go with the objects.
        for loop in [loop for loop in self._async_by_loop if loop.is_closed()]:
            del self._async_by_loop[loop]

    def close(self) -> None:
        """Close the sync client this face built or derived (a client passed in stays open)."""
        if self._close_sync is not None:
            self._close_sync()

    async def aclose(self) -> None:
        """Close every client this face built or derived: the async one of this event loop and
        the sync one. Async clients of loops already closed are dropped: they cannot be awaited."""
        loop = _running_loop()
        with self._lock:
            sides = [self._async_unbound]
            self._async_unbound = None
            if loop is not None:
                sides.append(self._async_by_loop.pop(loop, None))
            self._forget_closed_loops()
        for side in sides:
            if side is not None:
                await side[1]()
        self.close()


class UsesEngines:
    """What every face offers about its engines; the face's ``__init__`` sets ``_engines``."""

    _engines: EngineOwner

    @property
    def engine(self) -> CacheEngine:
        return self._engines.engine

    @property
    def async_engine(self) -> AsyncCacheEngine:
        return self._engines.async_engine

    def close(self) -> None:
        """Close the sync client this face created or derived (never a client passed in)."""
        self._engines.close()

    async def aclose(self) -> None:
        """Close every client this face created or derived (never a client passed in)."""
        await self._engines.aclose()
