#!/usr/bin/env python
"""The web-facing caches at work: a DB-query cache on SQLite, a cached ASGI endpoint, the HTTP
cache revalidating a stale page and standing in for a failing app, turning away poisoning
attempts, and server-side sessions.

    python examples/web_caches_demo.py

Uses Redis at REDIS_URL (default redis://127.0.0.1:6379/0) under the key prefix "rc-demo:web"
(never flushed; the demo removes the keys it wrote when it ends); when Redis cannot be reached,
the same code runs on the cache's in-memory tier. The endpoint is served in-process
through httpx's ASGI transport, so nothing listens on a port.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Any

import httpx
from demo_keys import remove_demo_keys
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from redis_checkpoint import (
    CacheEngine,
    CacheMiddleware,
    QueryCache,
    SessionMiddleware,
    Settings,
    invalidate_user_sessions,
    regenerate_session,
)
from redis_checkpoint.client import check_connection, create_client
from redis_checkpoint.errors import RedisUnavailableError
from redis_checkpoint.web.validators import not_modified, validator_headers

PREFIX = "rc-demo:web"
REPORT_SECONDS = 0.05


def sales_database() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, region TEXT, total REAL)")
    regions = ["north", "south", "east", "west"]
    db.executemany(
        "INSERT INTO orders (region, total) VALUES (?, ?)",
        [(regions[i % 4], (i * 7919) % 1000 / 10) for i in range(200_000)],
    )
    return db


def query_demo(settings: Settings) -> None:
    db = sales_database()
    engine = CacheEngine(settings, prefix=PREFIX)
    cache = QueryCache(engine=engine, ttl=300)
    cache.clear()
    sql = "SELECT region, COUNT(*), ROUND(SUM(total), 2) FROM orders WHERE region = ?"

    def report(region: str) -> Any:
        return cache.get_or_load(
            sql, [region], lambda: db.execute(sql, (region,)).fetchall(), tags=["orders"]
        )

    print(f"{'query cache (SQLite, 200,000 orders)':<44} {'cache':<6} {'ms':>8}")
    for step, region in enumerate(
        ["north", "south", "north", "north", "south", "north", "south", "east"]
    ):
        if step == 5:
            with cache.invalidates("orders"):  # a write: every cached report on orders goes
                db.execute("INSERT INTO orders (region, total) VALUES ('south', 1.0)")
            print(f"{'  INSERT INTO orders + invalidate tag orders':<44}")
        loads = cache.stats().loads
        started = time.perf_counter()
        rows = report(region)
        elapsed = (time.perf_counter() - started) * 1000
        outcome = "miss" if cache.stats().loads > loads else "hit"
        result = f"{rows[0][1]:>6} orders, {rows[0][2]:>10}"
        print(f"  {region:<8} -> {result}  {outcome:<6} {elapsed:>8.2f}")
    stats = cache.stats()
    print(
        f"  hits {stats.hits}, misses {stats.loads}, hit ratio {stats.hit_ratio:.0%}, "
        f"time saved ~{stats.time_saved_seconds * 1000:.0f} ms\n"
    )
    engine.close()
    db.close()


async def endpoint_demo(settings: Settings) -> None:
    calls = {"report": 0}

    async def sales_report(request: Request) -> Response:
        if request.method == "POST":
            return Response(status_code=201)
        calls["report"] += 1
        await asyncio.sleep(REPORT_SECONDS)  # the slow part: a database, an upstream API
        return JSONResponse({"report": calls["report"], "north": 50_000})

    inner = Starlette(routes=[Route("/report", sales_report, methods=["GET", "POST"])])
    # One process here, so the memory tier may stand in for Redis when it is away.
    app = CacheMiddleware(inner, settings, prefix=PREFIX, fallback_to_memory=True)
    await app.engine.clear("http")
    transport = httpx.ASGITransport(app=app)
    print(
        f"{'cached endpoint (ASGI, in-process)':<30} {'status':>6} {'X-Cache':<8} {'Age':>3} "
        f"{'ETag':<12} {'ms':>7}"
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        etag = ""
        steps: list[tuple[str, str, dict[str, str]]] = [
            ("GET /report", "GET", {}),
            ("GET /report", "GET", {}),
            ("GET /report If-None-Match", "GET", {}),
            ("HEAD /report", "HEAD", {}),
            ("POST /report (a write)", "POST", {}),
            ("GET /report", "GET", {}),
        ]
        for label, method, headers in steps:
            if "If-None-Match" in label:
                headers = {"if-none-match": etag}
            started = time.perf_counter()
            response = await client.request(method, "/report", headers=headers)
            elapsed = (time.perf_counter() - started) * 1000
            etag = response.headers.get("etag", etag)
            print(
                f"  {label:<28} {response.status_code:>6} "
                f"{response.headers.get('x-cache', ''):<8} {response.headers.get('age', '-'):>3} "
                f"{response.headers.get('etag', '-')[:12]:<12} {elapsed:>7.2f}"
            )
    print(f"  the endpoint ran {calls['report']} times for 5 reads; X-Cache counts: {app.counts}")
    await app.aclose()


async def revalidation_demo(settings: Settings) -> None:
    """A page fresh for 1 s: once stale, the app is asked whether it changed (a 304 costs it a
    version check, not a render); when the app fails, the stale page answers instead."""
    state = {"renders": 0, "failing": False}
    page_headers = {"Cache-Control": "max-age=1, stale-if-error=600"}

    async def stock(request: Request) -> Response:
        if state["failing"]:
            return Response("database down", status_code=503)
        unchanged = not_modified(request, etag="stock-v7", headers=page_headers)
        if unchanged is not None:
            return unchanged
        state["renders"] += 1
        await asyncio.sleep(REPORT_SECONDS)
        headers = {**page_headers, **validator_headers(etag="stock-v7")}
        return JSONResponse({"in_stock": 12}, headers=headers)

    inner = Starlette(routes=[Route("/stock", stock)])
    app = CacheMiddleware(inner, settings, prefix=PREFIX, fallback_to_memory=True)
    # A stale answer is logged as a warning for operators; here the table shows it.
    logging.getLogger("redis_checkpoint.web").setLevel(logging.ERROR)
    transport = httpx.ASGITransport(app=app)
    print(f"{'revalidation and stale on error':<30} {'status':>6} {'X-Cache':<12} {'ms':>7}")
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        for label, pause, failing in (
            ("GET /stock", 0.0, False),
            ("GET /stock (fresh)", 0.0, False),
            ("GET /stock (stale: asked)", 1.1, False),
            ("GET /stock (app fails)", 1.1, True),
        ):
            await asyncio.sleep(pause)
            state["failing"] = failing
            started = time.perf_counter()
            response = await client.get("/stock")
            elapsed = (time.perf_counter() - started) * 1000
            print(
                f"  {label:<28} {response.status_code:>6} "
                f"{response.headers.get('x-cache', ''):<12} {elapsed:>7.2f}"
            )
    print(f"  the page was rendered {state['renders']} time for 4 reads\n")
    await app.aclose()


async def poisoning_demo(settings: Settings) -> None:
    """An app that builds its script URL from X-Forwarded-Host and honours method overrides, as
    apps behind proxies do: an attacker's request must not decide what the next visitor gets."""

    async def page(request: Request) -> Response:
        if request.method == "DELETE":
            return HTMLResponse("deleted")
        host = request.headers.get("x-forwarded-host") or request.headers["host"]
        body = (await request.body()).decode()
        html = f'<script src="https://{host}/app.js"></script>{body}'
        return HTMLResponse(html, headers={"cache-control": "public, max-age=60"})

    async def overriding(scope: Any, receive: Any, send: Any) -> None:
        override = dict(scope["headers"]).get(b"x-http-method-override")
        if override:
            scope = {**scope, "method": override.decode().upper()}
        await inner(scope, receive, send)

    inner = Starlette(routes=[Route("/page", page, methods=["GET", "DELETE"])])
    app = CacheMiddleware(overriding, settings, prefix=PREFIX, fallback_to_memory=True)
    await app.engine.clear("http")
    attacks: list[tuple[str, dict[str, str], bytes]] = [
        ("X-Forwarded-Host: evil.example", {"x-forwarded-host": "evil.example"}, b""),
        ("X-HTTP-Method-Override: DELETE", {"x-http-method-override": "DELETE"}, b""),
        ("GET with a body", {}, b"<script>evil()</script>"),
    ]
    print(f"{'poisoning attempt, then a visitor':<34} {'attacker':<9} {'visitor':<8} visitor got")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        for number, (label, headers, body) in enumerate(attacks):
            url = f"/page?attempt={number}"
            attack = await client.request("GET", url, headers=headers, content=body)
            visit = await client.get(url)
            verdict = "the attacker's page" if "evil" in visit.text else "the honest page"
            print(
                f"  {label:<32} {attack.headers['x-cache']:<9} {visit.headers['x-cache']:<8} "
                f"{verdict}"
            )
    print("  keyed apart (MISS) or bypassed: docs/http-cache.md, 'What the HTTP cache keys on'\n")
    await app.aclose()


