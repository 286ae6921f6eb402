"""CacheMiddleware under a real uvicorn server over loopback, spoken to by an HTTP client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from cache_helpers import unique
from http_helpers import make_app, serve

from redis_checkpoint import CacheMiddleware


@pytest.fixture
def served(redis_url: str) -> Iterator[tuple[str, CacheMiddleware]]:
    app = make_app(redis_url, unique("uvicorn"))
    with serve(app) as base:
        yield base, app


def test_over_real_http(served: tuple[str, CacheMiddleware]) -> None:
    base, app = served
    with httpx.Client(base_url=base) as client:
        first = client.get("/plain")
        second = client.get("/plain")
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert first.text == second.text == "/plain#1"
        assert int(second.headers["age"]) >= 0
        not_modified = client.get("/plain", headers={"if-none-match": second.headers["etag"]})
        assert not_modified.status_code == 304 and not_modified.content == b""
        head = client.head("/plain")
        assert head.headers["x-cache"] == "HIT" and head.content == b""
        streamed = client.get("/stream")
        assert streamed.text == "/stream#1:0;/stream#1:1;/stream#1:2;"
        assert client.get("/stream").headers["x-cache"] == "HIT"
    # Two users, each with their own connection, never see each other's /me.
    bob_cookies = {"session": "bob"}
    with (
        httpx.Client(base_url=base) as alice,
        httpx.Client(base_url=base, cookies=bob_cookies) as bob,
    ):
        for _ in range(2):
            assert alice.get("/me", headers={"authorization": "alice"}).text == "profile of alice"
            assert bob.get("/me").text == "profile of bob"
    assert app.calls["/me"] == 4  # type: ignore[attr-defined]
    assert app.calls["/plain"] == 1  # type: ignore[attr-defined]
