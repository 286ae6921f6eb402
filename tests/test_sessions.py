"""Server-side sessions (``redis_checkpoint.SessionMiddleware``) on a real redis-server: the
Starlette drop-in's behaviour, the id-only cookie, writes of changed keys only, sliding and
absolute expiry, login with regeneration, logout everywhere across processes, tampered
cookies, and Redis going away in both modes."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from cache_helpers import unique
from http_helpers import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from redis_checkpoint import (
    CircuitBreaker,
    RedisUnavailableError,
    SessionMiddleware,
    invalidate_user_sessions,
    regenerate_session,
)
from redis_checkpoint.testing import RedisServer
from redis_checkpoint.web.sessions import SessionStore

SECRET = "a-test-secret-of-enough-length"


async def show(request: Request) -> Response:
    return JSONResponse(dict(request.session))


async def put(request: Request) -> Response:
    delay = float(request.query_params.get("delay", "0"))
    for key, value in request.query_params.items():
        if key != "delay":
            request.session[key] = value
    await asyncio.sleep(delay)  # lets two requests of one session overlap
    return PlainTextResponse("ok")


async def drop(request: Request) -> Response:
    request.session.pop(request.query_params["key"], None)
    return PlainTextResponse("ok")


async def clear(request: Request) -> Response:
    request.session.clear()
    return PlainTextResponse("ok")


async def login(request: Request) -> Response:
    request.session["user_id"] = request.query_params["user"]
    regenerate_session(request)
    return PlainTextResponse("ok")


async def logout_everywhere(request: Request) -> Response:
    ended = await invalidate_user_sessions(request, request.query_params["user"])
    return PlainTextResponse(str(ended))


async def unencodable(request: Request) -> Response:
    try:
        request.session["when"] = object()
    except TypeError as exc:
        return PlainTextResponse(f"refused: {exc}", status_code=400)
    return PlainTextResponse("stored?")


ROUTES = [
    Route("/show", show),
    Route("/put", put),
    Route("/drop", drop),
    Route("/clear", clear),
    Route("/login", login),
    Route("/logout-everywhere", logout_everywhere),
    Route("/unencodable", unencodable),
]


class Site:
    """An app behind SessionMiddleware, its Redis, and a counter of the store's round trips."""

    def __init__(self, redis_url: str, prefix: str | None = None, **options: Any) -> None:
        self.prefix = prefix or unique("sessions")
        self.middleware = SessionMiddleware(
            Starlette(routes=ROUTES), SECRET, target=redis_url, prefix=self.prefix, **options
        )
        self.round_trips = 0
        store = self.middleware.store
        real = store._redis

        async def counted(work: Any) -> Any:
            self.round_trips += 1
            return await real(work)

        store._redis = counted  # type: ignore[method-assign]

        #: Set when a real uvicorn serves the middleware: clients then speak HTTP over loopback.
        self.base_url: str | None = None

    def client(self) -> httpx.AsyncClient:
        if self.base_url is not None:
            return httpx.AsyncClient(base_url=self.base_url)
        transport = httpx.ASGITransport(app=self.middleware)
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async def aclose(self) -> None:
        if self.base_url is None:  # under uvicorn its client lives on the server's loop
            await self.middleware.aclose()


@pytest.fixture(params=["asgi", "uvicorn"])
async def site(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Site]:
    """A site spoken to in-process, and the same over loopback through a real uvicorn."""
    built = Site(redis_url)
    if request.param == "asgi":
        yield built
    else:
        with serve(built.middleware) as base:
            built.base_url = base
            yield built
    await built.aclose()


def _keys(redis_client: redis.Redis, prefix: str) -> list[bytes]:
    return sorted(redis_client.scan_iter(f"{prefix}:*"))


async def test_an_empty_session_writes_nothing_and_sets_no_cookie(
    site: Site, redis_client: redis.Redis
) -> None:
    async with site.client() as client:
        answer = await client.get("/show")
    assert answer.json() == {} and "set-cookie" not in answer.headers
    assert _keys(redis_client, site.prefix) == [] and site.round_trips == 0


