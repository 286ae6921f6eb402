"""The management API over ASGI (httpx), on a real redis-server: auth, routes, bad bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from langchain_core.messages import HumanMessage
from prometheus_client import CollectorRegistry

from redis_checkpoint import (
    AsyncCacheEngine,
    AsyncRedisSaver,
    CacheEngine,
    ConfigurationError,
    RedisSaver,
    Settings,
    create_management_app,
    create_management_router,
)
from redis_checkpoint.cache import MISSING
from redis_checkpoint.metrics import Metrics
from redis_checkpoint.testing import RedisServer
from tests.cache_helpers import unique
from tests.test_fallback import build, cfg

READ = {"Authorization": "Bearer read-secret"}
ADMIN = {"Authorization": "Bearer admin-secret"}


class Setup:
    def __init__(self, client: httpx.AsyncClient, saver: AsyncRedisSaver, engine: Any) -> None:
        self.client = client
        self.saver = saver
        self.engine = engine
        self.warmed: list[dict[str, Any]] = []


@pytest.fixture
async def setup(redis_server: RedisServer) -> AsyncIterator[Setup]:
    metrics = Metrics(CollectorRegistry())
    prefix = unique("mgmt")
    async with AsyncRedisSaver.from_conn_string(
        redis_server.url, key_prefix=prefix, metrics=metrics
    ) as saver:
        engine = AsyncCacheEngine(redis_server.url, prefix=f"{prefix}:cache", metrics=metrics)
        app = create_management_app(
            saver=saver,
            engine=engine,
            token="read-secret",
            admin_token="admin-secret",
            metrics=metrics,
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
            state = Setup(client, saver, engine)

            async def warm_user(params: dict[str, Any]) -> int:
                user = params["user"]
                state.warmed.append(params)
                await engine.set("query", f"profile:{user}", {"user": user}, tags=[f"u:{user}"])
                return 1

            app.state.management.add_warmer("user", warm_user)
            yield state
        await app.state.management.aclose()
        await engine.aclose()


async def test_health_is_public_and_the_rest_needs_a_token(setup: Setup) -> None:
    client = setup.client
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert {c["breaker"] for c in response.json()["components"]} == {"closed"}
    for method, path in [
        ("GET", "/stats"),
        ("GET", "/metrics"),
        ("GET", "/threads"),
        ("POST", "/invalidate"),
        ("POST", "/test"),
        ("POST", "/warm/user"),
        ("DELETE", "/threads/x"),
    ]:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json() == {"error": "unauthorized"}  # nothing leaked
            assert response.headers["www-authenticate"] == "Bearer"
    # The read token opens reads only; the admin token opens everything.
    assert (
        await client.post("/invalidate", headers=READ, json={"namespace": "x"})
    ).status_code == 401
    assert (await client.get("/stats", headers=ADMIN)).status_code == 200


async def test_stats_and_metrics(setup: Setup) -> None:
    await setup.engine.set("llm", "a", "answer")
    assert await setup.engine.get("llm", "a") == "answer"
    assert await setup.engine.get("llm", "b") is None
    graph = build().compile(checkpointer=setup.saver)
    await graph.ainvoke({"messages": [HumanMessage("hi")]}, cfg("t1"))

    stats = (await setup.client.get("/stats", headers=READ)).json()
    llm = stats["cache_types"]["llm"]
    assert (llm["hits"], llm["misses"], llm["hit_ratio"]) == (1, 1, 0.5)
    assert llm["keys"] == 1 and llm["redis_bytes"] > 0
    assert llm["p50_ms"] > 0 and llm["p99_ms"] >= llm["p50_ms"]
    checkpoint = stats["cache_types"]["checkpoint"]
    assert checkpoint["keys"] >= 2 and checkpoint["operations"] >= 3
    assert stats["redis"]["maxmemory_policy"] == "noeviction"
    assert stats["namespaces"]["llm"]["hits"] == 1

    response = await setup.client.get("/metrics", headers=READ)
    assert response.headers["content-type"].startswith("text/plain")
    assert 'cache_hits_total{cache_type="llm",operation="get"} 1.0' in response.text


async def test_threads_list_show_delete(setup: Setup) -> None:
    graph = build().compile(checkpointer=setup.saver)
    for text in ("one", "two"):
        await graph.ainvoke({"messages": [HumanMessage(text)]}, cfg("talk"))
    listed = (await setup.client.get("/threads", headers=READ)).json()
    assert listed["threads"] == ["talk"] and listed["total"] == 1

    shown = (await setup.client.get("/threads/talk?limit=2", headers=READ)).json()
    assert len(shown["checkpoints"]) == 2
    assert shown["checkpoints"][0]["step"] > shown["checkpoints"][1]["step"]
    assert "messages" in shown["checkpoints"][0]["channels"]
    assert (await setup.client.get("/threads/nobody", headers=READ)).status_code == 404
    assert (await setup.client.get("/threads?limit=x", headers=READ)).status_code == 400

    assert (await setup.client.delete("/threads/talk", headers=READ)).status_code == 401
    deleted = (await setup.client.delete("/threads/talk", headers=ADMIN)).json()
    assert deleted == {"thread_id": "talk", "deleted": True}
    assert await setup.saver.aget_tuple(cfg("talk")) is None
    again = (await setup.client.delete("/threads/talk", headers=ADMIN)).json()
    assert again["deleted"] is False


@pytest.mark.parametrize("thread_id", ["a/b", "", "with space", "50%", "/lead", "trail/"])
async def test_any_thread_id_can_be_shown_and_deleted(setup: Setup, thread_id: str) -> None:
    graph = build().compile(checkpointer=setup.saver)
    await graph.ainvoke({"messages": [HumanMessage("hi")]}, cfg(thread_id))
    path = "/threads/" + quote(thread_id, safe="")
    shown = await setup.client.get(path, headers=READ)
    assert shown.status_code == 200 and shown.json()["thread_id"] == thread_id
    deleted = (await setup.client.delete(path, headers=ADMIN)).json()
    assert deleted == {"thread_id": thread_id, "deleted": True}
    assert await setup.saver.aget_tuple(cfg(thread_id)) is None


async def test_a_damaged_thread_can_be_deleted(setup: Setup, redis_server: RedisServer) -> None:
    graph = build().compile(checkpointer=setup.saver)
    await graph.ainvoke({"messages": [HumanMessage("hi")]}, cfg("damaged"))
    index = setup.saver.core.keys("damaged").idx
    with redis_server.client() as raw:
        raw.delete(index)
        raw.set(index, "written by something else")
    deleted = await setup.client.delete("/threads/damaged", headers=ADMIN)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    shown = await setup.client.get("/threads/damaged", headers=READ)
    assert shown.status_code == 404


async def test_invalidate_by_key_tag_and_namespace(setup: Setup) -> None:
    engine = setup.engine
    await engine.set("query", "a", 1, tags=["users"])
    await engine.set("query", "b", 2, tags=["users"])
    await engine.set("query", "c", 3)
    post = setup.client.post

    by_key = await post("/invalidate", headers=ADMIN, json={"namespace": "query", "key": "c"})
    assert by_key.json() == {"namespace": "query", "scope": "key", "removed": 1}
    by_tag = await post("/invalidate", headers=ADMIN, json={"namespace": "query", "tag": "users"})
    assert by_tag.json()["removed"] == 2
    assert await engine.get_many("query", ["a", "b", "c"]) == [MISSING] * 3

    await engine.set("query", "d", 4)
    cleared = await post("/invalidate", headers=ADMIN, json={"namespace": "query"})
    assert cleared.json()["scope"] == "namespace"
    assert await engine.get("query", "d") is None

    unknown = await post("/invalidate", headers=ADMIN, json={"namespace": "querry"})
    assert unknown.status_code == 404
    assert "no cache namespace 'querry'" in unknown.json()["error"]
    assert "'query'" in unknown.json()["error"]  # the namespaces that hold keys are listed


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON object"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not list"),
        (b'{"key": "a"}', '"namespace"'),
        (b'{"namespace": "q", "key": "a", "tag": "b"}', "not both"),
        (b'{"namespace": "q", "keys": "a"}', "list of strings"),
        (b'{"namespace": "q", "key": 5}', "non-empty strings"),
        (b'{"namespace": "q", "everything": true}', "unknown fields"),
        (b'{"namespace": "' + b"q" * 70_000 + b'"}', "larger than 65536 bytes"),
    ],
)
async def test_bad_bodies_get_a_clear_400(setup: Setup, body: bytes, message: str) -> None:
    response = await setup.client.post("/invalidate", headers=ADMIN, content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_warmers(setup: Setup) -> None:
    response = await setup.client.post("/warm/user", headers=ADMIN, json={"user": "ada"})
    assert response.status_code == 200 and response.json()["result"] == 1
    assert setup.warmed == [{"user": "ada"}]
    assert await setup.engine.get("query", "profile:ada") == {"user": "ada"}
    missing_param = await setup.client.post("/warm/user", headers=ADMIN, json={})
    assert missing_param.status_code == 400 and "'user'" in missing_param.json()["error"]
    unknown = await setup.client.post("/warm/nobody", headers=ADMIN)
    assert unknown.status_code == 404 and "registered: user" in unknown.json()["error"]


async def test_self_test_round_trips_both_components(setup: Setup) -> None:
    response = await setup.client.post("/test", headers=ADMIN)
    body = response.json()
    assert response.status_code == 200 and body["ok"], body
    assert [s["component"] for s in body["steps"]] == ["cache", "checkpoint"]
    assert await setup.saver.alist_threads() == []  # the probe thread was deleted


async def test_the_health_route_says_down_with_a_503(fresh_redis: RedisServer) -> None:
    metrics = Metrics(CollectorRegistry())
    engine = AsyncCacheEngine(fresh_redis.url, prefix="down", metrics=metrics)
    app = create_management_app(engine=engine, token="t", metrics=metrics)
    fresh_redis.kill()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
        response = await client.get("/health")
        assert response.status_code == 503 and response.json()["status"] == "down"
        # Without an admin token the admin routes are off, and say so to the read token only.
        refused = await client.post("/test", headers={"Authorization": "Bearer t"})
        assert refused.status_code == 403 and "no admin token" in refused.json()["error"]
    await engine.aclose()


async def test_listing_threads_without_redis_is_a_503(fresh_redis: RedisServer) -> None:
    metrics = Metrics(CollectorRegistry())
    async with AsyncRedisSaver.from_conn_string(fresh_redis.url, metrics=metrics) as saver:
        app = create_management_app(saver=saver, token="t", metrics=metrics)
        fresh_redis.kill()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
            response = await client.get("/threads", headers={"Authorization": "Bearer t"})
            assert response.status_code == 503
            assert str(fresh_redis.port) in response.json()["error"]


def test_configuration_errors(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="bearer token"):
        create_management_app(engine=None, token="")
    with pytest.raises(ConfigurationError, match="differ"):
        create_management_app(token="same", admin_token="same")


def test_fastapi_sees_the_routes_in_its_openapi_schema(redis_url: str) -> None:
    app = FastAPI()
    router = create_management_router(token="t", admin_token="a", settings=None)
    app.include_router(router, prefix="/cache")
    paths = app.openapi()["paths"]
    assert set(paths) >= {
        "/cache/health",
        "/cache/stats",
        "/cache/metrics",
        "/cache/threads",
        "/cache/threads/{thread_id}",
        "/cache/invalidate",
        "/cache/warm/{name}",
        "/cache/test",
    }
    assert "delete" in paths["/cache/threads/{thread_id}"]
    schema = paths["/cache/invalidate"]["post"]["requestBody"]["content"]["application/json"]
    assert schema["schema"]["required"] == ["namespace"]


async def test_sync_saver_and_engine_are_served_from_worker_threads(
    redis_server: RedisServer,
) -> None:
    metrics = Metrics(CollectorRegistry())
    prefix = unique("mgmt-sync")
    with (
        RedisSaver.from_conn_string(redis_server.url, key_prefix=prefix, metrics=metrics) as saver,
        CacheEngine(redis_server.url, prefix=f"{prefix}:cache", metrics=metrics) as engine,
    ):
        build().compile(checkpointer=saver).invoke({"messages": [HumanMessage("hi")]}, cfg("s"))
        engine.set("http", "page", "body", tags=["pages"])
        app = create_management_app(
            saver=saver, engine=engine, token="r", admin_token="a", metrics=metrics
        )
        admin = {"Authorization": "Bearer a"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
            assert (await client.get("/threads", headers=admin)).json()["threads"] == ["s"]
            body = {"namespace": "http", "tags": ["pages"]}
            invalidated = await client.post("/invalidate", headers=admin, json=body)
            assert invalidated.json()["removed"] == 1
            tested = await client.post("/test", headers=admin)
            assert tested.status_code == 200, tested.json()
            stats = (await client.get("/stats", headers=admin)).json()
            assert stats["cache_types"]["http"]["keys"] == 0  # all invalidated
            assert stats["components"][0]["kind"] == "checkpoint"
        await app.state.management.aclose()


def test_the_example_app_serves_the_routes(redis_server: RedisServer) -> None:
    from fastapi.testclient import TestClient

    from examples.ops_app import create_app

    settings = Settings(url=redis_server.url, key_prefix=unique("example"))
    with TestClient(create_app(settings)) as client:  # runs the lifespan: setup and monitor
        assert client.get("/cache/health").json()["status"] == "ok"
        warmed = client.post("/cache/warm/user", headers=ADMIN, json={"user": "ada"})
        assert warmed.json()["result"] == 1
        stats = client.get("/cache/stats", headers=READ).json()
        assert stats["cache_types"]["query"]["keys"] == 2  # the entry and its tag set
        assert "/cache/warm/{name}" in client.get("/openapi.json").json()["paths"]


async def test_an_invalidation_while_redis_is_away_is_queued(dead_url: str) -> None:
    settings = Settings(url=dead_url, socket_connect_timeout=0.2, retries=0)
    metrics = Metrics(CollectorRegistry())
    engine = AsyncCacheEngine(settings, prefix=unique("mgmt-away"), metrics=metrics)
    app = create_management_app(
        engine=engine, token="read-secret", admin_token="admin-secret", settings=settings
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
        answer = await client.post("/invalidate", headers=ADMIN, json={"namespace": "query"})
    assert answer.status_code == 200 and answer.json()["scope"] == "namespace"
    assert engine.core.pending_invalidations == 1  # replayed when Redis answers again
    await app.state.management.aclose()
    await engine.aclose()
