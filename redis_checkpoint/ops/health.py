"""HealthMonitor: pings Redis on an interval, drives the breakers' recovery, records the server.

Every ``interval`` seconds (30 by default) one check:

1. PINGs Redis on the monitor's own client and reads ``INFO`` (round-trip time, ``used_memory``,
   ``maxmemory``, ``evicted_keys``, ``maxmemory_policy``) into the ``redis_*`` gauges;
2. probes each registered component (savers, cache engines, the faces built on an engine,
   stores) through the component's *own* client: an answer closes its breaker at once - without
   waiting for the next caller or the breaker's recovery timeout - and flushes its fallback
   tier (the saver writes back the threads it took in memory; the cache replays queued
   invalidations and empties its memory tier); a connection error counts as a breaker failure,
   so an idle application learns of an outage before its next request does; a refused password
   or ACL (:class:`~redis_checkpoint.RedisAuthError`) is no outage: the report's status is then
   ``auth_failed`` and its ``error`` names the cause (a store's probe writes back the writes
   an outage left owed; a store that does not answer makes the report ``degraded``);
3. optionally samples the keyspace (``keyspace_sample`` keys at most) into
   ``cache_memory_usage_bytes{tier="redis"}`` and ``cache_keys``, and publishes what each
   fallback tier holds as ``cache_memory_usage_bytes{tier="memory"}``.

Run it in a thread (:meth:`HealthMonitor.start`) next to sync code, or as a task
(:meth:`HealthMonitor.astart`, or ``async with``) in an asyncio application; :meth:`check` and
:meth:`acheck` run one check now. The sync monitor probes sync components only (an asyncio
component's client belongs to its event loop); the asyncio one probes both kinds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine
from redis_checkpoint.checkpoint.aio import AsyncRedisSaver
from redis_checkpoint.checkpoint.base import RedisSaverBase
from redis_checkpoint.checkpoint.saver import RedisSaver
from redis_checkpoint.client import create_async_client, create_client, describe_client
from redis_checkpoint.errors import ConfigurationError, RedisAuthError
from redis_checkpoint.failures import access_error
from redis_checkpoint.metrics import Metrics, get_metrics
from redis_checkpoint.ops.keyspace import (
    KeyspaceSample,
    ServerFacts,
    keyspace_plan,
    server_facts_plan,
)
from redis_checkpoint.ops.plan import run_async, run_sync
from redis_checkpoint.settings import Settings
from redis_checkpoint.steps import Plan
from redis_checkpoint.store.store import AsyncRedisStore, RedisStore

__all__ = ["ComponentHealth", "HealthMonitor", "HealthReport", "Monitored"]

log = logging.getLogger("redis_checkpoint.ops")

Engine = CacheEngine | AsyncCacheEngine
Saver = RedisSaver | AsyncRedisSaver
_STORES = (RedisStore, AsyncRedisStore)


@dataclass
class ComponentHealth:
    name: str
    kind: str  # "checkpoint", "cache" or "store"
    breaker: str  # "closed", "open" or "half_open"
    serving_from_memory: bool
    pending: int  # writes (saver threads) or invalidations (cache) waiting for Redis
    memory_bytes: int
    probed: bool
    reachable: bool | None  # what the probe saw; None when not probed
    error: str | None = None  # why Redis refused the probe (RedisAuthError), if it did

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class HealthReport:
    """The outcome of one check. ``status``: ``ok``, ``degraded`` (Redis answers the monitor
    but a component still serves from memory, or holds writes Redis has not taken yet, e.g.
    under ``maxmemory``, or a store does not answer its probe), ``auth_failed`` (Redis refused
    the monitor's or a component's password, or its ACL forbids what they run: ``reason`` is
    the RedisAuthError's and ``error`` its message) or ``down``."""

    status: str
    checked_at: float
    redis: dict[str, Any]
    error: str | None = None
    components: list[ComponentHealth] = field(default_factory=list)
    keyspace: dict[str, Any] | None = None
    reason: str | None = None

    @property
    def up(self) -> bool:
        """Redis answers and takes our credentials (``ok`` or ``degraded``)."""
        return self.status in ("ok", "degraded")

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "checked_at": self.checked_at,
            "redis": self.redis,
            "error": self.error,
            "components": [c.as_dict() for c in self.components],
            "keyspace": self.keyspace,
            "reason": self.reason,
        }