async def test_the_cookie_holds_a_signed_id_and_redis_the_data(
    site: Site, redis_client: redis.Redis
) -> None:
    async with site.client() as client:
        first = await client.get("/put", params={"cart": "apples"})
        cookie = first.headers["set-cookie"]
        assert "apples" not in cookie
        for flag in ("httponly", "samesite=lax", "path=/", "Max-Age=1209600"):
            assert flag in cookie, flag
        assert (await client.get("/show")).json() == {"cart": "apples"}
    session_id = client.cookies["session"].rsplit(".", 1)[0]
    assert len(session_id) >= 43  # 256 random bits
    [key] = _keys(redis_client, site.prefix)
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    assert key.decode() == f"{site.prefix}:session:{digest}"  # not the id itself
    assert redis_client.hget(key, "d:cart") == b'"apples"'


async def test_round_trips_one_to_read_one_more_to_write(site: Site) -> None:
    async with site.client() as client:
        await client.get("/put", params={"a": "1"})
        site.round_trips = 0
        await client.get("/show")
        assert site.round_trips == 1  # read (and slide the idle timer)
        await client.get("/put", params={"a": "1"})  # the same value: nothing changed
        assert site.round_trips == 2
        await client.get("/put", params={"b": "2"})
        assert site.round_trips == 4  # read, then write the one changed key


async def test_a_read_does_not_rewrite_but_slides_the_idle_timer(
    redis_url: str, redis_client: redis.Redis
) -> None:
    site = Site(redis_url, idle_timeout=1.0)
    try:
        async with site.client() as client:
            await client.get("/put", params={"a": "1"})
            for _ in range(3):  # 1.8 s of activity, more than the idle timeout
                await asyncio.sleep(0.6)
                assert (await client.get("/show")).json() == {"a": "1"}
            [key] = _keys(redis_client, site.prefix)
            assert 0 < redis_client.pttl(key) <= 1000
            await asyncio.sleep(1.2)  # idle too long
            assert (await client.get("/show")).json() == {}
    finally:
        await site.aclose()


async def test_the_absolute_lifetime_ends_an_active_session(redis_url: str) -> None:
    site = Site(redis_url, idle_timeout=60, max_lifetime=1.5)
    try:
        async with site.client() as client:
            await client.get("/put", params={"a": "1"})
            await asyncio.sleep(0.8)
            assert (await client.get("/show")).json() == {"a": "1"}
            await asyncio.sleep(0.9)  # 1.7 s since creation, though active
            assert (await client.get("/show")).json() == {}
    finally:
        await site.aclose()


async def test_two_requests_changing_different_keys_both_keep_them(site: Site) -> None:
    async with site.client() as client:
        await client.get("/put", params={"start": "1"})
        await asyncio.gather(
            client.get("/put", params={"a": "1", "delay": "0.2"}),
            client.get("/put", params={"b": "2", "delay": "0.1"}),
        )
        assert (await client.get("/show")).json() == {"start": "1", "a": "1", "b": "2"}
        await client.get("/drop", params={"key": "a"})
        assert (await client.get("/show")).json() == {"start": "1", "b": "2"}


async def test_login_regenerates_the_id(site: Site, redis_client: redis.Redis) -> None:
    async with site.client() as client:
        await client.get("/put", params={"cart": "apples"})
        planted = client.cookies["session"]
        answer = await client.get("/login", params={"user": "alice"})
        assert "set-cookie" in answer.headers
        assert client.cookies["session"] != planted
        assert (await client.get("/show")).json() == {"cart": "apples", "user_id": "alice"}
    async with site.client() as attacker:
        attacker.cookies["session"] = planted  # the id known before login is worthless
        assert (await attacker.get("/show")).json() == {}
    assert len(_keys(redis_client, f"{site.prefix}:session")) == 1


async def test_clear_ends_the_session(site: Site, redis_client: redis.Redis) -> None:
    async with site.client() as client:
        await client.get("/put", params={"a": "1"})
        answer = await client.get("/clear")
        assert "01 Jan 1970" in answer.headers["set-cookie"]
        assert (await client.get("/show")).json() == {}
    assert _keys(redis_client, f"{site.prefix}:session:") == []


