"""Helpers for the query and HTTP cache tests that spawned worker processes import."""

from __future__ import annotations

import asyncio
import os

from cache_helpers import engine

from redis_checkpoint.cache.query import QueryCache

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def invalidate_query_tag(url: str, prefix: str, tag: str) -> None:
    """A worker process invalidating one tag of the query cache."""
    cache = QueryCache(engine=engine(url, prefix))
    try:
        cache.invalidate(tag)
    finally:
        cache.close()


def post_in_process(url: str, prefix: str, path: str) -> None:
    """A worker process: its own app behind its own CacheMiddleware POSTs to ``path``."""
    import httpx
    from http_helpers import make_app

    async def main() -> None:
        app = make_app(url, prefix)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.post(path)
            response.raise_for_status()

    asyncio.run(main())