class Monitored:
    """A component as the monitor sees it: its breaker, its fallback tier and its probe."""

    def __init__(self, component: Any, name: str | None = None) -> None:
        target = component
        if not isinstance(target, (RedisSaverBase, CacheEngine, AsyncCacheEngine, *_STORES)):
            target = getattr(component, "engine", None)  # a face: LLMCache, NodeCache, ...
        if isinstance(target, RedisSaverBase):
            self.kind = "checkpoint"
        elif isinstance(target, (CacheEngine, AsyncCacheEngine)):
            self.kind = "cache"
        elif isinstance(target, _STORES):
            self.kind = "store"
        else:
            raise ConfigurationError(
                f"cannot monitor {type(component).__name__}: pass a RedisSaver, AsyncRedisSaver, "
                "CacheEngine, AsyncCacheEngine, a face built on an engine, RedisStore or "
                "AsyncRedisStore"
            )
        self.target = target
        self.name = name or f"{self.kind}:{type(component).__name__}"
        self.is_async = isinstance(target, (AsyncRedisSaver, AsyncCacheEngine, AsyncRedisStore))

    @property
    def where(self) -> str:
        """The component's Redis, password hidden, for messages."""
        target = self.target
        if isinstance(target, _STORES):
            return describe_client(target.client)
        return target.url if isinstance(target, RedisSaverBase) else target.core.where

    @property
    def key(self) -> int:
        """Faces sharing an engine share one breaker: probe it once."""
        core = getattr(self.target, "core", None)
        return id(core if self.kind == "cache" else self.target)

    def sync_probe(self) -> Callable[[], bool] | None:
        target = self.target
        if isinstance(target, (RedisSaver, CacheEngine, RedisStore)):
            return target.ping
        return None

    def async_probe(self) -> Callable[[], Awaitable[bool]]:
        target = self.target
        if isinstance(target, AsyncRedisSaver):
            return target.aping
        if isinstance(target, AsyncCacheEngine):
            return target.ping
        if isinstance(target, AsyncRedisStore):
            return target.ping
        probe = self.sync_probe()
        assert probe is not None  # every sync component has one
        return lambda: asyncio.to_thread(probe)

    def health(
        self, probed: bool, reachable: bool | None, error: str | None = None
    ) -> ComponentHealth:
        target = self.target
        state: str
        if isinstance(target, _STORES):
            state = target.core.breaker.state
            pending = target.core.owed
            size = 0  # its snapshots are a cache of Redis, not a fallback store of their own
        elif isinstance(target, RedisSaverBase):
            # On a cluster: the worst of the per-primary breakers (saver.breaker is only the
            # template they are made from).
            state = target.breaker_state
            pending = target.memory.pending if target.memory is not None else 0
            size = target.memory.size if target.memory is not None else 0
        else:
            state = target.core.breaker.state
            pending = target.core.pending_invalidations
            size = target.core.memory.size_bytes if target.core.memory is not None else 0
        return ComponentHealth(
            self.name,
            self.kind,
            state,
            state != "closed",
            pending,
            size,
            probed,
            reachable,
            error,
        )

    def memory_by_type(self) -> dict[str, int]:
        """Bytes the fallback tier holds, per cache type."""
        target = self.target
        if isinstance(target, _STORES):
            return {"store": 0}  # the store's snapshots are a cache of what Redis holds
        if isinstance(target, RedisSaverBase):
            return {"checkpoint": target.memory.size if target.memory is not None else 0}
        core = target.core
        sizes: dict[str, int] = {t: 0 for t in core.stats.namespaces().values()}
        if core.memory is not None:
            by_base = core.memory.bytes_by_base()
            for namespace, cache_type in core.stats.namespaces().items():
                sizes[cache_type] += by_base.get(core.layout.base(namespace), 0)
        return sizes


def _degraded(health: ComponentHealth) -> bool:
    """Redis answers the monitor, but the component serves from memory, holds writes Redis has
    not taken, or (a store) did not answer its probe."""
    if health.kind == "store" and health.reachable is False:
        return True
    return health.serving_from_memory or bool(health.pending)