async def sessions_demo(settings: Settings) -> None:
    """Two devices log in as one user, each keeps its own cart, and one logs out both."""

    async def login(request: Request) -> Response:
        request.session["user_id"] = "alice"
        regenerate_session(request)
        return JSONResponse(dict(request.session))

    async def add(request: Request) -> Response:
        request.session["cart"] = [*request.session.get("cart", []), request.query_params["item"]]
        return JSONResponse(dict(request.session))

    async def logout_everywhere(request: Request) -> Response:
        return JSONResponse({"ended": await invalidate_user_sessions(request, "alice")})

    inner = Starlette(
        routes=[Route("/login", login), Route("/add", add), Route("/logout-all", logout_everywhere)]
    )
    # One process here, so a per-process copy may stand in for Redis when it is away.
    app = SessionMiddleware(
        inner,
        "demo-secret-not-for-production",
        target=settings,
        prefix=PREFIX,
        on_unavailable="memory",
    )
    transport = httpx.ASGITransport(app=app)
    print(f"{'server-side sessions':<34} {'answer'}")
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://demo") as phone,
        httpx.AsyncClient(transport=transport, base_url="http://demo") as laptop,
    ):
        steps = [
            ("phone: log in", phone, "/login", {}),
            ("laptop: log in", laptop, "/login", {}),
            ("phone: add tea", phone, "/add", {"item": "tea"}),
            ("laptop: add jam", laptop, "/add", {"item": "jam"}),
            ("laptop: log out everywhere", laptop, "/logout-all", {}),
            ("phone: add milk", phone, "/add", {"item": "milk"}),
        ]
        for label, device, path, params in steps:
            try:
                answer = (await device.get(path, params=params)).json()
            except Exception as exc:  # logging out everywhere needs Redis
                answer = f"refused: {type(exc).__name__}"
            print(f"  {label:<32} {answer}")
    signed_id = phone.cookies["session"]
    print(
        f"  the cookie holds only a signed id ({len(signed_id)} characters), the server the data\n"
    )
    await app.aclose()


def main() -> None:
    settings = Settings.from_env(socket_connect_timeout=0.2, retries=0)
    try:
        probe = CacheEngine(settings, prefix=PREFIX)
        check_connection(probe.client)
        probe.close()
        print(f"Caching on Redis at {settings.redacted_url()} (key prefix {PREFIX!r})\n")
        on_redis = True
    except RedisUnavailableError:
        print("Caching on the in-memory tier (Redis unreachable)\n")
        on_redis = False
    query_demo(settings)
    asyncio.run(endpoint_demo(settings))
    asyncio.run(revalidation_demo(settings))
    asyncio.run(poisoning_demo(settings))
    asyncio.run(sessions_demo(settings))
    if on_redis:
        with create_client(settings) as client:
            remove_demo_keys(client, PREFIX)


if __name__ == "__main__":
    main()
