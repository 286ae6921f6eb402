"""Random query strings and random paths cannot push the rest of the HTTP cache out of Redis.

Each request with a new query string (or a new path under a route with path parameters) is a new
entry. Without a bound, a flood of them fills Redis, whose eviction then takes everything else.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from cache_helpers import private_metrics, unique
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from redis_checkpoint import CacheMiddleware, CacheRule
from redis_checkpoint.testing import RedisServer
from redis_checkpoint.web.entry import exact_tag, rule_tag

PAGES = 30


def make_site(url: str, **options: Any) -> tuple[CacheMiddleware, Counter[str]]:
    calls: Counter[str] = Counter()

    def answer(size: int) -> Any:
        def endpoint(request: Request) -> Response:
            calls[request.url.path] += 1
            return PlainTextResponse("x" * size, headers={"cache-control": "max-age=600"})

        return endpoint

    def by_language(request: Request) -> Response:
        calls[request.url.path] += 1
        headers = {"cache-control": "max-age=600", "vary": "accept-language"}
        return PlainTextResponse(request.headers.get("accept-language", "-"), headers=headers)

    routes = [
        Route("/vary", by_language),
        Route("/pages/{n}", answer(1024)),
        Route("/search", answer(2048)),
        Route("/items/{id}", answer(100)),
    ]
    app = CacheMiddleware(
        Starlette(routes=routes), url, prefix=unique("bounds"), metrics=private_metrics(), **options
    )
    return app, calls


@pytest.fixture
def small_redis(redis_server_bin: str) -> Iterator[RedisServer]:
    """A server that evicts as a cache server is configured to: least recently used first."""
    args = ["--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru"]
    with RedisServer(binary=redis_server_bin, args=args) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def client_for(app: CacheMiddleware) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        clients.append(client)
        return client

    yield client_for
    for client in clients:
        await client.aclose()


async def _flood_search(client: httpx.AsyncClient, count: int) -> None:
    for _ in range(count):
        response = await client.get(f"/search?q={secrets.token_hex(8)}")
        assert response.status_code == 200


async def _pages_after_flood(small_redis: RedisServer, http: Any, **options: Any) -> int:
    """How many of the pages stored before a flood of 1,500 random /search queries (3 MB on a
    3 MB server) reached the app again afterwards."""
    app, calls = make_site(small_redis.url, **options)
    client = http(app)
    for n in range(PAGES):
        await client.get(f"/pages/{n}")
    await _flood_search(client, 1500)
    before = sum(calls[f"/pages/{n}"] for n in range(PAGES))
    for n in range(PAGES):
        await client.get(f"/pages/{n}")
    await app.aclose()
    return sum(calls[f"/pages/{n}"] for n in range(PAGES)) - before


@pytest.mark.slow
async def test_a_query_string_flood_evicts_no_other_path(
    small_redis: RedisServer, http: Any
) -> None:
    assert await _pages_after_flood(small_redis, http, max_entries_per_path=50) == 0
    with small_redis.client() as client:
        assert client.info("stats")["evicted_keys"] == 0


@pytest.mark.slow
async def test_without_the_bound_the_same_flood_evicts_the_pages(
    small_redis: RedisServer, http: Any
) -> None:
    """The control: this server does evict, so the test above could fail."""
    assert await _pages_after_flood(small_redis, http, max_entries_per_path=None) > 0


def _live_members(client: redis.Redis, tag_set: str) -> int:
    return sum(bool(client.exists(member)) for member in client.smembers(tag_set))


async def test_the_bound_per_path_and_per_rule(
    redis_url: str, redis_client: redis.Redis, http: Any
) -> None:
    rules = [
        CacheRule("/search", max_entries_per_path=10),
        CacheRule("/vary", max_entries_per_path=10),
        CacheRule("/items/*", max_entries=25),
    ]
    app, calls = make_site(redis_url, rules=rules, max_entries_per_path=1000)
    client = http(app)
    await client.get("/pages/1")
    await _flood_search(client, 60)
    for _ in range(100):  # random paths: the per-path bound cannot hold them, the rule's can
        await client.get(f"/items/{secrets.token_hex(6)}")
    for _ in range(60):  # random values of a header the response varies on
        await client.get("/vary", headers={"accept-language": secrets.token_hex(4)})
    layout = app.engine.core.layout
    vary = layout.tag(app.namespace, exact_tag("testserver", "/vary"))
    assert redis_client.scard(vary) == 10 and _live_members(redis_client, vary) == 10
    search = layout.tag(app.namespace, exact_tag("testserver", "/search"))
    items = layout.tag(app.namespace, rule_tag("testserver", "/items/*"))
    assert redis_client.scard(search) == 10 and _live_members(redis_client, search) == 10
    assert redis_client.scard(items) == 25 and _live_members(redis_client, items) == 25
    assert (await client.get("/pages/1")).headers["x-cache"] == "HIT"
    assert calls["/pages/1"] == 1
    await app.aclose()


@pytest.mark.parametrize("options", [{"max_entries_per_path": 0}, {"max_entries_per_path": 1.5}])
def test_bounds_are_checked(redis_url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="max_entries_per_path"):
        make_site(redis_url, **options)
    with pytest.raises(ValueError, match="max_entries"):
        CacheRule("/x", max_entries=0)