def _probe_failed(monitored: Monitored, exc: Exception) -> bool | RedisAuthError:
    denied = access_error(exc, monitored.where)
    if denied is not None:
        log.error("health probe of %s: %s", monitored.name, denied)
        return denied
    log.warning("health probe of %s failed: %r", monitored.name, exc)
    return False


@dataclass
class _Probe:
    """A step of the check: probe this component (the driver replies with True/False, or the
    RedisAuthError the probe raised)."""

    monitored: Monitored


class HealthMonitor:
    """Checks Redis and the registered components every ``interval`` seconds.

    ``target``: a URL, :class:`Settings` or ``None`` (REDIS_URL); the monitor opens its own
    small client for PING and INFO. ``keyspace_sample``: keys to sample per check for the
    ``cache_memory_usage_bytes{tier="redis"}`` gauges (0: don't scan).
    """

    def __init__(
        self,
        target: str | Settings | None = None,
        *,
        components: Iterable[Any] = (),
        interval: float = 30.0,
        metrics: Metrics | None = None,
        keyspace_sample: int = 0,
        settings: Settings | None = None,
    ) -> None:
        if interval <= 0:
            raise ConfigurationError(f"interval={interval!r} must be > 0 seconds")
        if keyspace_sample < 0:
            raise ConfigurationError(f"keyspace_sample={keyspace_sample!r} must be >= 0")
        if isinstance(target, Settings):
            self.settings = target
        elif settings is not None:
            self.settings = settings.replace(url=target) if target else settings
        else:
            self.settings = Settings.from_env(url=target)
        self.interval = interval
        self.metrics = metrics or get_metrics()
        self.keyspace_sample = keyspace_sample
        self.components: list[Monitored] = []
        self.last_report: HealthReport | None = None
        self._client: Any = None
        self._async_client: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        for component in components:
            self.add(component)

    def add(self, component: Any, name: str | None = None) -> Monitored:
        """Watch a saver, an engine, a face or a store; returns how the monitor sees it."""
        monitored = Monitored(component, name)
        self.components.append(monitored)
        return monitored

    # -- one check -----------------------------------------------------------------------------

    def _check(self, probe_async: bool) -> Plan[HealthReport]:
        checked_at = time.time()
        facts: ServerFacts | None = None
        error: str | None = None
        denied: RedisAuthError | None = None
        try:
            facts = yield from server_facts_plan()
        except ConfigurationError:
            raise  # not "down": waiting will not fix a wrong db or cluster flag
        except Exception as exc:
            denied = access_error(exc, self.settings.redacted_url())
            error = str(denied) if denied is not None else f"{type(exc).__name__}: {exc}"
        self.metrics.health_check(
            facts is not None,
            None if facts is None else facts.ping_ms / 1000,
            None if facts is None else facts.info,
        )
        healths: list[ComponentHealth] = []
        probed: dict[int, bool | RedisAuthError] = {}
        for monitored in self.components:
            can_probe = probe_async or not monitored.is_async
            if can_probe and monitored.key not in probed:
                outcome = yield _Probe(monitored)
                refused = outcome if isinstance(outcome, RedisAuthError) else None
                probed[monitored.key] = refused or bool(outcome)
            seen = probed.get(monitored.key) if can_probe else None
            if isinstance(seen, RedisAuthError):
                if denied is None:
                    denied, error = seen, str(seen)
                healths.append(monitored.health(can_probe, False, str(seen)))
            else:
                healths.append(monitored.health(can_probe, seen))
        self._publish_memory_tiers()
        keyspace: KeyspaceSample | None = None
        if facts is not None and self.keyspace_sample:
            try:
                keyspace = yield from self._keyspace_plan()
                self._publish_keyspace(keyspace)
            except Exception as exc:  # MEMORY or SCAN refused (managed Redis): skip, say so
                log.warning("keyspace sample failed: %r", exc)
        status = "down" if facts is None else "ok"
        if denied is not None:
            status = "auth_failed"  # not an outage: fixing the password or the ACL is the cure
        elif status == "ok" and any(_degraded(h) for h in healths):
            status = "degraded"
        report = HealthReport(
            status,
            checked_at,
            facts.as_dict() if facts is not None else {"url": self.settings.redacted_url()},
            error,
            healths,
            keyspace.as_dict() if keyspace is not None else None,
            denied.reason if denied is not None else None,
        )
        if self.last_report is not None and self.last_report.status != status:
            log.warning("Redis health: %s -> %s", self.last_report.status, status)
        self.last_report = report
        return report

    def _keyspace_plan(self) -> Any:
        targets = [monitored.target for monitored in self.components]
        return keyspace_plan_of(targets, self.settings, self.keyspace_sample)

    def _publish_memory_tiers(self) -> None:
        totals: dict[str, int] = {}
        for monitored in self.components:
            for cache_type, size in monitored.memory_by_type().items():
                totals[cache_type] = totals.get(cache_type, 0) + size
        for cache_type, size in totals.items():
            self.metrics.memory_usage(cache_type, "memory", size)

    def _publish_keyspace(self, sample: KeyspaceSample) -> None:
        for cache_type, entry in sample.by_type.items():
            self.metrics.memory_usage(cache_type, "redis", entry["bytes"])
            self.metrics.cache_keys.labels(cache_type).set(entry["keys"])

    def check(self) -> HealthReport:
        """Run one check now on the sync client (probes the sync components)."""
        if self._client is None:
            self._client = create_client(self.settings)
        return run_sync(
            self._client,
            self._check(probe_async=False),
            lambda step: self._probe_sync(step.monitored),
        )

    async def acheck(self) -> HealthReport:
        """Run one check now on an asyncio client (probes every component)."""
        if self._async_client is None:
            self._async_client = create_async_client(self.settings)
        return await run_async(
            self._async_client,
            self._check(probe_async=True),
            lambda step: self._probe_async(step.monitored),
        )

    # The probes never raise: a probe that fails is an unreachable Redis, unless Redis refused
    # the component's credentials (returned, for the report to name).
    @staticmethod
    def _probe_sync(monitored: Monitored) -> bool | RedisAuthError:
        probe = monitored.sync_probe()
        try:
            return bool(probe()) if probe is not None else False
        except Exception as exc:
            return _probe_failed(monitored, exc)

    @staticmethod
    async def _probe_async(monitored: Monitored) -> bool | RedisAuthError:
        try:
            return bool(await monitored.async_probe()())
        except Exception as exc:
            return _probe_failed(monitored, exc)

    # -- running on an interval ----------------------------------------------------------------

    def start(self) -> HealthMonitor:
        """Check now and then every ``interval`` seconds in a daemon thread."""
        asyncio_components = [m.name for m in self.components if m.is_async]
        if asyncio_components:
            raise ConfigurationError(
                f"{asyncio_components} run on an event loop: start the monitor there with "
                "`await monitor.astart()` (or `async with monitor:`)"
            )
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="redis-health", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # a bug in a check must not end the monitoring
                log.exception("health check failed")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._client is not None:
            self._client.close()
            self._client = None

    async def astart(self) -> HealthMonitor:
        """Check now and then every ``interval`` seconds in a task on the running loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._aloop())
        return self

    async def _aloop(self) -> None:
        while True:
            try:
                await self.acheck()
            except Exception:
                log.exception("health check failed")
            await asyncio.sleep(self.interval)

    async def astop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    async def __aenter__(self) -> HealthMonitor:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def __enter__(self) -> HealthMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def keyspace_plan_of(targets: Sequence[Any], settings: Settings, max_keys: int) -> Any:
    """The keyspace sample of these savers, engines, faces and stores (their prefixes and the
    cache types of their namespaces); with none, of the settings' default prefixes."""
    checkpoint_prefixes: list[str] = []
    cache_prefixes: list[str] = []
    store_prefixes: list[str] = []
    types: dict[str, str] = {}
    for target in targets:
        if isinstance(target, RedisSaverBase):
            checkpoint_prefixes.append(target.core.layout.prefix)
        elif isinstance(target, _STORES):
            store_prefixes.append(target.core.layout.prefix)
        else:
            cache_prefixes.append(target.core.layout.prefix)
            types.update(target.core.stats.namespaces())
    if not targets:
        checkpoint_prefixes = [settings.key_prefix]
        cache_prefixes = [f"{settings.key_prefix}:cache"]
        store_prefixes = [settings.key_prefix]
    return keyspace_plan(
        checkpoint_prefixes,
        cache_prefixes,
        max_keys=max_keys,
        namespace_types=types,
        store_prefixes=store_prefixes,
    )
