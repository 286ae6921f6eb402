"""Revalidation and the rest of a shared cache's RFC 9111 duties, on a real redis-server: a stale
entry with the app's own validators is revalidated with a conditional request and a 304 refreshes
it (§3.2, §4.3.4); stale-while-revalidate (RFC 5861) answers at once and asks the app once per
entry across processes; the request's max-age/min-fresh/max-stale; storage by explicit freshness
(§3); heuristic freshness off; CDN-Cache-Control (RFC 9213); Vary normalisation; and
Location/Content-Location invalidation of the same origin only (§4.4)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from cache_helpers import private_metrics, unique
from http_helpers import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from redis_checkpoint import CacheMiddleware
from redis_checkpoint.cache import codec
from redis_checkpoint.web.entry import StoredResponse, decode_entry, encode_entry

FRESH = 1  # seconds: how long the origin's revalidatable pages stay fresh
LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"


class Origin:
    """Pages that give validators and answer conditional requests with 304, as an app using
    ``redis_checkpoint.web.validators`` would; it counts what it was asked."""

    def __init__(self) -> None:
        self.version = 1
        self.bodies: Counter[str] = Counter()  # full answers built, per path
        self.not_modified: Counter[str] = Counter()  # 304s answered, per path
        self.conditionals: list[dict[str, str]] = []  # the conditional fields each call carried
        self.extra: dict[str, str] = {}  # header fields the next 304 carries
        self.rogue_etag = False  # a 304 naming another ETag than the one asked about

    def etag(self) -> str:
        return f'"v{self.version}"'

    async def page(self, request: Request) -> Response:
        path = request.url.path
        sent = {k: v for k, v in request.headers.items() if k.startswith("if-")}
        self.conditionals.append(sent)
        directives = {
            "/etag": f"max-age={FRESH}",
            "/lm": f"max-age={FRESH}",
            "/no-cache": "no-cache",
            "/must": f"max-age={FRESH}, must-revalidate",
            "/swr": f"max-age={FRESH}, stale-while-revalidate=30",
            "/slow-swr": f"max-age={FRESH}, stale-while-revalidate=30",
            "/no-validator": f"max-age={FRESH}",
            "/no-cache-plain": "no-cache",
        }[path]
        validators = {"Last-Modified": LAST_MODIFIED} if path == "/lm" else {"ETag": self.etag()}
        if path in ("/no-validator", "/no-cache-plain"):
            validators = {}
        current = (
            sent.get("if-none-match") == self.etag()
            if "ETag" in validators
            else sent.get("if-modified-since") == LAST_MODIFIED
        )
        if path == "/slow-swr":
            await asyncio.sleep(0.3)  # a slow page, even to say it did not change
        if validators and current:
            self.not_modified[path] += 1
            headers = {**validators, "Cache-Control": directives, **self.extra}
            if self.rogue_etag:
                headers["ETag"] = '"somebody-else"'
            return Response(status_code=304, headers=headers)
        self.bodies[path] += 1
        body = f"{path} v{self.version} #{self.bodies[path]}"
        headers = {"Cache-Control": directives, "X-Version": str(self.version), **validators}
        return PlainTextResponse(body, headers=headers)


PATHS = ("/etag", "/lm", "/no-cache", "/must", "/swr", "/slow-swr", "/no-validator")


class Site:
    def __init__(self, redis_url: str, prefix: str | None = None, **options: Any) -> None:
        self.origin = Origin()
        routes = [Route(path, self.origin.page) for path in (*PATHS, "/no-cache-plain")]
        self.middleware = CacheMiddleware(
            Starlette(routes=routes),
            redis_url,
            prefix=prefix or unique("revalidate"),
            metrics=private_metrics(),
            **options,
        )
        transport = httpx.ASGITransport(app=self.middleware)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async def get(self, path: str, **headers: str) -> httpx.Response:
        return await self.client.get(path, headers=headers)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.middleware.aclose()


@pytest.fixture
async def site(redis_url: str) -> AsyncIterator[Site]:
    built = Site(redis_url)
    yield built
    await built.aclose()


async def _go_stale() -> None:
    await asyncio.sleep(FRESH + 0.2)


async def _revalidated_in_background(*sites: Site) -> None:
    """Wait until every background revalidation the sites started has finished (stored)."""
    deadline = time.monotonic() + 30
    while any(site.middleware._background for site in sites):
        assert time.monotonic() < deadline, "a background revalidation never finished"
        await asyncio.sleep(0.01)


async def test_a_stale_entry_is_revalidated_and_a_304_refreshes_it(site: Site) -> None:
    first = await site.get("/etag")
    assert first.headers["x-cache"] == "MISS" and first.headers["etag"] == '"v1"'
    await _go_stale()
    # The 304 brings a longer lifetime and a new value of a header (RFC 9111 3.2).
    site.origin.extra = {"Cache-Control": "max-age=3600", "X-Version": "1b"}
    again = await site.get("/etag")
    assert (again.status_code, again.text) == (200, first.text)  # the stored body
    assert again.headers["x-cache"] == "REVALIDATED"
    assert again.headers["x-version"] == "1b"  # the returned response is updated...
    assert site.origin.conditionals[-1] == {"if-none-match": '"v1"'}
    assert (site.origin.bodies["/etag"], site.origin.not_modified["/etag"]) == (1, 1)
    await _go_stale()  # max-age=3600 now: still fresh
    stored = await site.get("/etag")
    assert stored.headers["x-cache"] == "HIT"
    assert stored.headers["x-version"] == "1b"  # ...and so is the stored one
    assert stored.headers["cache-control"] == "max-age=3600"
    assert site.middleware.counts["REVALIDATED"] == 1


async def test_last_modified_is_sent_as_if_modified_since(site: Site) -> None:
    first = await site.get("/lm")
    await _go_stale()
    again = await site.get("/lm")
    assert (again.text, again.headers["x-cache"]) == (first.text, "REVALIDATED")
    assert site.origin.conditionals[-1] == {"if-modified-since": LAST_MODIFIED}


async def test_a_changed_page_replaces_the_entry(site: Site) -> None:
    await site.get("/etag")
    await _go_stale()
    site.origin.version = 2
    changed = await site.get("/etag")
    assert (changed.text, changed.headers["x-cache"]) == ("/etag v2 #2", "MISS")
    assert changed.headers["etag"] == '"v2"'
    assert (await site.get("/etag")).text == "/etag v2 #2"  # a hit on the new entry


async def test_the_clients_own_conditional_request(site: Site) -> None:
    first = await site.get("/etag")
    # From a fresh entry: If-None-Match, and If-Modified-Since when no If-None-Match is sent.
    hit = await site.get("/etag", **{"If-None-Match": first.headers["etag"]})
    assert (hit.status_code, hit.headers["x-cache"], hit.content) == (304, "HIT", b"")
    lm = await site.get("/lm")
    since = await site.get("/lm", **{"If-Modified-Since": lm.headers["last-modified"]})
    assert (since.status_code, since.headers["x-cache"]) == (304, "HIT")
    earlier = await site.get("/lm", **{"If-Modified-Since": "Sun, 31 Dec 2023 00:00:00 GMT"})
    assert earlier.status_code == 200
    ignored = await site.get(
        "/lm", **{"If-None-Match": '"other"', "If-Modified-Since": LAST_MODIFIED}
    )
    assert ignored.status_code == 200  # If-None-Match given: If-Modified-Since is not used
    # After a revalidation the client's conditional is answered from the refreshed entry, while
    # the app was asked with the cache's own validator, not the client's.
    await _go_stale()
    revalidated = await site.get("/etag", **{"If-None-Match": '"v1", "v0"'})
    assert (revalidated.status_code, revalidated.headers["x-cache"]) == (304, "REVALIDATED")
    assert site.origin.conditionals[-1] == {"if-none-match": '"v1"'}


async def test_no_cache_is_stored_and_revalidated_on_every_request(site: Site) -> None:
    first = await site.get("/no-cache")
    for _ in range(3):
        again = await site.get("/no-cache")
        assert (again.text, again.headers["x-cache"]) == (first.text, "REVALIDATED")
    assert (site.origin.bodies["/no-cache"], site.origin.not_modified["/no-cache"]) == (1, 3)
    # A 304 that changes nothing of a no-cache entry is not written again on every request.
    stats = site.middleware.engine.stats()[site.middleware.namespace]
    assert stats.sets == 1
    site.origin.extra = {"X-Version": "1b"}  # one that does change a field is written
    assert (await site.get("/no-cache")).headers["x-version"] == "1b"
    assert site.middleware.engine.stats()[site.middleware.namespace].sets == 2
    assert (await site.get("/no-cache")).headers["x-version"] == "1b"
    # Without a validator it could never be revalidated: not stored at all.
    for _ in range(2):
        assert (await site.get("/no-cache-plain")).headers["x-cache"] == "MISS"


async def test_a_304_that_forbids_storing_answers_once_and_is_not_stored(site: Site) -> None:
    await site.get("/etag")
    await _go_stale()
    site.origin.extra = {"Cache-Control": "no-store", "X-Version": "1b"}
    once = await site.get("/etag")
    assert (once.headers["x-cache"], once.headers["x-version"]) == ("REVALIDATED", "1b")
    assert site.middleware.engine.stats()[site.middleware.namespace].sets == 1
    site.origin.extra = {}
    again = await site.get("/etag")  # the stored entry kept its own fields
    assert (again.headers["x-cache"], again.headers["x-version"]) == ("REVALIDATED", "1")


async def test_must_revalidate_is_revalidated_not_served_stale(site: Site) -> None:
    await site.get("/must")
    await _go_stale()
    assert (await site.get("/must")).headers["x-cache"] == "REVALIDATED"
    assert site.origin.not_modified["/must"] == 1


async def test_without_a_validator_a_stale_entry_is_a_plain_miss(site: Site) -> None:
    await site.get("/no-validator")
    await _go_stale()
    again = await site.get("/no-validator")
    assert again.headers["x-cache"] == "MISS" and site.origin.conditionals[-1] == {}


async def test_a_304_about_another_response_is_asked_again_in_full(site: Site) -> None:
    await site.get("/etag")
    await _go_stale()
    site.origin.rogue_etag = True
    again = await site.get("/etag")
    assert (again.status_code, again.text, again.headers["x-cache"]) == (200, "/etag v1 #2", "MISS")
    assert site.origin.conditionals[-2:] == [{"if-none-match": '"v1"'}, {}]


async def test_stale_while_revalidate_answers_at_once_and_asks_once(site: Site) -> None:
    first = await site.get("/slow-swr")
    await _go_stale()
    site.origin.version = 2  # the background revalidation brings the new page
    answers = await asyncio.gather(*(site.get("/slow-swr") for _ in range(10)))
    assert {(a.text, a.headers["x-cache"]) for a in answers} == {(first.text, "STALE")}
    await _revalidated_in_background(site)  # it takes the app's 0.3 s
    assert site.origin.bodies["/slow-swr"] == 2  # one revalidation for ten stale answers
    fresh = await site.get("/slow-swr")
    assert (fresh.text, fresh.headers["x-cache"]) == ("/slow-swr v2 #2", "HIT")
    counts = site.middleware.counts  # the background revalidation answered nobody
    assert (counts["MISS"], counts["STALE"], counts["HIT"], counts["REVALIDATED"]) == (1, 10, 1, 0)


async def test_a_background_304_refreshes_the_entry(site: Site) -> None:
    first = await site.get("/swr")
    await _go_stale()
    site.origin.extra = {"X-Version": "1b"}
    stale = await site.get("/swr")
    assert (stale.text, stale.headers["x-cache"]) == (first.text, "STALE")
    await _revalidated_in_background(site)
    assert site.origin.not_modified["/swr"] == 1
    refreshed = await site.get("/swr")
    assert (refreshed.text, refreshed.headers["x-cache"]) == (first.text, "HIT")
    assert refreshed.headers["x-version"] == "1b"
    assert site.origin.bodies["/swr"] == 1
    counts = site.middleware.counts
    assert (counts["MISS"], counts["STALE"], counts["HIT"], counts["REVALIDATED"]) == (1, 1, 1, 0)


async def test_one_background_revalidation_across_processes(redis_url: str) -> None:
    prefix = unique("swr-shared")
    sites = [Site(redis_url, prefix) for _ in range(3)]  # three processes' middlewares
    try:
        await sites[0].get("/slow-swr")
        await _go_stale()
        answers = await asyncio.gather(*(s.get("/slow-swr") for s in sites))
        assert {a.headers["x-cache"] for a in answers} == {"STALE"}
        await _revalidated_in_background(*sites)  # the one that won the lock takes 0.3 s
        asked = sum(
            s.origin.not_modified["/slow-swr"] + s.origin.bodies["/slow-swr"] for s in sites
        )
        assert asked == 2  # the first store and one revalidation among the three
        assert (await sites[2].get("/slow-swr")).headers["x-cache"] == "HIT"
    finally:
        for s in sites:
            await s.aclose()


@pytest.fixture
def served(redis_url: str) -> Iterator[tuple[str, Site]]:
    site = Site(redis_url, stale_while_revalidate=30)
    with serve(site.middleware) as base:
        yield base, site


def test_stale_while_revalidate_over_loopback(served: tuple[str, Site]) -> None:
    """Under uvicorn: the stale answer does not wait for the slow app; the next is fresh."""
    base, site = served
    with httpx.Client(base_url=base) as client:
        client.get("/slow-swr")
        time.sleep(FRESH + 0.2)
        site.origin.version = 2
        stale = client.get("/slow-swr")
        # The old page: the answer did not wait for the app, which now has version 2.
        assert stale.headers["x-cache"] == "STALE" and stale.text == "/slow-swr v1 #1"
        deadline = time.monotonic() + 30
        while site.origin.bodies["/slow-swr"] < 2 or site.middleware._background:
            assert time.monotonic() < deadline, "the background revalidation never finished"
            time.sleep(0.01)
        fresh = client.get("/slow-swr")
        assert (fresh.text, fresh.headers["x-cache"]) == ("/slow-swr v2 #2", "HIT")
    assert site.origin.bodies["/slow-swr"] == 2  # the app built the new page once


async def test_the_request_directives(site: Site) -> None:
    first = await site.get("/etag")
    await _go_stale()
    stale_ok = await site.get("/etag", **{"Cache-Control": "max-stale=60"})
    assert (stale_ok.text, stale_ok.headers["x-cache"]) == (first.text, "HIT")
    any_stale = await site.get("/etag", **{"Cache-Control": "max-stale"})
    assert any_stale.headers["x-cache"] == "HIT"
    assert site.origin.not_modified["/etag"] == 0  # the app was not asked
    fresh = await site.get("/etag")  # a plain request revalidates it
    assert fresh.headers["x-cache"] == "REVALIDATED"
    too_old = await site.get("/etag", **{"Cache-Control": "min-fresh=3600"})
    assert too_old.headers["x-cache"] == "REVALIDATED"
    young = await site.get("/etag", **{"Cache-Control": "max-age=0"})
    assert young.headers["x-cache"] == "MISS"  # max-age=0 asks for a full answer
    # must-revalidate forbids max-stale.
    await site.get("/must")
    await _go_stale()
    refused = await site.get("/must", **{"Cache-Control": "max-stale=60"})
    assert refused.headers["x-cache"] == "REVALIDATED"


# -- storage (RFC 9111 3) and freshness ---------------------------------------------------


async def _app_with(headers: dict[str, str], status: int = 200) -> Any:
    calls = Counter[str]()

    async def page(request: Request) -> Response:
        calls["page"] += 1
        return PlainTextResponse(f"#{calls['page']}", status_code=status, headers=headers)

    app = Starlette(routes=[Route("/page", page)])
    app.state.calls = calls
    return app


async def _twice(redis_url: str, headers: dict[str, str], **options: Any) -> list[str]:
    """X-Cache of two GETs of one page behind a fresh middleware."""
    app = await _app_with(headers, status=options.pop("status", 200))
    middleware = CacheMiddleware(
        app, redis_url, prefix=unique("storage"), metrics=private_metrics(), **options
    )
    transport = httpx.ASGITransport(app=middleware)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [(await client.get("/page")).headers["x-cache"] for _ in range(2)]
    finally:
        await middleware.aclose()


async def test_a_redirect_with_max_age_is_stored(redis_url: str) -> None:
    redirect = {"Cache-Control": "max-age=60", "Location": "/elsewhere"}
    assert await _twice(redis_url, redirect, status=302) == ["MISS", "HIT"]
    assert await _twice(redis_url, {"Location": "/elsewhere"}, status=302) == ["MISS", "MISS"]


async def test_heuristic_freshness_can_be_turned_off(redis_url: str) -> None:
    assert await _twice(redis_url, {}) == ["MISS", "HIT"]  # default_ttl: 600 s heuristic
    assert await _twice(redis_url, {}, default_ttl=None) == ["MISS", "MISS"]
    # Without the flat default a Last-Modified a day old still gives a tenth of a day...
    old = {
        "Last-Modified": time.strftime(
            "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 86400)
        )
    }
    assert await _twice(redis_url, old, default_ttl=None) == ["MISS", "HIT"]
    # ...unless that is off too: then it is only ever revalidated (here the app answers 200).
    off = {"default_ttl": None, "last_modified_fraction": 0}
    assert await _twice(redis_url, old, **off) == ["MISS", "MISS"]
    # With a validator it is stored, and revalidated each time (the app answers 200 here).
    assert await _twice(redis_url, {"ETag": '"a"'}, default_ttl=None) == ["MISS", "MISS"]
    assert await _twice(redis_url, {"Cache-Control": "max-age=60"}, default_ttl=None) == [
        "MISS",
        "HIT",
    ]


# -- CDN-Cache-Control (RFC 9213) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "outcome"),
    [
        ({"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60"}, "HIT"),
        ({"Cache-Control": "max-age=60", "CDN-Cache-Control": "no-store"}, "MISS"),
        ({"Cache-Control": "max-age=60", "CDN-Cache-Control": "private"}, "MISS"),
        ({"Cache-Control": "max-age=60", "CDN-Cache-Control": "max-age=0"}, "MISS"),
        ({"Expires": "Mon, 01 Jan 2024 00:00:00 GMT", "CDN-Cache-Control": "max-age=60"}, "HIT"),
        ({"Cache-Control": "no-store", "CDN-Cache-Control": 'max-age="60"'}, "MISS"),  # invalid
        ({"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60, &&"}, "MISS"),
        ({"Cache-Control": "no-store", "CDN-Cache-Control": "max-age =60"}, "MISS"),
        ({"Cache-Control": "no-store", "CDN-Cache-Control": "foo, MaX-aGe=60"}, "HIT"),
    ],
)
async def test_cdn_cache_control_replaces_cache_control(
    redis_url: str, headers: dict[str, str], outcome: str
) -> None:
    assert await _twice(redis_url, headers) == ["MISS", outcome]


async def test_a_targeted_field_of_ones_own(redis_url: str) -> None:
    both = {"Surrogate-Control": "max-age=60", "CDN-Cache-Control": "no-store"}
    ours = ("surrogate-control", "cdn-cache-control")
    assert await _twice(redis_url, both, targeted_cache_control=ours) == ["MISS", "HIT"]
    assert await _twice(redis_url, both) == ["MISS", "MISS"]  # CDN-Cache-Control only
    ignored = {"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60"}
    assert await _twice(redis_url, ignored, targeted_cache_control=()) == ["MISS", "MISS"]
    with pytest.raises(TypeError, match="sequence of header names"):
        CacheMiddleware(Starlette(), targeted_cache_control="cdn-cache-control")


# -- Vary normalisation and invalidation by Location -----------------------------------------


async def test_requests_differing_only_in_spelling_share_a_vary_entry(redis_url: str) -> None:
    calls = Counter[str]()

    async def page(request: Request) -> Response:
        calls["page"] += 1
        return PlainTextResponse("x", headers={"Vary": "Accept-Encoding"})

    middleware = CacheMiddleware(
        Starlette(routes=[Route("/v", page)]),
        redis_url,
        prefix=unique("vary"),
        metrics=private_metrics(),
    )
    transport = httpx.ASGITransport(app=middleware)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for spelling in ("gzip, br", "GZIP,br", "gzip ,  BR"):
                await client.get("/v", headers={"Accept-Encoding": spelling})
            await client.get("/v", headers={"Accept-Encoding": "identity"})
    finally:
        await middleware.aclose()
    assert calls["page"] == 2


async def test_location_invalidates_only_its_own_origin(redis_url: str) -> None:
    location: dict[str, str] = {}

    async def page(request: Request) -> Response:
        return PlainTextResponse(request.url.path, headers={"Cache-Control": "max-age=60"})

    async def write(request: Request) -> Response:
        return PlainTextResponse("done", status_code=201, headers=location)

    routes = [
        Route("/dir/a", page),
        Route("/dir/b", page),
        Route("/dir/post", write, methods=["POST"]),
    ]
    middleware = CacheMiddleware(
        Starlette(routes=routes), redis_url, prefix=unique("location"), metrics=private_metrics()
    )
    transport = httpx.ASGITransport(app=middleware)

    async def cached(client: httpx.AsyncClient, path: str) -> bool:
        return (await client.get(path)).headers["x-cache"] == "HIT"

    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://site.test") as client:
            for path in ("/dir/a", "/dir/b"):
                await client.get(path)
            for other_origin in (
                "http://evil.test/dir/a",
                "https://site.test/dir/a",  # another scheme is another origin
                "//evil.test/dir/a",
            ):
                location = {"Location": other_origin}
                await client.post("/dir/post")
                assert await cached(client, "/dir/a"), other_origin
            location = {"Location": "a"}  # relative: resolved against /dir/post
            await client.post("/dir/post")
            assert not await cached(client, "/dir/a")
            location = {"Content-Location": "http://site.test/dir/b"}
            await client.post("/dir/post")
            assert not await cached(client, "/dir/b")
    finally:
        await middleware.aclose()


# -- the stored entry ---------------------------------------------------------------------


def test_entries_keep_their_revalidation_fields_and_old_ones_still_read() -> None:
    conditional = ((b"if-none-match", b'"v1"'), (b"if-modified-since", LAST_MODIFIED.encode()))
    entry = StoredResponse(200, [], b"b", b'"v1"', 1.0, 60.0, 0.0, False, 5.0, 30.0, conditional)
    assert decode_entry(encode_entry(entry)) == entry
    ten_fields = codec.loads(encode_entry(entry))[:10]  # before revalidation was kept
    old = decode_entry(codec.dumps(ten_fields))
    assert isinstance(old, StoredResponse)
    assert (old.stale_if_error, old.stale_while_revalidate, old.conditional) == (5.0, 0.0, ())
    damaged = codec.loads(encode_entry(entry))
    damaged[11] = "not a header list"
    with pytest.raises(ValueError, match="not an HTTP cache entry"):
        decode_entry(codec.dumps(damaged))


async def test_fields_named_by_connection_are_not_stored(redis_url: str) -> None:
    headers = {
        "Cache-Control": "max-age=60",
        "Connection": "x-a, X-B",
        "X-A": "1",
        "X-B": "2",
        "X-C": "3",
    }
    app = await _app_with(headers)
    middleware = CacheMiddleware(
        app, redis_url, prefix=unique("connection"), metrics=private_metrics()
    )
    transport = httpx.ASGITransport(app=middleware)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/page")
            hit = await client.get("/page")
    finally:
        await middleware.aclose()
    assert hit.headers["x-cache"] == "HIT" and hit.headers["x-c"] == "3"
    assert "x-a" not in hit.headers and "x-b" not in hit.headers


async def test_an_unknown_request_directive_changes_nothing(site: Site) -> None:
    """Unknown directives must be ignored (RFC 9111 5.2): stale-while-revalidate still works."""
    first = await site.get("/swr")
    await _go_stale()
    stale = await site.get("/swr", **{"Cache-Control": "nothing-to-see-here"})
    assert (stale.text, stale.headers["x-cache"]) == (first.text, "STALE")


async def test_ranges_of_a_stored_response(redis_url: str) -> None:
    calls = Counter[str]()

    async def page(request: Request) -> Response:
        calls[request.headers.get("range", "whole")] += 1
        return PlainTextResponse("0123456789A", headers={"Cache-Control": "max-age=60"})

    middleware = CacheMiddleware(
        Starlette(routes=[Route("/r", page)]),
        redis_url,
        prefix=unique("range"),
        metrics=private_metrics(),
    )
    transport = httpx.ASGITransport(app=middleware)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = await client.get("/r", headers={"Range": "bytes=0-1"})
            assert first.headers["x-cache"] == "BYPASS"  # nothing stored yet: the app's call
            await client.get("/r")
            for wanted, text in (
                ("bytes=0-1", "01"),
                ("bytes=1-", "123456789A"),
                ("bytes=-1", "A"),
            ):
                part = await client.get("/r", headers={"Range": wanted})
                assert (part.status_code, part.text, part.headers["x-cache"]) == (206, text, "HIT")
            whole = await client.get("/r", headers={"Range": "bytes=0-1,4-5"})
            assert (whole.status_code, whole.text) == (200, "0123456789A")
            guarded = await client.get("/r", headers={"Range": "bytes=0-1", "If-Range": '"x"'})
            assert guarded.headers["x-cache"] == "BYPASS"
    finally:
        await middleware.aclose()
    assert calls == {"bytes=0-1": 2, "whole": 1}


def test_negative_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="stale_while_revalidate"):
        CacheMiddleware(Starlette(), stale_while_revalidate=-1)
    with pytest.raises(ValueError, match="None: off"):
        CacheMiddleware(Starlette(), default_ttl=0)
    with pytest.raises(ValueError, match="last_modified_fraction"):
        CacheMiddleware(Starlette(), last_modified_fraction=2)


async def test_an_app_answering_with_the_validators_helper_is_revalidated(redis_url: str) -> None:
    """A FastAPI endpoint using ``not_modified``: a stale entry costs it a 304, not a render."""
    from fastapi import FastAPI

    from redis_checkpoint.web.validators import not_modified, validator_headers

    renders = Counter[str]()
    app = FastAPI()

    @app.get("/report")
    async def report(request: Request) -> Response:
        cache = {"Cache-Control": f"max-age={FRESH}"}
        unchanged = not_modified(request, etag="r1", last_modified=0.0, headers=cache)
        if unchanged is not None:
            return unchanged
        renders["report"] += 1
        headers = {**cache, **validator_headers(etag="r1", last_modified=0.0)}
        return PlainTextResponse("an expensive report", headers=headers)

    middleware = CacheMiddleware(app, redis_url, prefix=unique("helper"), metrics=private_metrics())
    transport = httpx.ASGITransport(app=middleware)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/report")).headers["x-cache"] == "MISS"
            for _ in range(2):
                await _go_stale()
                again = await client.get("/report")
                assert (again.text, again.headers["x-cache"]) == (
                    "an expensive report",
                    "REVALIDATED",
                )
    finally:
        await middleware.aclose()
    assert renders["report"] == 1
