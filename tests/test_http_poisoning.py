"""Web cache poisoning and deception against CacheMiddleware on its defaults, over a real uvicorn.

The app behind the cache honours request inputs that real apps honour: forwarding headers to
build absolute URLs, rewrite headers (IIS, Symfony), method overrides (Rails, many APIs), a body
on GET. Each attack request is followed by a plain visitor's request for the same URL, which must
get the app's honest answer. uvicorn runs with ``proxy_headers=False``: an app exposed directly,
where every such header comes from the client and only the cache stands between the two.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cache_helpers import private_metrics, unique
from http_helpers import http_scope, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from redis_checkpoint import CacheMiddleware, CacheRule, TrustedForwarding

PUBLIC = {"cache-control": "public, max-age=60"}


def _forwarded(request: Request, name: str) -> str | None:
    for part in request.headers.get("forwarded", "").split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def page(request: Request) -> Response:
    headers = request.headers
    host = headers.get("x-forwarded-host") or _forwarded(request, "host") or headers["host"]
    scheme = (
        headers.get("x-forwarded-proto")
        or headers.get("x-forwarded-scheme")
        or _forwarded(request, "proto")
        or request.url.scheme
    )
    server = headers.get("x-forwarded-server", "origin")
    html = f'<script src="{scheme}://{host}/app.js"></script><!-- served by {server} -->'
    return HTMLResponse(html, headers=PUBLIC)


async def address(request: Request) -> Response:
    client = request.client.host if request.client else "?"
    seen = request.headers.get("x-forwarded-for") or request.headers.get("x-real-ip") or client
    return HTMLResponse(f"your address: {seen}", headers=PUBLIC)


async def search(request: Request) -> Response:
    body = (await request.body()).decode()
    return PlainTextResponse(f"results for {body or request.query_params['q']}", headers=PUBLIC)


async def items(request: Request) -> Response:
    if request.method == "DELETE":
        return PlainTextResponse("deleted every item")
    return PlainTextResponse("3 items", headers=PUBLIC)


async def profile(request: Request) -> Response:
    """A private page that forgot to say so (no Cache-Control), served under any suffix, as
    frameworks that ignore extra path segments or ``;`` parameters do."""
    who = (
        request.cookies.get("session")
        or request.headers.get("authorization")
        or request.headers.get("x-api-key")
        or "nobody"
    )
    return PlainTextResponse(f"profile of {who}")


def honouring(app: Any) -> Any:
    """What front-end-aware frameworks do before routing: a rewrite header replaces the path, a
    method-override header replaces the method."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])
        rewrite = headers.get(b"x-original-url") or headers.get(b"x-rewrite-url")
        if rewrite:
            scope = {**scope, "path": rewrite.decode(), "raw_path": rewrite}
        override = headers.get(b"x-http-method-override") or headers.get(b"x-method-override")
        if override:
            scope = {**scope, "method": override.decode().upper()}
        await app(scope, receive, send)

    return wrapped


def make_site(url: str, **options: Any) -> CacheMiddleware:
    routes = [
        Route("/page", page),
        Route("/address", address),
        Route("/search", search),
        Route("/home", lambda _: PlainTextResponse("home page", headers=PUBLIC)),
        Route("/admin", lambda _: PlainTextResponse("admin panel", headers=PUBLIC)),
        Route("/items", items, methods=["GET", "DELETE"]),
        Route("/me{rest:path}", profile),
    ]
    # Rules like these are what web cache deception counts on: "static files are cacheable".
    rules = [CacheRule("*.css", ttl=3600), CacheRule("*.js", ttl=3600)]
    return CacheMiddleware(
        honouring(Starlette(routes=routes)),
        url,
        prefix=unique("poison"),
        metrics=private_metrics(),
        rules=rules,
        **options,
    )


