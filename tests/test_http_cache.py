"""CacheMiddleware as a shared RFC 9111 cache, on a real Redis, through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis
from cache_helpers import unique
from http_helpers import make_app, post_in_process

from redis_checkpoint import CacheMiddleware
from redis_checkpoint.web.entry import primary_key


class Site:
    def __init__(self, app: CacheMiddleware, prefix: str) -> None:
        self.app = app
        self.prefix = prefix
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )

    @property
    def calls(self) -> Any:
        return self.app.calls  # type: ignore[attr-defined]

    async def get(self, path: str, **headers: str) -> httpx.Response:
        return await self.client.get(path, headers=headers)

    def entry_key(self, path: str, query: bytes = b"") -> str:
        key = primary_key("http", "testserver", path, query, None)
        return self.app.engine.core.layout.entry(self.app.namespace, key)


@pytest.fixture
async def site(redis_url: str) -> AsyncIterator[Site]:
    prefix = unique("http")
    app = make_app(redis_url, prefix)
    the_site = Site(app, prefix)
    try:
        yield the_site
    finally:
        await the_site.client.aclose()
        await app.aclose()


async def test_miss_then_hit_with_age_and_etag(site: Site) -> None:
    first = await site.get("/plain")
    second = await site.get("/plain")
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert first.text == second.text == "/plain#1"
    assert site.calls["/plain"] == 1
    assert int(second.headers["age"]) >= 0
    expected = '"' + hashlib.blake2b(b"/plain#1", digest_size=16).hexdigest() + '"'
    assert first.headers["etag"] == second.headers["etag"] == expected  # content, not process
    assert second.headers["content-length"] == str(len(b"/plain#1"))
    assert second.headers["content-type"].startswith("text/plain")


async def test_no_cross_user_leak_on_me(site: Site) -> None:
    alice = await site.get("/me", authorization="Bearer alice")
    bob = await site.get("/me", authorization="Bearer bob")
    alice_again = await site.get("/me", authorization="Bearer alice")
    anonymous = await site.get("/me")
    cookie_carol = await site.get("/me", cookie="session=carol")
    cookie_dave = await site.get("/me", cookie="session=dave")
    anonymous_again = await site.get("/me")
    assert alice.text == alice_again.text == "profile of Bearer alice"
    assert bob.text == "profile of Bearer bob"
    assert cookie_carol.text == "profile of carol" and cookie_dave.text == "profile of dave"
    assert anonymous.text == anonymous_again.text == "profile of nobody"
    assert anonymous_again.headers["x-cache"] == "HIT"  # the anonymous page is shared
    assert cookie_carol.headers["x-cache"] == cookie_dave.headers["x-cache"] == "BYPASS"
    assert site.calls["/me"] == 6  # every authenticated request reached the app


async def test_per_user_route_caches_each_user_apart(site: Site) -> None:
    alice = await site.get("/users/me", authorization="Bearer alice")
    bob = await site.get("/users/me", authorization="Bearer bob")
    alice_again = await site.get("/users/me", authorization="Bearer alice")
    bob_again = await site.get("/users/me", authorization="Bearer bob")
    assert alice_again.headers["x-cache"] == bob_again.headers["x-cache"] == "HIT"
    assert alice.text == alice_again.text == "profile of Bearer alice"
    assert bob.text == bob_again.text == "profile of Bearer bob"
    assert (await site.get("/users/me")).text == "profile of nobody"
    assert site.calls["/users/me"] == 3


async def test_set_cookie_is_never_replayed(site: Site) -> None:
    first = await site.get("/set-cookie")
    site.client.cookies.clear()  # the next request comes from another client, without cookies
    second = await site.get("/set-cookie")
    assert "set-cookie" in first.headers and "set-cookie" in second.headers
    assert second.headers["x-cache"] == "MISS" and site.calls["/set-cookie"] == 2


async def test_authorization_is_served_only_shareable_responses(site: Site) -> None:
    await site.get("/public", authorization="Bearer alice")
    shared = await site.get("/public", authorization="Bearer bob")
    assert shared.headers["x-cache"] == "HIT"  # the response said public
    await site.get("/plain")
    with_auth = await site.get("/plain", authorization="Bearer bob")
    assert with_auth.headers["x-cache"] == "MISS" and site.calls["/plain"] == 2


@pytest.mark.parametrize("path", ["/private", "/no-store", "/error", "/vary-star"])
async def test_responses_that_must_not_be_stored(site: Site, path: str) -> None:
    await site.get(path)
    again = await site.get(path)
    assert again.headers["x-cache"] == "MISS" and site.calls[path] == 2


async def test_vary_matches_request_headers(site: Site) -> None:
    english = await site.get("/vary", **{"accept-language": "en"})
    french = await site.get("/vary", **{"accept-language": "fr"})
    english_again = await site.get("/vary", **{"accept-language": "en"})
    absent = await site.get("/vary")
    absent_again = await site.get("/vary")
    assert english.text.endswith("lang=en") and french.text.endswith("lang=fr")
    assert english_again.text == english.text and english_again.headers["x-cache"] == "HIT"
    assert absent.text.endswith("lang=None") and absent.headers["x-cache"] == "MISS"
    assert absent_again.headers["x-cache"] == "HIT" and absent_again.text == absent.text
    empty = await site.get("/vary", **{"accept-language": ""})
    assert empty.headers["x-cache"] == "MISS"  # an empty header is not an absent one
    assert site.calls["/vary"] == 4


async def test_lifetime_precedence(site: Site, redis_client: redis.Redis) -> None:
    for path in ("/s-maxage", "/max-age", "/plain", "/short"):
        await site.get(path)
    ttl = {
        path: redis_client.pttl(site.entry_key(path)) / 1000
        for path in ("/s-maxage", "/max-age", "/plain", "/short")
    }
    assert 90 < ttl["/s-maxage"] <= 100  # s-maxage over max-age
    assert 40 < ttl["/max-age"] <= 50
    assert 590 < ttl["/plain"] <= 600  # the default
    assert 20 < ttl["/short"] <= 30  # the route's rule
    # ... and what it stored is served: the rule's ttl=30 is an int, the README's form.
    assert (await site.get("/short")).headers["x-cache"] == "HIT"


async def test_age_includes_upstream_age(site: Site, redis_client: redis.Redis) -> None:
    await site.get("/aged")
    hit = await site.get("/aged")
    assert int(hit.headers["age"]) >= 40
    assert 50 < redis_client.pttl(site.entry_key("/aged")) / 1000 <= 60


async def test_if_none_match_answers_304(site: Site) -> None:
    etag = (await site.get("/plain")).headers["etag"]
    for value in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = await site.get("/plain", **{"if-none-match": value})
        assert response.status_code == 304, value
        assert response.content == b"" and response.headers["etag"] == etag
    different = await site.get("/plain", **{"if-none-match": '"nope", W/"other"'})
    assert different.status_code == 200 and different.text == "/plain#1"
    cold = await site.get("/max-age", **{"if-none-match": "*"})
    assert cold.status_code == 304 and cold.headers["x-cache"] == "MISS"
    assert site.calls["/plain"] == 1


async def test_app_etag_is_kept_and_compared_weakly(site: Site) -> None:
    await site.get("/own-etag")
    response = await site.get("/own-etag", **{"if-none-match": '"v1"'})
    assert response.status_code == 304 and response.headers["etag"] == 'W/"v1"'


async def test_head_is_served_from_the_get_entry(site: Site) -> None:
    cold_head = await site.client.head("/max-age")
    assert cold_head.headers["x-cache"] == "MISS"
    assert (await site.get("/max-age")).headers["x-cache"] == "MISS"  # HEAD stored nothing
    head = await site.client.head("/max-age")
    assert head.headers["x-cache"] == "HIT" and head.content == b""
    assert head.headers["content-length"] == str(len("/max-age#2"))
    assert site.calls["/max-age"] == 2


async def test_404_is_replayed_as_404(site: Site) -> None:
    await site.get("/missing")
    again = await site.get("/missing")
    assert again.status_code == 404 and again.headers["x-cache"] == "HIT"
    assert again.text == "/missing#1"
    conditional = await site.get("/missing", **{"if-none-match": "*"})
    assert conditional.status_code == 404  # 304 answers only what would be a 2xx


async def test_post_in_another_process_invalidates(site: Site, redis_url: str) -> None:
    await site.get("/items")
    await site.client.get("/items", params={"page": "2"})
    assert (await site.get("/items")).headers["x-cache"] == "HIT"
    process = multiprocessing.get_context("spawn").Process(
        target=post_in_process, args=(redis_url, site.prefix, "/items")
    )
    process.start()
    process.join(60)
    assert process.exitcode == 0
    after = await site.get("/items")
    assert after.headers["x-cache"] == "MISS" and after.text == "/items#3"
    page_two = await site.client.get("/items", params={"page": "2"})
    assert page_two.headers["x-cache"] == "MISS"  # every query string of the path


async def test_unsafe_requests_invalidate_uri_and_related_prefixes(site: Site) -> None:
    await site.get("/items")
    await site.get("/items/5")
    await site.get("/items/6")
    deleted = await site.client.delete("/items/5")
    assert deleted.status_code == 200 and deleted.headers["x-cache"] == "BYPASS"
    assert (await site.get("/items/5")).headers["x-cache"] == "MISS"
    assert (await site.get("/items")).headers["x-cache"] == "MISS"  # the rule's prefix
    # /items/6 is under the prefix /items too: a related prefix drops its whole subtree.
    assert (await site.get("/items/6")).headers["x-cache"] == "MISS"
    assert (await site.get("/plain")).headers["x-cache"] == "MISS"
    assert (await site.get("/plain")).headers["x-cache"] == "HIT"


async def test_failed_write_invalidates_nothing(site: Site) -> None:
    await site.get("/plain")
    refused = await site.client.post("/plain")  # 405 from the router
    assert refused.status_code == 405
    assert (await site.get("/plain")).headers["x-cache"] == "HIT"


async def test_streams_pass_through_and_are_stored_when_complete(site: Site) -> None:
    first = await site.get("/stream")
    assert first.text == "/stream#1:0;/stream#1:1;/stream#1:2;"
    assert first.headers["x-cache"] == "MISS" and "etag" not in first.headers
    second = await site.get("/stream")
    assert second.headers["x-cache"] == "HIT" and second.text == first.text
    assert "etag" in second.headers
    big = await site.client.get("/stream", params={"size": "10"})  # over max_body_bytes=64
    assert len(big.content) > 64
    assert (await site.client.get("/stream", params={"size": "10"})).headers["x-cache"] == "MISS"


async def test_a_broken_stream_is_not_stored(site: Site) -> None:
    with pytest.raises(RuntimeError, match="the stream broke"):
        await site.client.get("/stream", params={"fail": "1"})
    with pytest.raises(RuntimeError):
        await site.client.get("/stream", params={"fail": "1"})
    assert site.calls["/stream"] == 2


async def test_request_directives_and_bypass_rules(site: Site) -> None:
    await site.get("/plain")
    assert (await site.get("/plain", **{"cache-control": "no-cache"})).headers["x-cache"] == "MISS"
    assert (await site.get("/plain", **{"cache-control": "no-store"})).headers["x-cache"] == (
        "BYPASS"
    )
    # A range of a fresh entry is answered from it (RFC 9110 15.3.7); nothing partial is stored.
    ranged = await site.get("/plain", range="bytes=0-1")
    assert (ranged.status_code, ranged.headers["x-cache"], ranged.text) == (206, "HIT", "/p")
    assert ranged.headers["content-range"] == "bytes 0-1/8"
    assert (await site.get("/other", range="bytes=0-1")).headers["x-cache"] == "BYPASS"
    assert (await site.get("/plain")).text == "/plain#2"  # the no-cache fetch was stored
    assert (await site.get("/never")).headers["x-cache"] == "BYPASS"
    assert (await site.get("/never")).headers["x-cache"] == "BYPASS"
    assert site.calls["/never"] == 2


async def test_corrupt_entry_is_a_miss(site: Site, redis_client: redis.Redis) -> None:
    await site.get("/plain")
    key = site.entry_key("/plain")
    raw = redis_client.get(key)
    assert isinstance(raw, bytes)
    redis_client.set(key, raw[: raw.index(b":", 4) + 1] + b"\x92\xa1Xfake")
    again = await site.get("/plain")
    assert again.headers["x-cache"] == "MISS" and again.text == "/plain#2"
    assert site.app.engine.stats()["http"].errors == 1


async def test_redis_down_passes_through(dead_url: str) -> None:
    app = make_app(dead_url, unique("http-down"))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    try:
        labels = [(await client.get("/plain")).headers["x-cache"] for _ in range(5)]
        assert labels == ["BYPASS"] * 5
        assert app.calls["/plain"] == 5  # type: ignore[attr-defined]
        assert app.engine.core.breaker.state == "open"
        tried = app.engine.round_trips
        for _ in range(20):
            response = await client.get("/plain")
            assert response.status_code == 200
        assert (await client.post("/items")).status_code == 201
        assert app.engine.round_trips == tried  # the open breaker answered: no network call
    finally:
        await client.aclose()
        await app.aclose()


def test_bad_configuration_is_refused() -> None:
    from redis_checkpoint import CacheRule

    with pytest.raises(ValueError, match="ttl"):
        CacheRule("/x", ttl=0)
    with pytest.raises(TypeError, match="sequence of path prefixes"):
        CacheRule("/x", invalidates="/items")
    with pytest.raises(ValueError, match="default_ttl"):
        CacheMiddleware(lambda *a: None, "redis://127.0.0.1:1/0", default_ttl=0)  # type: ignore[arg-type,return-value]


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait (event loop running) until ``condition`` holds; fail after 10 s."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


async def test_near_cache_skips_redis_and_hears_every_processs_writes(redis_url: str) -> None:
    prefix = unique("http-near")
    near_app = make_app(redis_url, prefix, local_ttl=600)
    other_app = make_app(redis_url, prefix)  # another process of the same site, no near cache
    near, other = Site(near_app, prefix), Site(other_app, prefix)
    invalidations = near_app.invalidations
    assert near_app.near is not None
    try:
        await near.get("/items")
        await _until(lambda: invalidations.listening, "the near cache is subscribed")
        assert (await near.get("/items")).headers["x-cache"] == "HIT"  # read from Redis once
        before = near_app.engine.round_trips
        for _ in range(5):
            assert (await near.get("/items")).text == "/items#1"
        assert near_app.engine.round_trips == before  # served from process memory
        # A write through this process is seen by this process at once.
        assert (await near.client.post("/items")).status_code == 201
        assert (await near.get("/items")).text == "/items#2"
        assert (await near.get("/items")).headers["x-cache"] == "HIT"
        assert len(near_app.near) > 0
        # A write through another process empties this near cache over pub/sub, long before
        # the 600 s local_ttl would.
        assert (await other.client.post("/items")).status_code == 201
        await _until(lambda: len(near_app.near) == 0, "the other process's write is heard")
        assert (await near.get("/items")).text == "/items#3"
    finally:
        for site in (near, other):
            await site.client.aclose()
            await site.app.aclose()


async def test_a_near_cache_that_cannot_hear_invalidations_is_not_used(redis_url: str) -> None:
    prefix = unique("http-near-deaf")
    near_app = make_app(redis_url, prefix, local_ttl=600)
    site = Site(near_app, prefix)
    invalidations = near_app.invalidations
    assert near_app.near is not None
    try:
        await site.get("/items")
        await _until(lambda: invalidations.listening, "the near cache is subscribed")
        await invalidations.aclose()  # as if the subscription broke
        invalidations.listening = False
        before = near_app.engine.round_trips
        assert (await site.get("/items")).headers["x-cache"] == "HIT"
        assert near_app.engine.round_trips == before + 1  # from Redis, not from memory
    finally:
        await site.client.aclose()
        await near_app.aclose()


async def test_fallback_to_memory_keeps_caching_in_one_process(dead_url: str) -> None:
    app = make_app(dead_url, unique("http-memory"), fallback_to_memory=True)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    try:
        labels = [(await client.get("/plain")).headers["x-cache"] for _ in range(6)]
        # The first lookups fail until the breaker opens; then the memory tier serves.
        assert labels[-1] == "HIT" and "BYPASS" not in labels
        assert app.engine.serving_from_memory
        assert (await client.post("/items")).status_code == 201
    finally:
        await client.aclose()
        await app.aclose()


async def test_added_the_starlette_way(redis_url: str) -> None:
    from collections import Counter

    from cache_helpers import private_metrics
    from http_helpers import make_inner
    from starlette.middleware import Middleware

    calls: Counter[str] = Counter()
    inner = make_inner(calls)
    options = {"target": redis_url, "prefix": unique("http-mw"), "metrics": private_metrics()}
    app = type(inner)(routes=inner.routes, middleware=[Middleware(CacheMiddleware, **options)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        assert (await client.get("/plain")).headers["x-cache"] == "MISS"
        assert (await client.get("/plain")).headers["x-cache"] == "HIT"
    assert calls["/plain"] == 1


async def test_held_responses_in_several_chunks(redis_url: str) -> None:
    from cache_helpers import private_metrics

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        declared, chunks = {
            "/two-chunks": (b"20", [b"a" * 10, b"b" * 10]),
            "/lying-length": (b"5", [b"c" * 50, b"d" * 50]),  # over max_body_bytes=64
        }[scope["path"]]
        headers = [(b"content-type", b"text/plain"), (b"content-length", declared)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index, chunk in enumerate(chunks):
            more = index < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

    app = CacheMiddleware(
        raw_app, redis_url, prefix=unique("http-raw"), metrics=private_metrics(), max_body_bytes=64
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await client.get("/two-chunks")
        assert first.content == b"a" * 10 + b"b" * 10 and "etag" in first.headers
        assert (await client.get("/two-chunks")).headers["x-cache"] == "HIT"
        lying = await client.get("/lying-length")
        assert lying.content == b"c" * 50 + b"d" * 50  # every byte the app sent
        assert (await client.get("/lying-length")).headers["x-cache"] == "MISS"  # not stored
    await app.aclose()
