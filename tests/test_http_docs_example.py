"""The HTTP-cache page's example behind a proxy runs as written, against a test-started Redis."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from cache_helpers import unique

from redis_checkpoint import CacheMiddleware

PAGE = Path(__file__).resolve().parent.parent / "docs" / "http-cache.md"


def _example_after(marker: str) -> str:
    text = PAGE.read_text()
    found = re.search(r"```python\n(.*?)```", text[text.index(marker) :], re.DOTALL)
    assert found is not None, f"no Python example after {marker!r} in {PAGE.name}"
    return found.group(1)


async def test_the_behind_a_proxy_example(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", unique("docs-proxy"))
    namespace: dict[str, Any] = {}
    exec(compile(_example_after("**Behind a proxy**"), str(PAGE), "exec"), namespace)
    app = namespace["app"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        seen = []
        for address in ("203.0.113.1", "203.0.113.2"):
            headers = {"x-forwarded-for": address, "x-real-ip": address}
            seen.append(await client.get("/search?q=readme", headers=headers))
    assert [answer.text for answer in seen] == ["results for readme"] * 2
    assert [answer.headers["x-cache"] for answer in seen] == ["MISS", "HIT"]
    cache = app.middleware_stack.app
    assert isinstance(cache, CacheMiddleware)
    await cache.aclose()
