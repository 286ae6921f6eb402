#!/usr/bin/env python
"""Operations of the caching stack in a FastAPI app: the management routes, /metrics for
Prometheus and the health monitor driving recovery.

    REDIS_URL=redis://127.0.0.1:6379/0 OPS_TOKEN=read-secret OPS_ADMIN_TOKEN=admin-secret \\
        uvicorn examples.ops_app:app

    curl localhost:8000/cache/health
    curl -H "Authorization: Bearer read-secret" localhost:8000/cache/stats
    curl -X POST -H "Authorization: Bearer admin-secret" localhost:8000/cache/warm/user \\
        -d '{"user": "ada"}'

The routes are in the app's OpenAPI schema (/docs), under the "redis-checkpoint" tag.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from redis_checkpoint import (
    AsyncCacheEngine,
    AsyncRedisSaver,
    HealthMonitor,
    Settings,
    create_async_client,
    create_management_router,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    saver = AsyncRedisSaver(create_async_client(settings), settings=settings)
    engine = AsyncCacheEngine(settings)
    monitor = HealthMonitor(settings, components=[saver, engine], interval=30)

    async def warm_user(params: dict[str, Any]) -> int:
        """Preload one user's profile, e.g. before a campaign sends them to the app."""
        user = str(params["user"])
        await engine.set("query", f"profile:{user}", {"user": user}, tags=[f"user:{user}"])
        return 1

    router = create_management_router(
        saver=saver,
        engine=engine,
        monitor=monitor,
        token=os.environ.get("OPS_TOKEN", "read-secret"),
        admin_token=os.environ.get("OPS_ADMIN_TOKEN", "admin-secret"),
        warmers={"user": warm_user},
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await saver.asetup()  # loads the scripts; starts on the memory tier if Redis is away
        async with monitor:  # checks every 30 s until shutdown
            yield
        await router.management.aclose()
        await engine.aclose()
        await saver.client.aclose()

    app = FastAPI(title="ops demo", lifespan=lifespan)
    app.include_router(router, prefix="/cache")
    return app


app = create_app()
