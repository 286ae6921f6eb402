r"""The management API: an ASGI app (Starlette) to mount in any ASGI application.

::

    app.mount("/cache", create_management_app(saver=saver, engine=engine, store=store,
                                              token=READ_TOKEN, admin_token=ADMIN_TOKEN))
    # FastAPI, with the routes in the app's OpenAPI schema:
    app.include_router(create_management_router(...), prefix="/cache")

=========================  ======  ======================================================
route                      token   what it does
=========================  ======  ======================================================
GET /health                none    ``ok``/``degraded`` (200) or ``down`` (503), breakers
GET /stats                 read    per cache type: hits, misses, ratio, p50/p95/p99, keys,
                                   bytes in Redis and in the fallback tier; the server
GET /metrics               read    the Prometheus exposition of the metrics' registry
GET /threads               read    thread ids (``?offset=&limit=``)
GET /threads/{id}          read    a thread's checkpoints, newest first (``?limit=``)
DELETE /threads/{id}       admin   delete a thread
GET /store/namespaces      read    the store's namespaces with their item counts
                                   (``?prefix=a.b&limit=``; a prefix matching none: 404)
POST /invalidate           admin   ``{"namespace": ..., "key"|"keys"|"tag"|"tags": ...}``;
                                   a namespace alone clears it
POST /warm/{name}          admin   run the warmer registered as ``name`` with the JSON body
POST /test                 admin   write, read and delete a probe entry/checkpoint
=========================  ======  ======================================================

Tokens travel as ``Authorization: Bearer <token>`` and are compared in constant time; a missing
or wrong token is a bare 401. The admin token also opens the read routes. Without an admin token
the admin routes answer 403. A body that is not what the route takes is a 400 that says why; a
route that needs Redis while it is unreachable (listing threads) is a 503. A namespace prefix
is its labels joined by ``.`` (``\.`` for a dot inside a label); namespaces come back as lists
of labels, as they were written.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import inspect
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from langgraph.checkpoint.base import empty_checkpoint

from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine
from redis_checkpoint.checkpoint.aio import AsyncRedisSaver
from redis_checkpoint.checkpoint.base import RedisSaverBase
from redis_checkpoint.checkpoint.saver import RedisSaver
from redis_checkpoint.client import create_async_client, describe_client
from redis_checkpoint.errors import (
    ConfigurationError,
    CorruptEntryError,
    RedisAuthError,
    RedisUnavailableError,
)
from redis_checkpoint.failures import access_error, is_unavailable_error
from redis_checkpoint.metrics import Metrics, get_metrics
from redis_checkpoint.ops.health import HealthMonitor, HealthReport, keyspace_plan_of
from redis_checkpoint.ops.keyspace import (
    missing_namespace_message,
    missing_namespace_plan,
)
from redis_checkpoint.ops.namespaces import (
    missing_store_prefix_message,
    parse_namespace,
    store_namespaces_plan,
)
from redis_checkpoint.ops.plan import run_async, run_sync
from redis_checkpoint.ops.threads import summarize
from redis_checkpoint.settings import Settings
from redis_checkpoint.store.store import AsyncRedisStore, RedisStore

if TYPE_CHECKING:
    from fastapi import APIRouter
    from typing_extensions import Unpack

try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - the asgi extra is missing
    raise ImportError(
        "the management API needs Starlette: pip install 'redis-checkpoint[asgi]'"
    ) from exc

__all__ = ["ManagementAPI", "create_management_app", "create_management_router"]

Warmer = Callable[[dict[str, Any]], Any]
Handler = Callable[[Request], Awaitable[Response]]
MAX_BODY = 64 * 1024


class BadRequest(Exception):
    """The request's body or parameters are not what the route takes (a 400)."""


@dataclass(frozen=True)
class _RouteSpec:
    path: str
    method: str
    handler: str
    access: str  # "public", "read" or "admin"
    summary: str
    body: dict[str, Any] | None = None