async def test_logout_everywhere_across_processes(redis_url: str) -> None:
    prefix = unique("everywhere")
    web, admin = Site(redis_url, prefix), Site(redis_url, prefix)  # two processes' middlewares
    try:
        async with web.client() as phone, web.client() as laptop, web.client() as bob:
            await phone.get("/login", params={"user": "alice"})
            await laptop.get("/login", params={"user": "alice"})
            await bob.get("/login", params={"user": "bob"})
            async with admin.client() as other:
                ended = await other.get("/logout-everywhere", params={"user": "alice"})
            assert ended.text == "2"
            assert (await phone.get("/show")).json() == {}
            assert (await laptop.get("/show")).json() == {}
            assert (await bob.get("/show")).json() == {"user_id": "bob"}
        store = SessionStore(redis_url, prefix=prefix)
        assert await store.invalidate_user("bob") == 1  # outside a request, too
        await store.aclose()
    finally:
        await web.aclose()
        await admin.aclose()


@pytest.mark.parametrize(
    "cookie",
    [
        "garbage",
        "",
        "abc.def",
        "null",
        "x" * 5000,
        "{sid}.AAAA",  # a real id with a forged signature
        "{truncated}",
        "{cookie}x",
        "eyJ1c2VyIjogImFkbWluIn0=.ZXhwaXJlZA.c2lnbmF0dXJl",  # Starlette's format, foreign
    ],
)
async def test_a_tampered_or_foreign_cookie_is_a_new_empty_session(site: Site, cookie: str) -> None:
    async with site.client() as client:
        await client.get("/put", params={"secret": "s3"})
        real = client.cookies["session"]
    value = cookie.format(sid=real.rsplit(".", 1)[0], cookie=real, truncated=real[:-3])
    async with site.client() as client:
        client.cookies["session"] = value
        answer = await client.get("/show")
        assert (answer.status_code, answer.json()) == (200, {})


async def test_a_hash_this_middleware_did_not_write_is_a_new_session(
    site: Site, redis_client: redis.Redis
) -> None:
    async with site.client() as client:
        await client.get("/put", params={"a": "1"})
        [key] = _keys(redis_client, site.prefix)
        redis_client.hset(key, "d:a", b"\xff not json")
        answer = await client.get("/show")
        assert (answer.status_code, answer.json()) == (200, {})


async def test_a_value_json_cannot_hold_fails_in_the_handler(site: Site) -> None:
    async with site.client() as client:
        answer = await client.get("/unencodable")
    assert answer.status_code == 400 and "session values must be JSON" in answer.text


async def test_starlette_options(redis_url: str) -> None:
    site = Site(
        redis_url,
        session_cookie="sid",
        max_age=None,
        path="/app",
        same_site="strict",
        https_only=True,
        domain="example.com",
    )
    try:
        async with site.client() as client:
            cookie = (await client.get("/put", params={"a": "1"})).headers["set-cookie"]
    finally:
        await site.aclose()
    assert cookie.startswith("sid=")
    for flag in ("path=/app", "samesite=strict", "secure", "domain=example.com", "httponly"):
        assert flag in cookie, flag
    assert "Max-Age" not in cookie  # max_age=None: a browser-session cookie
    with pytest.raises(ValueError, match="at least 16 bytes"):
        SessionMiddleware(Starlette(), "short")


async def test_vary_cookie_when_the_session_was_used(site: Site) -> None:
    async with site.client() as client:
        used = await client.get("/put", params={"a": "1"})
        assert used.headers["vary"] == "Cookie"  # a shared cache must key on the cookie


# -- what Starlette's own SessionMiddleware does, ours does ----------------------------------


async def view(request: Request) -> Response:
    return JSONResponse({"session": request.session})


