"""A small Starlette app behind CacheMiddleware, shared by the HTTP cache tests and their worker
processes. Every endpoint counts its calls, so a test can tell a HIT from a trip to the app."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import uvicorn
from cache_helpers import private_metrics
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from redis_checkpoint import CacheMiddleware, CacheRule
from redis_checkpoint.testing import free_port


def user_of(scope: Any) -> str | None:
    """The per-user rule's identity: the bearer token (a real app would verify it)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode().removeprefix("Bearer "))
    return None


def make_inner(calls: Counter[str]) -> Starlette:
    def counted(request: Request) -> str:
        calls[request.url.path] += 1
        return f"{request.url.path}#{calls[request.url.path]}"

    def text(headers: dict[str, str] | None = None, status: int = 200) -> Any:
        def endpoint(request: Request) -> Response:
            return PlainTextResponse(counted(request), status_code=status, headers=headers)

        return endpoint

    def me(request: Request) -> Response:
        calls[request.url.path] += 1
        who = request.headers.get("authorization") or request.cookies.get("session") or "nobody"
        return PlainTextResponse(f"profile of {who}")

    def vary(request: Request) -> Response:
        body = f"{counted(request)} lang={request.headers.get('accept-language')}"
        return PlainTextResponse(body, headers={"Vary": "Accept-Language"})

    async def stream(request: Request) -> Response:
        size = int(request.query_params.get("size", "3"))
        fail = request.query_params.get("fail") == "1"
        label = counted(request)

        async def chunks() -> AsyncIterator[bytes]:
            for index in range(size):
                if fail and index == 1:
                    raise RuntimeError("the stream broke")
                yield f"{label}:{index};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    def items(request: Request) -> Response:
        if request.method == "GET":
            return PlainTextResponse(counted(request))
        calls[f"{request.method} {request.url.path}"] += 1
        return Response(status_code=201 if request.method == "POST" else 200)

    routes = [
        Route("/plain", text()),
        Route("/me", me),
        Route("/users/me", me),
        Route("/vary", vary),
        Route("/vary-star", text({"Vary": "*"})),
        Route("/set-cookie", text({"Set-Cookie": "session=abc; Path=/"})),
        Route("/private", text({"Cache-Control": "private, max-age=60"})),
        Route("/no-store", text({"Cache-Control": "no-store"})),
        Route("/s-maxage", text({"Cache-Control": "max-age=5, s-maxage=100"})),
        Route("/max-age", text({"Cache-Control": "max-age=50"})),
        Route("/public", text({"Cache-Control": "public, max-age=60"})),
        Route("/aged", text({"Cache-Control": "max-age=100", "Age": "40"})),
        Route("/own-etag", text({"ETag": 'W/"v1"'})),
        Route("/missing", text(status=404)),
        Route("/error", text(status=500)),
        Route("/stream", stream),
        Route("/items", items, methods=["GET", "POST"]),
        Route("/items/{id}", items, methods=["GET", "PUT", "DELETE"]),
        Route("/short", text()),
        Route("/never", text()),
    ]
    return Starlette(routes=routes)


def make_app(url: str, prefix: str, **options: Any) -> CacheMiddleware:
    calls: Counter[str] = Counter()
    rules = [
        CacheRule("/never", cache=False),
        CacheRule("/short", ttl=30),
        CacheRule("/users/me", vary_user=user_of),
        CacheRule("/items/*", invalidates=["/items"]),
    ]
    options.setdefault("max_body_bytes", 64)
    middleware = CacheMiddleware(
        make_inner(calls), url, prefix=prefix, metrics=private_metrics(), rules=rules, **options
    )
    middleware.calls = calls  # type: ignore[attr-defined]
    return middleware


def post_in_process(url: str, prefix: str, path: str) -> None:
    """A worker process: its own app behind its own CacheMiddleware POSTs to ``path``."""

    async def main() -> None:
        app = make_app(url, prefix)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.post(path)
            response.raise_for_status()
        await app.aclose()

    asyncio.run(main())


@contextlib.contextmanager
def serve(app: Any, **config: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "off", **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def http_scope(
    method: str,
    path: str,
    *,
    query: bytes = b"",
    host: bytes = b"testserver",
    scheme: str = "http",
    http_version: str = "1.1",
) -> dict[str, Any]:
    """An ASGI HTTP scope as a server would hand it to the app, for calls without a client."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": http_version,
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", host)],
        "server": (host.decode(), 443 if scheme == "https" else 80),
        "client": ("127.0.0.1", 50000),
    }