ROUTES: tuple[_RouteSpec, ...] = (
    _RouteSpec("/health", "GET", "health", "public", "Redis and breaker health"),
    _RouteSpec("/stats", "GET", "stats", "read", "Statistics per cache type"),
    _RouteSpec("/metrics", "GET", "metrics_route", "read", "Prometheus metrics"),
    _RouteSpec("/threads", "GET", "threads", "read", "List the saver's threads"),
    # ":path": a thread id may hold "/" (sent as is or as %2F) or be empty ("/threads/").
    _RouteSpec("/threads/{thread_id:path}", "GET", "thread", "read", "A thread's checkpoints"),
    _RouteSpec("/threads/{thread_id:path}", "DELETE", "delete_thread", "admin", "Delete a thread"),
    _RouteSpec("/store/namespaces", "GET", "store_namespaces", "read", "The store's namespaces"),
    _RouteSpec(
        "/invalidate",
        "POST",
        "invalidate",
        "admin",
        "Invalidate cache entries by key, tag or namespace",
        {
            "type": "object",
            "required": ["namespace"],
            "properties": {
                "namespace": {"type": "string"},
                "key": {"type": "string"},
                "keys": {"type": "array", "items": {"type": "string"}},
                "tag": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        },
    ),
    _RouteSpec(
        "/warm/{name}",
        "POST",
        "warm",
        "admin",
        "Run a registered cache warmer",
        {"type": "object", "additionalProperties": True},
    ),
    _RouteSpec("/test", "POST", "self_test", "admin", "Round-trip self test"),
)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


async def _in_thread_unless_async(function: Callable[..., Any], *args: Any) -> Any:
    if inspect.iscoroutinefunction(function):
        return await function(*args)
    return await asyncio.to_thread(function, *args)


class ManagementAPI:
    """The state and handlers behind :func:`create_management_app` and
    :func:`create_management_router`."""

    def __init__(
        self,
        *,
        saver: RedisSaverBase | None = None,
        engine: CacheEngine | AsyncCacheEngine | None = None,
        token: str | None = None,
        admin_token: str | None = None,
        monitor: HealthMonitor | None = None,
        warmers: Mapping[str, Warmer] | None = None,
        metrics: Metrics | None = None,
        settings: Settings | None = None,
        keyspace_sample: int = 10_000,
        store: RedisStore | AsyncRedisStore | None = None,
    ) -> None:
        token = token if token is not None else os.environ.get("REDIS_CHECKPOINT_TOKEN")
        if admin_token is None:
            admin_token = os.environ.get("REDIS_CHECKPOINT_ADMIN_TOKEN")
        if not token:
            raise ConfigurationError(
                "the management API needs a bearer token: token=... or REDIS_CHECKPOINT_TOKEN"
            )
        if admin_token is not None and (not admin_token or admin_token == token):
            raise ConfigurationError("admin_token must be non-empty and differ from token")
        engine = getattr(engine, "engine", engine)  # a face: use its engine
        if engine is not None and not isinstance(engine, (CacheEngine, AsyncCacheEngine)):
            raise ConfigurationError(f"engine={engine!r} is not a CacheEngine or a face on one")
        if store is not None and not isinstance(store, (RedisStore, AsyncRedisStore)):
            raise ConfigurationError(f"store={store!r} is not a RedisStore or AsyncRedisStore")
        self.saver = saver
        self.engine = engine
        self.store = store
        self.token = token
        self.admin_token = admin_token
        self.metrics = metrics or get_metrics()
        self.settings = settings or (
            engine.core.settings
            if engine is not None
            else saver.settings
            if saver is not None
            else Settings.from_env()
        )
        components = [c for c in (saver, engine, store) if c is not None]
        self._owns_monitor = monitor is None
        self.monitor = monitor or HealthMonitor(
            self.settings, components=components, metrics=self.metrics
        )
        self.warmers: dict[str, Warmer] = dict(warmers or {})
        self.keyspace_sample = keyspace_sample
        self._client: Any = None

    async def aclose(self) -> None:
        """Close the API's own Redis clients (the monitor's, unless it was passed in, and the
        keyspace sampler's). Call it from the host application's shutdown."""
        if self._owns_monitor:
            await self.monitor.astop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def add_warmer(self, name: str, warmer: Warmer) -> None:
        """Register ``warmer(params)`` (sync or async) as ``POST /warm/<name>``."""
        if not name or "/" in name:
            raise ConfigurationError(f"warmer name {name!r} must be non-empty, without '/'")
        self.warmers[name] = warmer

    # -- the ASGI plumbing -----------------------------------------------------------------------

    def _guard(self, spec: _RouteSpec) -> Handler:
        handler: Handler = getattr(self, spec.handler)

        async def endpoint(request: Request) -> Response:
            if spec.access != "public":
                denied = self._authorize(request, spec.access)
                if denied is not None:
                    return denied
            try:
                return await handler(request)
            except BadRequest as exc:
                return _error(400, str(exc))
            except (RedisUnavailableError, RedisAuthError) as exc:
                # Cross-thread operations need Redis (and its consent); the message names the
                # cause, never a password.
                return _error(503, str(exc))

        endpoint.__name__ = spec.handler
        endpoint.__doc__ = spec.summary
        return endpoint

    def _authorize(self, request: Request, access: str) -> Response | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and bool(given)
        admin = ok and self.admin_token is not None and _same(given, self.admin_token)
        if access == "admin":
            if admin:
                return None
            if self.admin_token is None and ok and _same(given, self.token):
                return _error(403, "admin routes are disabled: no admin token is configured")
        elif admin or (ok and _same(given, self.token)):
            return None
        return _error(401, "unauthorized", {"WWW-Authenticate": "Bearer"})

    def routes(self) -> list[Route]:
        return [
            Route(spec.path, self._guard(spec), methods=[spec.method], name=spec.handler)
            for spec in ROUTES
        ]

    # -- helpers ---------------------------------------------------------------------------------

    async def _json_body(self, request: Request, required: bool = True) -> dict[str, Any]:
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise BadRequest(f"the body is larger than {MAX_BODY} bytes")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise BadRequest(f"the body is larger than {MAX_BODY} bytes")
        if not raw.strip():
            if required:
                raise BadRequest("the body must be a JSON object")
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest(f"the body must be a JSON object, not {type(body).__name__}")
        return body

    @staticmethod
    def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"{name}={raw!r} must be an integer") from None
        if not 0 <= value <= maximum:
            raise BadRequest(f"{name}={value} must be between 0 and {maximum}")
        return value

    def _need_saver(self) -> RedisSaverBase:
        if self.saver is None:
            raise BadRequest("no checkpoint saver is configured on this management API")
        return self.saver

    def _need_store(self) -> RedisStore | AsyncRedisStore:
        if self.store is None:
            raise BadRequest("no store is configured on this management API")
        return self.store

    def _need_engine(self) -> CacheEngine | AsyncCacheEngine:
        if self.engine is None:
            raise BadRequest("no cache engine is configured on this management API")
        return self.engine

    async def _report(self, max_age: float = 1.0) -> HealthReport:
        """A fresh health report; reused for ``max_age`` s so /health cannot be used to flood
        Redis with probes."""
        last = self.monitor.last_report
        if last is not None and time.time() - last.checked_at < max_age:
            return last
        return await self.monitor.acheck()

    def _redis_client(self) -> Any:
        if self._client is None:
            self._client = create_async_client(self.settings)
        return self._client

    # -- the routes ------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        report = await self._report()
        body = {
            "status": report.status,
            "checked_at": report.checked_at,
            "components": [
                {"name": c.name, "breaker": c.breaker, "serving_from_memory": c.serving_from_memory}
                for c in report.components
            ],
        }
        if report.reason is not None:
            # Public route: the cause, not the message (it names hosts and users).
            body["reason"] = report.reason
        return JSONResponse(body, status_code=200 if report.up else 503)

    async def stats(self, request: Request) -> Response:
        report = await self._report()
        by_type: dict[str, dict[str, Any]] = self.metrics.summary()
        for component in self.monitor.components:
            for cache_type, size in component.memory_by_type().items():
                entry = by_type.setdefault(cache_type, {})
                entry["fallback_bytes"] = entry.get("fallback_bytes", 0) + size
        keyspace: dict[str, Any] | None = None
        if report.up and self.keyspace_sample:
            sample = await run_async(self._redis_client(), self._keyspace_plan())
            keyspace = sample.as_dict()
            for cache_type, entry in sample.by_type.items():
                counted = {k: v for k, v in entry.items() if k in ("namespaces", "items")}
                by_type.setdefault(cache_type, {}).update(
                    {"keys": entry["keys"], "redis_bytes": entry["bytes"], **counted}
                )
            for entry in by_type.values():  # seen in this process, nothing in Redis
                if "keys" not in entry:
                    entry.update(
                        dict.fromkeys(("keys", "redis_bytes"), 0 if sample.complete else None)
                    )
        namespaces = {}
        if self.engine is not None:
            namespaces = {ns: s.as_dict() for ns, s in self.engine.stats().items()}
        return JSONResponse(
            {
                "status": report.status,
                "redis": report.redis,
                "cache_types": dict(sorted(by_type.items())),
                "namespaces": namespaces,
                "keyspace": keyspace,
                "components": [c.as_dict() for c in report.components],
            }
        )

    def _keyspace_plan(self) -> Any:
        targets = [c for c in (self.saver, self.engine, self.store) if c is not None]
        return keyspace_plan_of(targets, self.settings, self.keyspace_sample)

    async def metrics_route(self, request: Request) -> Response:
        data, content_type = self.metrics.exposition()
        return Response(data, media_type=content_type)

    async def threads(self, request: Request) -> Response:
        saver = self._need_saver()
        offset = self._int_param(request, "offset", 0, 10**9)
        limit = self._int_param(request, "limit", 100, 1000)
        if isinstance(saver, AsyncRedisSaver):
            ids = list(await saver.alist_threads())
        elif isinstance(saver, RedisSaver):
            ids = list(await asyncio.to_thread(saver.list_threads))
        else:
            raise BadRequest(f"{type(saver).__name__} cannot list threads")
        return JSONResponse(
            {"total": len(ids), "offset": offset, "threads": ids[offset : offset + limit]}
        )

    async def thread(self, request: Request) -> Response:
        saver = self._need_saver()
        thread_id = request.path_params["thread_id"]
        limit = self._int_param(request, "limit", 20, 1000)
        config: Any = {"configurable": {"thread_id": thread_id}}
        history = [summarize(t) async for t in saver.alist(config, limit=limit or None)]
        if not history:
            return _error(404, f"thread {thread_id!r} has no checkpoints")
        return JSONResponse({"thread_id": thread_id, "checkpoints": history})

    async def delete_thread(self, request: Request) -> Response:
        saver = self._need_saver()
        thread_id = request.path_params["thread_id"]
        config: Any = {"configurable": {"thread_id": thread_id}}
        try:
            existed = await saver.aget_tuple(config) is not None
        except CorruptEntryError:
            existed = True  # damaged, but there: deleting it is how to be rid of it
        await saver.adelete_thread(thread_id)
        return JSONResponse({"thread_id": thread_id, "deleted": existed})

    async def store_namespaces(self, request: Request) -> Response:
        store = self._need_store()
        spelled = request.query_params.get("prefix", "")
        try:
            prefix = parse_namespace(spelled, ".")
        except ConfigurationError as exc:
            raise BadRequest(str(exc)) from None
        limit = self._int_param(request, "limit", 100, 1000)
        key_prefix = store.core.layout.prefix
        plan = store_namespaces_plan(key_prefix, prefix, limit=limit)
        try:
            if isinstance(store, AsyncRedisStore):
                listing = await run_async(store.client, plan)
            else:
                listing = await asyncio.to_thread(run_sync, store.client, plan)
        except Exception as exc:
            # Named as the store names them (a 503 either way), never with a password.
            where = describe_client(store.client)
            denied = access_error(exc, where)
            if denied is not None:
                raise denied from exc
            if is_unavailable_error(exc):
                raise RedisUnavailableError(f"Redis at {where} is unavailable") from exc
            raise
        if listing.missing:
            return _error(404, missing_store_prefix_message(spelled, key_prefix, listing.held, "."))
        return JSONResponse(listing.as_dict())

    async def invalidate(self, request: Request) -> Response:
        engine = self._need_engine()
        body = await self._json_body(request)
        namespace = body.get("namespace")
        if not isinstance(namespace, str) or not namespace:
            raise BadRequest('"namespace" (a non-empty string) is required')
        unknown = sorted(set(body) - {"namespace", "key", "keys", "tag", "tags"})
        if unknown:
            raise BadRequest(f"unknown fields {unknown}; use key(s) or tag(s), or none")
        keys = _strings(body, "key", "keys")
        tags = _strings(body, "tag", "tags")
        if keys and tags:
            raise BadRequest("give keys or tags, not both")
        unknown_namespace = await self._unknown_namespace(engine, namespace)
        if unknown_namespace is not None:
            return unknown_namespace
        if keys:
            removed = await _in_thread_unless_async(engine.delete, namespace, *keys)
            scope = "key"
        elif tags:
            removed = await _in_thread_unless_async(engine.invalidate_tags, namespace, *tags)
            scope = "tag"
        else:
            await _in_thread_unless_async(engine.clear, namespace)
            removed, scope = None, "namespace"
        return JSONResponse({"namespace": namespace, "scope": scope, "removed": removed})

    async def _unknown_namespace(
        self, engine: CacheEngine | AsyncCacheEngine, namespace: str
    ) -> Response | None:
        """A 404 that lists the namespaces holding keys, when ``namespace`` holds none; None
        when it does, or when Redis cannot say (an invalidation then waits for Redis)."""
        prefix = engine.core.layout.prefix
        try:
            held = await run_async(self._redis_client(), missing_namespace_plan(prefix, namespace))
        except Exception as exc:
            if is_unavailable_error(exc):
                return None
            raise
        return (
            None
            if held is None
            else _error(404, missing_namespace_message(namespace, prefix, held))
        )

    async def warm(self, request: Request) -> Response:
        name = request.path_params["name"]
        warmer = self.warmers.get(name)
        if warmer is None:
            known = ", ".join(sorted(self.warmers)) or "none"
            return _error(404, f"no warmer named {name!r} (registered: {known})")
        params = await self._json_body(request, required=False)
        start = time.perf_counter()
        try:
            result = warmer(params)
            if inspect.isawaitable(result):
                result = await result
        except (TypeError, ValueError, KeyError) as exc:
            raise BadRequest(f"warmer {name!r} refused the parameters: {exc}") from None
        return JSONResponse(
            {
                "warmer": name,
                "result": result if _jsonable(result) else repr(result),
                "seconds": round(time.perf_counter() - start, 6),
            }
        )

    async def self_test(self, request: Request) -> Response:
        if self.saver is None and self.engine is None:
            raise BadRequest("nothing to test: configure a saver or an engine")
        steps: list[dict[str, Any]] = []
        probe = f"__selftest__:{uuid.uuid4().hex}"
        if self.engine is not None:
            engine = self.engine

            async def cache_round_trip() -> bool:
                store = functools.partial(engine.set, ttl=60)
                await _in_thread_unless_async(store, "__selftest__", probe, probe)
                found = await _in_thread_unless_async(engine.get, "__selftest__", probe)
                await _in_thread_unless_async(engine.delete, "__selftest__", probe)
                return bool(found == probe)

            steps.append(await _timed("cache", cache_round_trip, engine.serving_from_memory))
        if self.saver is not None:
            saver = self.saver

            async def saver_round_trip() -> bool:
                config: Any = {"configurable": {"thread_id": probe, "checkpoint_ns": ""}}
                await saver.aput(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
                found = await saver.aget_tuple(config) is not None
                await saver.adelete_thread(probe)
                return found

            steps.append(await _timed("checkpoint", saver_round_trip, saver.serving_from_memory))
        ok = all(step["ok"] and not step["served_from_memory"] for step in steps)
        return JSONResponse({"ok": ok, "steps": steps}, status_code=200 if ok else 503)


async def _timed(
    name: str, run: Callable[[], Awaitable[bool]], served_from_memory: bool
) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        ok, error = await run(), None
    except Exception as exc:
        ok, error = False, f"{type(exc).__name__}: {exc}"
    return {
        "component": name,
        "ok": ok,
        "ms": round((time.perf_counter() - start) * 1000, 3),
        "served_from_memory": served_from_memory,
        "error": error,
    }


def _strings(body: Mapping[str, Any], one: str, many: str) -> list[str]:
    values: list[Any] = []
    if one in body:
        values.append(body[one])
    if many in body:
        if not isinstance(body[many], list):
            raise BadRequest(f'"{many}" must be a list of strings')
        values.extend(body[many])
    for value in values:
        if not isinstance(value, str) or not value:
            raise BadRequest(f'"{one}"/"{many}" values must be non-empty strings, got {value!r}')
    return values


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


class ManagementOptions(TypedDict, total=False):
    """The keyword options of :class:`ManagementAPI`, for the two factories below."""

    saver: RedisSaverBase | None
    engine: CacheEngine | AsyncCacheEngine | None
    token: str | None
    admin_token: str | None
    monitor: HealthMonitor | None
    warmers: Mapping[str, Warmer] | None
    metrics: Metrics | None
    settings: Settings | None
    keyspace_sample: int
    store: RedisStore | AsyncRedisStore | None


def create_management_app(**options: Unpack[ManagementOptions]) -> Starlette:
    """The management API as a Starlette app to mount (see :class:`ManagementAPI` for options).

    ``app.state.management`` is the :class:`ManagementAPI` (e.g. ``.add_warmer(name, fn)``).
    """
    api = ManagementAPI(**options)
    app = Starlette(routes=api.routes())
    app.state.management = api
    return app


def create_management_router(**options: Unpack[ManagementOptions]) -> APIRouter:
    """The same routes as a FastAPI ``APIRouter``, so they appear in the app's OpenAPI schema:
    ``app.include_router(create_management_router(...), prefix="/cache")``."""
    from fastapi import APIRouter

    api = ManagementAPI(**options)
    router = APIRouter(tags=["redis-checkpoint"])
    for spec in ROUTES:
        extra: dict[str, Any] = {}
        if spec.access != "public":
            extra["security"] = [{"bearer": []}]
        if spec.body is not None:
            extra["requestBody"] = {
                "required": spec.handler == "invalidate",
                "content": {"application/json": {"schema": spec.body}},
            }
        router.add_api_route(
            spec.path,
            api._guard(spec),
            methods=[spec.method],
            name=f"redis_checkpoint_{spec.handler}",
            summary=spec.summary,
            description=f"Access: {spec.access}.",
            openapi_extra=extra or None,
            response_class=Response,
        )
    router.management = api  # type: ignore[attr-defined]
    return router