async def untouched(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def merge(request: Request) -> Response:
    session = request.session
    session |= await request.json()
    return JSONResponse({"session": request.session})


async def pop_last(request: Request) -> Response:
    request.session.popitem()
    return JSONResponse({"session": request.session})


async def clear_all(request: Request) -> Response:
    request.session.clear()
    return JSONResponse({"session": request.session})


async def pop_a(request: Request) -> Response:
    return JSONResponse({"value": request.session.pop("a")})


def _starlette_like(redis_url: str, **options: Any) -> SessionMiddleware:
    routes = [
        Route("/view", view),
        Route("/untouched", untouched),
        Route("/merge", merge, methods=["POST"]),
        Route("/pop-last", pop_last, methods=["POST"]),
        Route("/pop-a", pop_a, methods=["POST"]),
        Route("/clear", clear_all, methods=["POST"]),
    ]
    return SessionMiddleware(
        Starlette(routes=routes), SECRET, target=redis_url, prefix=unique("drop-in"), **options
    )


@pytest.fixture(params=["asgi", "uvicorn"])
async def drop_in(
    redis_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    app = _starlette_like(redis_url)
    if request.param == "uvicorn":
        with serve(app) as base:
            async with httpx.AsyncClient(base_url=base) as client:
                yield client
        return
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
    await app.aclose()


async def test_drop_in_round_trip_and_cookie_lifetime(drop_in: httpx.AsyncClient) -> None:
    assert (await drop_in.get("/view")).json() == {"session": {}}
    stored = await drop_in.post("/merge", json={"some": "data"})
    assert stored.json() == {"session": {"some": "data"}}
    assert "; Max-Age=1209600;" in stored.headers["set-cookie"]  # 14 days, as Starlette's
    assert (await drop_in.get("/view")).json() == {"session": {"some": "data"}}
    assert (await drop_in.post("/clear")).json() == {"session": {}}
    assert (await drop_in.get("/view")).json() == {"session": {}}


async def test_drop_in_cookie_only_when_modified_and_vary_on_access(
    drop_in: httpx.AsyncClient,
) -> None:
    written = await drop_in.post("/merge", json={"a": "1", "b": "2"})
    assert "set-cookie" in written.headers and "cookie" in written.headers["vary"].lower()
    read = await drop_in.get("/view")
    assert "set-cookie" not in read.headers and "cookie" in read.headers["vary"].lower()
    assert "vary" not in (await drop_in.get("/untouched")).headers
    popped = await drop_in.post("/pop-a")
    assert popped.json() == {"value": "1"} and "set-cookie" in popped.headers
    assert (await drop_in.post("/merge", json={"c": "3"})).json() == {
        "session": {"b": "2", "c": "3"}
    }
    assert (await drop_in.post("/pop-last")).json() == {"session": {"b": "2"}}
    assert (await drop_in.get("/view")).json() == {"session": {"b": "2"}}


@pytest.mark.parametrize("partitioned", [False, True])
async def test_drop_in_partitioned(redis_url: str, partitioned: bool) -> None:
    app = _starlette_like(redis_url, https_only=True, same_site="none", partitioned=partitioned)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            for answer in (
                await client.post("/merge", json={"a": "1"}),
                await client.post("/clear"),
            ):
                attributes = answer.headers["set-cookie"].split("; ")
                assert ("partitioned" in attributes) is partitioned
                assert "secure" in attributes and "samesite=none" in attributes
    finally:
        await app.aclose()


async def test_drop_in_a_negative_max_age_expires_at_once(redis_url: str) -> None:
    app = _starlette_like(redis_url, max_age=-1)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            answer = await client.post("/merge", json={"some": "data"})
            value = answer.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
            client.cookies["session"] = value  # httpx drops expired cookies; send it anyway
            assert (await client.get("/view")).json() == {"session": {}}
    finally:
        await app.aclose()


# -- Redis going away --------------------------------------------------------------------


@pytest.fixture
def restartable(redis_server_bin: str) -> Iterator[RedisServer]:
    with RedisServer(binary=redis_server_bin, appendonly=True) as started:
        yield started


def _quick_breaker() -> CircuitBreaker:
    return CircuitBreaker("sessions", recovery_timeout=0.1, max_recovery_timeout=0.1)


async def test_fail_closed_refuses_what_needs_the_store(restartable: RedisServer) -> None:
    site = Site(restartable.url, breaker=_quick_breaker())
    try:
        async with site.client() as client:
            await client.get("/put", params={"a": "1"})
            restartable.stop()
            refused = await client.get("/show")
            assert (refused.status_code, refused.headers["retry-after"]) == (503, "5")
            async with site.client() as anonymous:
                assert (await anonymous.get("/show")).status_code == 200  # needs no session
                assert (await anonymous.get("/put", params={"a": "1"})).status_code == 503
                with pytest.raises(RedisUnavailableError, match="sessions: Redis at"):
                    await anonymous.get("/logout-everywhere", params={"user": "x"})
            restartable.restart()
            await asyncio.sleep(0.2)
            assert (await client.get("/show")).json() == {"a": "1"}
    finally:
        await site.aclose()


async def test_memory_mode_serves_and_owes_then_writes_back(restartable: RedisServer) -> None:
    site = Site(restartable.url, on_unavailable="memory", breaker=_quick_breaker())
    try:
        async with site.client() as client:
            await client.get("/put", params={"a": "1"})
            restartable.stop()
            assert (await client.get("/show")).json() == {"a": "1"}  # from this process
            assert (await client.get("/put", params={"b": "2"})).status_code == 200
            assert site.middleware.store.owed >= 1
            restartable.restart()
            await asyncio.sleep(0.2)
            assert (await client.get("/show")).json() == {"a": "1", "b": "2"}
            assert site.middleware.store.owed == 0
        # Another process now reads what was written during the outage.
        other = Site(restartable.url, site.prefix)
        async with other.client() as same_user:
            same_user.cookies["session"] = client.cookies["session"]
            assert (await same_user.get("/show")).json() == {"a": "1", "b": "2"}
        await other.aclose()
    finally:
        await site.aclose()


# -- a real server --------------------------------------------------------------------------


@pytest.fixture
def served(redis_url: str) -> Iterator[str]:
    site = Site(redis_url, idle_timeout=1.0)
    with serve(site.middleware) as base:
        yield base


def test_over_loopback_writes_logout_tampering_and_expiry(served: str) -> None:
    """The same behaviours through uvicorn and real sockets, several connections at once."""
    with httpx.Client(base_url=served) as phone, httpx.Client(base_url=served) as laptop:
        phone.get("/login", params={"user": "dave"})
        laptop.get("/login", params={"user": "dave"})
        laptop.cookies["session"] = phone.cookies["session"]  # one session, two connections

        def put(client: httpx.Client, key: str) -> None:
            client.get("/put", params={key: "1", "delay": "0.2"})

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(put, (phone, laptop), ("a", "b")))
        assert phone.get("/show").json() == {"user_id": "dave", "a": "1", "b": "1"}
        with httpx.Client(base_url=served) as forger:
            forger.cookies["session"] = phone.cookies["session"][:-2] + "xx"
            assert forger.get("/show").json() == {}
        with httpx.Client(base_url=served) as admin:
            # The laptop's own login session too, though the laptop now uses the phone's.
            assert admin.get("/logout-everywhere", params={"user": "dave"}).text == "2"
        assert phone.get("/show").json() == {}
        phone.get("/put", params={"c": "1"})
        time.sleep(1.2)  # past the idle timeout
        assert phone.get("/show").json() == {}


def test_a_login_over_loopback(served: str) -> None:
    with httpx.Client(base_url=served) as client:
        client.get("/put", params={"cart": "pears"})
        before = client.cookies["session"]
        client.get("/login", params={"user": "carol"})
        assert client.cookies["session"] != before
        assert client.get("/show").json() == {"cart": "pears", "user_id": "carol"}


async def test_a_change_never_brings_back_an_ended_session(
    redis_url: str, redis_client: redis.Redis
) -> None:
    store = SessionStore(redis_url, prefix=unique("ended"))
    try:
        key = store.key("gone")
        await store.save("gone", {b"d:a": b'"1"'}, [], created=time.time())
        assert redis_client.exists(key) == 0  # expired (or ended) between read and write
        await store.save("live", {b"d:a": b'"1"'}, [], replace=True, created=time.time())
        await store.save("live", {b"d:b": b'"2"'}, [b"d:a"], created=time.time())
        assert redis_client.hgetall(store.key("live")) == {b"d:b": b'"2"'}
        assert 0 < redis_client.pttl(store.key("live")) <= 7_200_000  # its TTL kept
    finally:
        await store.aclose()
