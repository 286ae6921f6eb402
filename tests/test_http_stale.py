"""stale-if-error (RFC 5861) and the grace option on a real redis-server: when the app raises or
answers 500/502/503/504, an entry past its freshness but within its window answers instead,
marked ``X-Cache: STALE``; directives that forbid stale responses are obeyed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
from cache_helpers import private_metrics, unique
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from redis_checkpoint import CacheMiddleware
from redis_checkpoint.cache import codec
from redis_checkpoint.web.entry import StoredResponse, decode_entry, encode_entry

FRESH = 1  # seconds: the tests wait this long for an entry to go stale


class Origin:
    """An app whose pages carry the Cache-Control their path names, and that fails on demand."""

    def __init__(self) -> None:
        self.failure: int | None = None  # a status to answer, or 0 to raise
        self.calls = 0

    def page(self, request: Request) -> Response:
        self.calls += 1
        if self.failure == 0:
            raise RuntimeError("the database is down")
        if self.failure is not None:
            return PlainTextResponse("upstream error", status_code=self.failure)
        directives = {
            "/own": f"max-age={FRESH}, stale-if-error=60",
            "/plain": f"max-age={FRESH}",
            "/must": f"max-age={FRESH}, must-revalidate, stale-if-error=60",
            "/shared": f"s-maxage={FRESH}, stale-if-error=60",
            "/no-cache-field": f"max-age={FRESH}, no-cache=x-token, stale-if-error=60",
            "/short": f"max-age={FRESH}, stale-if-error=1",
        }[request.url.path]
        return PlainTextResponse(f"page #{self.calls}", headers={"Cache-Control": directives})


class Site:
    def __init__(self, redis_url: str, **options: Any) -> None:
        self.origin = Origin()
        paths = ["/own", "/plain", "/must", "/shared", "/no-cache-field", "/short"]
        inner = Starlette(routes=[Route(path, self.origin.page) for path in paths])
        self.middleware = CacheMiddleware(
            inner, redis_url, prefix=unique("stale"), metrics=private_metrics(), **options
        )
        transport = httpx.ASGITransport(app=self.middleware, raise_app_exceptions=True)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async def get(self, path: str, **headers: str) -> httpx.Response:
        return await self.client.get(path, headers=headers)

    async def stale_soon(self, path: str) -> httpx.Response:
        """Store ``path``, then wait until it is stale."""
        first = await self.get(path)
        assert first.headers["x-cache"] == "MISS"
        await asyncio.sleep(FRESH + 0.2)
        return first


@pytest.fixture
async def site(redis_url: str) -> AsyncIterator[Site]:
    built = Site(redis_url)
    yield built
    await built.client.aclose()
    await built.middleware.aclose()


@pytest.mark.parametrize("failure", [500, 502, 503, 504, 0])
async def test_a_failing_app_is_answered_by_the_stale_entry(site: Site, failure: int) -> None:
    first = await site.stale_soon("/own")
    site.origin.failure = failure
    stale = await site.get("/own")
    assert (stale.status_code, stale.text) == (200, first.text)
    assert stale.headers["x-cache"] == "STALE"
    assert int(stale.headers["age"]) >= FRESH
    assert stale.headers["etag"] == first.headers["etag"]
    assert site.middleware.counts["STALE"] == 1
    stats = site.middleware.engine.stats()[site.middleware.namespace]
    assert stats.fallback == 1  # counted: cache_fallback_operations_total{stale-if-error}


async def test_a_healthy_app_answers_a_stale_request_itself(site: Site) -> None:
    await site.stale_soon("/own")
    again = await site.get("/own")
    assert (again.text, again.headers["x-cache"]) == ("page #2", "MISS")
    site.origin.failure = 503  # the new entry is fresh: a hit, the app is not asked
    assert (await site.get("/own")).headers["x-cache"] == "HIT"


async def test_other_failures_and_forbidding_directives_pass_through(site: Site) -> None:
    paths = ("/plain", "/must", "/shared", "/no-cache-field", "/own")
    for path in paths:
        await site.get(path)
    await asyncio.sleep(FRESH + 0.2)
    site.origin.failure = 503
    for path in paths[:-1]:  # no stale-if-error, or a directive that forbids stale responses
        failed = await site.get(path)
        assert (failed.status_code, failed.headers["x-cache"]) == (503, "MISS"), path
    site.origin.failure = 404  # not one of the errors RFC 5861 stands in for
    missing = await site.get("/own")
    assert (missing.status_code, missing.headers["x-cache"]) == (404, "MISS")
    assert site.middleware.counts["STALE"] == 0


async def test_the_window_ends(site: Site) -> None:
    await site.stale_soon("/short")  # stale-if-error=1
    await asyncio.sleep(1.1)
    site.origin.failure = 500
    failed = await site.get("/short")
    assert (failed.status_code, failed.headers["x-cache"]) == (500, "MISS")


async def test_the_grace_option_covers_responses_that_do_not_say(redis_url: str) -> None:
    graced = Site(redis_url, stale_if_error=30)
    try:
        first = await graced.get("/plain")
        await graced.get("/must")
        await asyncio.sleep(FRESH + 0.2)
        graced.origin.failure = 0
        stale = await graced.get("/plain")
        assert (stale.text, stale.headers["x-cache"]) == (first.text, "STALE")
        # Grace never overrides a directive that forbids stale responses.
        with pytest.raises(RuntimeError, match="database is down"):
            await graced.get("/must")
    finally:
        await graced.client.aclose()
        await graced.middleware.aclose()


async def test_an_entry_is_kept_for_its_window(site: Site, redis_client: redis.Redis) -> None:
    await site.get("/own")
    prefix = site.middleware.engine.core.layout.prefix
    ttls = [redis_client.pttl(key) for key in redis_client.scan_iter(f"{prefix}:*#*")]
    ttls = [ttl for ttl in ttls if ttl > 0]
    assert ttls and max(ttls) > (FRESH + 50) * 1000  # max-age plus stale-if-error=60


async def test_a_conditional_request_gets_304_from_a_stale_entry(site: Site) -> None:
    first = await site.stale_soon("/own")
    site.origin.failure = 500
    answer = await site.get("/own", **{"If-None-Match": first.headers["etag"]})
    assert (answer.status_code, answer.headers["x-cache"]) == (304, "STALE")


def test_an_entry_written_before_the_window_was_kept_still_reads() -> None:
    entry = StoredResponse(200, [(b"a", b"b")], b"body", b'"e"', 1.0, 60.0, 0.0, False, 30.0)
    assert decode_entry(encode_entry(entry)) == entry
    old = codec.loads(encode_entry(entry))[:9]  # the nine fields of earlier versions
    assert decode_entry(codec.dumps(old)).stale_if_error == 0.0


def test_a_negative_grace_is_refused() -> None:
    with pytest.raises(ValueError, match="stale_if_error"):
        CacheMiddleware(Starlette(), stale_if_error=-1)