@pytest.fixture(scope="module", params=["httptools", "h11"])
def site(redis_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The site under uvicorn's two HTTP/1.1 parsers, which accept different malformed input."""
    with serve(make_site(redis_url), proxy_headers=False, http=request.param) as base:
        yield base


# (name, path, attacker's headers, what the attacker's answer shows, X-Cache of the attack)
VECTORS = [
    ("x-forwarded-host", "/page", {"x-forwarded-host": "evil.example"}, "evil.example", "MISS"),
    ("x-forwarded-proto", "/page", {"x-forwarded-proto": "evil"}, "evil://", "MISS"),
    ("x-forwarded-scheme", "/page", {"x-forwarded-scheme": "evil"}, "evil://", "MISS"),
    ("x-forwarded-server", "/page", {"x-forwarded-server": "evil.example"}, "evil", "MISS"),
    ("forwarded", "/page", {"forwarded": "host=evil.example;proto=https"}, "evil", "MISS"),
    ("x-forwarded-for", "/address", {"x-forwarded-for": "<script>x</script>"}, "<script>", "MISS"),
    ("x-real-ip", "/address", {"x-real-ip": "<script>x</script>"}, "<script>", "MISS"),
    ("x-original-url", "/home", {"x-original-url": "/admin"}, "admin panel", "MISS"),
    ("x-rewrite-url", "/home", {"x-rewrite-url": "/admin"}, "admin panel", "MISS"),
    ("x-http-method-override", "/items", {"x-http-method-override": "DELETE"}, "deleted", "BYPASS"),
    ("x-method-override", "/items", {"x-method-override": "DELETE"}, "deleted", "BYPASS"),
]


@pytest.mark.parametrize(
    ("name", "path", "headers", "evil", "attack_cache"), VECTORS, ids=[v[0] for v in VECTORS]
)
def test_an_unkeyed_input_cannot_poison_the_entry_of_plain_visitors(
    site: str, name: str, path: str, headers: dict[str, str], evil: str, attack_cache: str
) -> None:
    url = f"{path}?vector={name}"
    with httpx.Client(base_url=site) as attacker, httpx.Client(base_url=site) as visitor:
        attack = attacker.get(url, headers=headers)
        assert evil in attack.text  # the app did honour the input
        assert attack.headers["x-cache"] == attack_cache
        for expected_cache in ("MISS", "HIT"):
            answer = visitor.get(url)
            assert evil not in answer.text, answer.text
            assert answer.headers["x-cache"] == expected_cache
        if attack_cache == "MISS":  # keyed: the attacker's own entry, which only they reach
            again = attacker.get(url, headers=headers)
            assert again.headers["x-cache"] == "HIT" and evil in again.text


def test_a_method_override_invalidates_like_the_method_it_names(site: str) -> None:
    url = "/items?vector=override-invalidates"
    with httpx.Client(base_url=site) as client:
        client.get(url)
        assert client.get(url).headers["x-cache"] == "HIT"
        client.get(url, headers={"x-http-method-override": "DELETE"})
        assert client.get(url).headers["x-cache"] == "MISS"


def test_a_body_on_get_is_never_stored_for_plain_gets(site: str) -> None:
    url = "/search?q=shoes&vector=fat-get"
    with httpx.Client(base_url=site) as client:
        attack = client.request("GET", url, content=b"evil")
        assert attack.text == "results for evil" and attack.headers["x-cache"] == "BYPASS"
        first, second = client.get(url), client.get(url)
    assert first.text == second.text == "results for shoes"
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")


async def test_a_body_without_content_length_is_not_stored(redis_url: str) -> None:
    """HTTP/2 may carry a body with no Content-Length: the body the app reads is what counts."""
    app = make_site(redis_url)

    async def get(body: bytes) -> tuple[bytes, bytes]:
        incoming = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = http_scope(
            "GET",
            "/search",
            query=b"q=shoes",
            host=b"shop.example",
            scheme="https",
            http_version="2",
        )
        await app(scope, receive, send)
        answer = b"".join(message.get("body", b"") for message in sent[1:])
        return dict(sent[0]["headers"])[b"x-cache"], answer

    assert await get(b"evil") == (b"MISS", b"results for evil")
    assert await get(b"") == (b"MISS", b"results for shoes")
    assert await get(b"") == (b"HIT", b"results for shoes")
    await app.aclose()


def _raw_get(base: str, request: bytes) -> bytes:
    where = urlsplit(base)
    assert where.hostname is not None and where.port is not None
    with socket.create_connection((where.hostname, where.port), timeout=10) as conn:
        conn.sendall(request)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return reply


def test_two_host_headers_bypass(site: str) -> None:
    """The app reads the first Host header; a key made from another would file the attacker's
    page under the visitor's URL."""
    own = urlsplit(site).netloc
    attack = (
        f"GET /page?vector=two-hosts HTTP/1.1\r\nHost: evil.example\r\nHost: {own}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    reply = _raw_get(site, attack)
    if reply.startswith(b"HTTP/1.1 200"):  # httptools lets it through; h11 answers 400 itself
        assert b"evil.example" in reply and b"x-cache: BYPASS" in reply
    else:
        assert reply.startswith(b"HTTP/1.1 400")
    with httpx.Client(base_url=site) as visitor:
        answer = visitor.get("/page?vector=two-hosts")
    assert "evil" not in answer.text and answer.headers["x-cache"] == "MISS"


@pytest.mark.parametrize("path", ["/me/x.css", "/me;.js", "/me/avatar.css?v=1"])
@pytest.mark.parametrize(
    "credentials",
    [
        {"cookie": "session=alice"},
        {"authorization": "Bearer alice"},
        {"x-api-key": "alice"},
    ],
    ids=["cookie", "authorization", "x-api-key"],
)
def test_web_cache_deception_stores_no_private_page(
    site: str, path: str, credentials: dict[str, str]
) -> None:
    """The victim follows the attacker's link to their own profile under a static-looking
    path; the attacker then asks for the same URL."""
    url = f"{path}{'&' if '?' in path else '?'}for={next(iter(credentials))}"
    with httpx.Client(base_url=site) as victim, httpx.Client(base_url=site) as attacker:
        own = victim.get(url, headers=credentials)
        assert "alice" in own.text
        stolen = attacker.get(url)
        assert stolen.text == "profile of nobody"
        assert stolen.headers["x-cache"] == "MISS"
        # The static-file rule does store: the anonymous page, for anonymous visitors.
        assert attacker.get(url).headers["x-cache"] == "HIT"


def _through_proxy(client_address: str, host: str = "shop.example", **extra: str) -> dict[str, str]:
    """What a proxy that sets these headers forwards for a client (its Host is the backend's)."""
    return {
        "host": "backend:8000",
        "x-forwarded-for": client_address,
        "x-real-ip": client_address.rsplit(",", 1)[-1].strip(),
        "x-forwarded-host": host,
        "x-forwarded-proto": "https",
        **extra,
    }


def test_behind_a_declared_proxy_visitors_share_entries_and_injections_stay_apart(
    redis_url: str,
) -> None:
    trust = TrustedForwarding(
        x_forwarded_for=1, x_forwarded_host=1, client_address_headers=["x-real-ip"]
    )
    app = make_site(redis_url, trusted_forwarding=trust)
    with serve(app, proxy_headers=False) as base, httpx.Client(base_url=base) as client:
        first = client.get("/page", headers=_through_proxy("203.0.113.1"))
        second = client.get("/page", headers=_through_proxy("203.0.113.2"))
        assert (
            first.text
            == second.text
            == ('<script src="https://shop.example/app.js"></script><!-- served by origin -->')
        )
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        # An appending proxy keeps what the client sent in front of its own value: keyed.
        injected = _through_proxy("evil, 203.0.113.3", host="evil.example, shop.example")
        assert "evil.example" in client.get("/page", headers=injected).text
        after = client.get("/page", headers=_through_proxy("203.0.113.4"))
        assert after.headers["x-cache"] == "HIT" and "evil" not in after.text
        # An unsafe request through the proxy invalidates the host the proxy names, only it.
        for host in ("shop.example", "other.example"):
            client.get("/items", headers=_through_proxy("203.0.113.5", host=host))
        client.delete("/items", headers=_through_proxy("203.0.113.6"))
        shop = client.get("/items", headers=_through_proxy("203.0.113.7"))
        other = client.get("/items", headers=_through_proxy("203.0.113.7", host="other.example"))
        assert (shop.headers["x-cache"], other.headers["x-cache"]) == ("MISS", "HIT")


async def test_a_request_around_the_declared_proxy_is_not_trusted(redis_url: str) -> None:
    """An attacker who reaches the app's port directly sends headers the proxy would set."""
    app = make_site(redis_url, trusted_forwarding=TrustedForwarding(x_forwarded_for=1))
    url, evil = "/address?vector=around-the-proxy", {"x-forwarded-for": "<script>x</script>"}
    direct = httpx.ASGITransport(app=app, client=("203.0.113.66", 40000))
    proxied = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with (
        httpx.AsyncClient(transport=direct, base_url="http://testserver") as attacker,
        httpx.AsyncClient(transport=proxied, base_url="http://testserver") as visitor,
    ):
        assert "<script>" in (await attacker.get(url, headers=evil)).text
        answer = await visitor.get(url, headers={"x-forwarded-for": "203.0.113.7"})
    assert answer.text == "your address: 203.0.113.7" and answer.headers["x-cache"] == "MISS"
    await app.aclose()


def test_undeclared_client_addresses_are_keyed_apart_with_one_hint(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_site(redis_url)
    with (
        caplog.at_level(logging.WARNING, logger="redis_checkpoint.web"),
        serve(app, proxy_headers=False) as base,
        httpx.Client(base_url=base) as client,
    ):
        answers = [
            client.get("/page?vector=hint", headers=_through_proxy(f"203.0.113.{n}"))
            for n in range(3)
        ]
    assert [answer.headers["x-cache"] for answer in answers] == ["MISS"] * 3
    messages = [record.getMessage() for record in caplog.records]
    hints = [message for message in messages if "trusted_forwarding" in message]
    assert len(hints) == 2  # x-forwarded-for and x-real-ip, once each
    assert any("x-forwarded-for" in hint for hint in hints)
