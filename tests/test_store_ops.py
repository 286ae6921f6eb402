"""The operations tools know the store as they know the saver, on a real redis-server: its
metrics families, its keys in the keyspace sample, the health monitor's probe, the management
API's ``/store/namespaces`` and ``redis-checkpoint store namespaces``."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from prometheus_client import CollectorRegistry
from store_helpers import index_config

from redis_checkpoint import (
    AsyncRedisStore,
    ConfigurationError,
    HealthMonitor,
    RedisStore,
    Settings,
    create_management_app,
)
from redis_checkpoint.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main
from redis_checkpoint.errors import CorruptEntryError
from redis_checkpoint.metrics import Metrics
from redis_checkpoint.ops.keyspace import keyspace_plan
from redis_checkpoint.ops.namespaces import (
    format_namespace,
    parse_namespace,
    store_namespaces_plan,
)
from redis_checkpoint.ops.plan import run_sync
from redis_checkpoint.testing import RedisServer
from tests.cache_helpers import unique

READ = {"Authorization": "Bearer read-secret"}


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def ops(metrics: Metrics, op: str, outcome: str) -> float:
    return sample(metrics, "store_operations_total", op=op, outcome=outcome)


def fill(store: RedisStore) -> None:
    """Three namespaces: one with an escaped-looking label, one with a TTL, one nested."""
    store.put(("users", "alice"), "tea", {"text": "Alice drinks tea"})
    store.put(("users", "alice"), "city", {"text": "Alice lives in Lyon"})
    store.put(("users", "bob:x/y"), "tea", {"text": "Bob drinks coffee"})
    store.put(("docs",), "readme", {"text": "read me"}, ttl=60)


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisStore]:
    metrics = Metrics(CollectorRegistry())
    with RedisStore.from_conn_string(
        redis_server.url, prefix=unique("sto"), metrics=metrics, ttl={"default_ttl": None}
    ) as made:
        yield made


# -- metrics -------------------------------------------------------------------------------------


def test_store_operations_move_their_metrics(redis_server: RedisServer) -> None:
    metrics = Metrics(CollectorRegistry())
    with RedisStore.from_conn_string(
        redis_server.url, prefix=unique("stm"), metrics=metrics, index=index_config()
    ) as store:
        store.put(("a",), "k1", {"text": "one"})
        store.put(("a",), "k2", {"text": "two"})
        assert store.get(("a",), "k1") is not None
        assert store.get(("a",), "nope") is None
        assert store.search(("a",), query="one")  # a cold snapshot: one load
        assert store.search(("a",))  # unchanged: no load
        store.delete(("a",), "k2")
        assert len(store.search(("a",))) == 1  # changed since: loaded again
        assert store.list_namespaces() == [("a",)]
        store.batch([*[_put(("b",), f"k{i}") for i in range(3)], _put(("b",), "k0", None)])
    assert ops(metrics, "get", "hit") == 1 and ops(metrics, "get", "miss") == 1
    assert ops(metrics, "put", "ok") == 2 + 2  # the batch wrote k1, k2 and deleted k0
    assert ops(metrics, "delete", "ok") == 1 + 1
    assert ops(metrics, "search", "ok") == 3 and ops(metrics, "list_namespaces", "ok") == 1
    assert sample(metrics, "store_operation_seconds_count", op="get") == 2
    # Each batch's writes are one round trip, observed once.
    assert sample(metrics, "store_operation_seconds_count", op="put") == 3
    assert sample(metrics, "store_snapshot_loads_total") == 2
    assert sample(metrics, "store_search_items_count") == 3
    assert sample(metrics, "store_search_items_sum") == 2 + 2 + 1
    # The shared families: the stats show the store beside the saver.
    assert sample(metrics, "cache_hits_total", cache_type="store", operation="get") == 1
    summary = metrics.summary()["store"]
    assert summary["hits"] == 1 and summary["misses"] == 1 and summary["hit_ratio"] == 0.5
    assert summary["operations"] > 0 and summary["p50_ms"] > 0


def _put(namespace: tuple[str, ...], key: str, value: Any = "v") -> Any:
    from langgraph.store.base import PutOp

    return PutOp(namespace, key, None if value is None else {"v": value})


def test_a_failed_operation_counts_as_an_error(store: RedisStore) -> None:
    metrics = store.core.metrics
    store.client.set(store.core.layout.keys(("broken",)).items, "not a hash")
    with pytest.raises(CorruptEntryError):
        store.get(("broken",), "k")
    assert ops(metrics, "get", "error") == 1 and ops(metrics, "get", "miss") == 0
    assert sample(metrics, "cache_errors_total", cache_type="store", kind="operation") == 1
    store.client.delete(store.core.layout.keys(("broken",)).items)


async def test_the_async_store_records_on_its_metrics(redis_server: RedisServer) -> None:
    metrics = Metrics(CollectorRegistry())
    async with AsyncRedisStore.from_conn_string(
        redis_server.url, prefix=unique("sta"), metrics=metrics
    ) as store:
        await store.aput(("n",), "k", {"v": 1})
        assert await store.aget(("n",), "k") is not None
        assert await store.asearch(("n",)) and await store.alist_namespaces() == [("n",)]
    assert ops(metrics, "get", "hit") == 1 and ops(metrics, "put", "ok") == 1
    assert ops(metrics, "search", "ok") == 1 and ops(metrics, "list_namespaces", "ok") == 1
    assert sample(metrics, "store_snapshot_loads_total") == 1


def test_the_default_is_the_process_metrics(redis_server: RedisServer) -> None:
    from redis_checkpoint.metrics import get_metrics

    client = redis.Redis.from_url(redis_server.url)
    try:
        assert RedisStore(client).core.metrics is get_metrics()
    finally:
        client.close()


# -- the keyspace sample -------------------------------------------------------------------------


def test_the_keyspace_sample_counts_store_keys(store: RedisStore) -> None:
    fill(store)
    prefix = store.core.layout.prefix
    plan = keyspace_plan([prefix], [f"{prefix}:cache"], store_prefixes=[prefix])
    found = run_sync(store.client, plan)
    entry = found.by_type["store"]
    # Per namespace its items and version (and expiries with a TTL), plus the registry.
    assert entry["keys"] == 2 + 2 + 3 + 1 and entry["bytes"] > 0
    assert entry["namespaces"] == 3 and entry["items"] == 4
    assert "checkpoint" not in found.by_type and found.complete
    # Without the store's prefix its keys are none of the sample's.
    assert "store" not in run_sync(store.client, keyspace_plan([prefix], [])).by_type


# -- health --------------------------------------------------------------------------------------


def test_the_monitor_probes_a_store(store: RedisStore, redis_url: str, dead_url: str) -> None:
    fill(store)
    metrics = Metrics(CollectorRegistry())
    monitor = HealthMonitor(redis_url, components=[store], metrics=metrics, keyspace_sample=1000)
    away = RedisStore(redis.Redis.from_url(dead_url, socket_connect_timeout=0.5))
    try:
        report = monitor.check()
        [health] = report.components
        assert report.status == "ok"
        assert (health.kind, health.breaker, health.probed, health.reachable) == (
            "store",
            "closed",
            True,
            True,
        )
        assert health.name == "store:RedisStore" and not health.serving_from_memory
        assert report.keyspace is not None
        assert report.keyspace["by_type"]["store"]["namespaces"] >= 3
        assert sample(metrics, "cache_keys", cache_type="store") >= 8
        # A store whose Redis does not answer: the report says degraded.
        monitor.add(away, name="away")
        later = monitor.check()
        assert later.status == "degraded"
        assert [(h.name, h.reachable) for h in later.components][1] == ("away", False)
    finally:
        monitor.stop()
        away.client.close()


async def test_the_asyncio_monitor_probes_an_async_store(redis_server: RedisServer) -> None:
    async with AsyncRedisStore.from_conn_string(redis_server.url, prefix=unique("sth")) as store:
        monitor = HealthMonitor(
            redis_server.url, components=[store], metrics=Metrics(CollectorRegistry())
        )
        try:
            report = await monitor.acheck()
        finally:
            await monitor.astop()
    [health] = report.components
    assert report.status == "ok" and health.kind == "store" and health.reachable
    with pytest.raises(ConfigurationError, match="AsyncRedisStore"):
        HealthMonitor(redis_server.url, components=[object()])


# -- the namespaces: the plan, the API, the CLI --------------------------------------------------


def test_namespaces_are_spelled_with_escapes() -> None:
    assert parse_namespace("", "/") == ()
    assert parse_namespace("users/bob:x\\/y", "/") == ("users", "bob:x/y")
    assert parse_namespace("a\\.b.c\\\\", ".") == ("a.b", "c\\")
    for namespace in [("a.b", "c\\"), ("x/y",), ("plain", "labels")]:
        for separator in "/.":
            spelled = format_namespace(namespace, separator)
            assert parse_namespace(spelled, separator) == namespace
    for bad in ("a//b", "a/", "a\\"):
        with pytest.raises(ConfigurationError):
            parse_namespace(bad, "/")


def test_the_plan_lists_live_namespaces_with_their_items(store: RedisStore) -> None:
    fill(store)
    prefix = store.core.layout.prefix
    listing = run_sync(store.client, store_namespaces_plan(prefix))
    assert listing.namespaces == [
        (("docs",), 1),
        (("users", "alice"), 2),
        (("users", "bob:x/y"), 1),
    ]
    assert not listing.more and not listing.missing
    page = run_sync(store.client, store_namespaces_plan(prefix, ("users",), limit=1))
    assert page.namespaces == [(("users", "alice"), 2)] and page.more
    # An emptied namespace is not listed, and the plan writes nothing.
    store.delete(("docs",), "readme")
    before = store.client.zrange(store.core.layout.registry, 0, -1)
    assert run_sync(store.client, store_namespaces_plan(prefix, ("docs",))).missing
    assert store.client.zrange(store.core.layout.registry, 0, -1) == before
    nothing = run_sync(store.client, store_namespaces_plan(prefix, ("nobody",), limit=0))
    assert nothing.missing and nothing.held == ["users"]
    some = run_sync(store.client, store_namespaces_plan(prefix, ("users",), limit=0))
    assert not some.missing and some.more and not some.namespaces


class Api:
    def __init__(self, client: httpx.AsyncClient, store: Any) -> None:
        self.client, self.store = client, store


@pytest.fixture(params=["async", "sync"])
async def api(request: pytest.FixtureRequest, redis_server: RedisServer) -> AsyncIterator[Api]:
    prefix = unique("stapi")
    metrics = Metrics(CollectorRegistry())
    with RedisStore.from_conn_string(redis_server.url, prefix=prefix, metrics=metrics) as filler:
        fill(filler)
        async with AsyncRedisStore.from_conn_string(redis_server.url, prefix=prefix) as aio:
            store = aio if request.param == "async" else filler
            # A store holds no Settings: the API's monitor and sampler take the URL from these.
            settings = Settings(url=redis_server.url)
            app = create_management_app(
                store=store, token="read-secret", metrics=metrics, settings=settings
            )
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
                yield Api(client, store)
            await app.state.management.aclose()


async def test_the_api_lists_the_store_namespaces(api: Api) -> None:
    client = api.client
    assert (await client.get("/store/namespaces")).status_code == 401
    everything = await client.get("/store/namespaces", headers=READ)
    assert everything.status_code == 200, everything.text
    assert everything.json() == {
        "prefix": [],
        "namespaces": [
            {"namespace": ["docs"], "items": 1},
            {"namespace": ["users", "alice"], "items": 2},
            {"namespace": ["users", "bob:x/y"], "items": 1},
        ],
        "more": False,
    }
    page = (await client.get("/store/namespaces?prefix=users&limit=1", headers=READ)).json()
    assert page["namespaces"] == [{"namespace": ["users", "alice"], "items": 2}] and page["more"]
    one = await client.get("/store/namespaces", params={"prefix": "users.bob:x/y"}, headers=READ)
    assert one.json()["namespaces"] == [{"namespace": ["users", "bob:x/y"], "items": 1}]
    missing = await client.get("/store/namespaces?prefix=usr", headers=READ)
    assert missing.status_code == 404
    assert "no store namespace under 'usr'" in missing.json()["error"]
    assert "'users'" in missing.json()["error"] and "'docs'" in missing.json()["error"]
    bad = await client.get("/store/namespaces?prefix=a..b", headers=READ)
    assert bad.status_code == 400 and "empty label" in bad.json()["error"]
    assert (await client.get("/store/namespaces?limit=x", headers=READ)).status_code == 400
    health = (await client.get("/health")).json()
    assert health["status"] == "ok"
    assert [(c["name"], c["breaker"]) for c in health["components"]] == [
        (f"store:{type(api.store).__name__}", "closed")
    ]
    stats = (await client.get("/stats", headers=READ)).json()
    store_stats = stats["cache_types"]["store"]
    assert store_stats["namespaces"] == 3 and store_stats["items"] == 4
    assert store_stats["keys"] == 8 and store_stats["fallback_bytes"] == 0


async def test_the_api_without_a_store_says_so(redis_server: RedisServer) -> None:
    app = create_management_app(
        token="read-secret", metrics=Metrics(CollectorRegistry()), settings=None
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
        response = await client.get("/store/namespaces", headers=READ)
    assert response.status_code == 400 and "no store" in response.json()["error"]
    with pytest.raises(ConfigurationError, match="RedisStore"):
        create_management_app(token="read-secret", store=object())  # type: ignore[arg-type]


async def test_the_api_names_an_unreachable_store_with_a_503(dead_url: str) -> None:
    client = redis.asyncio.Redis.from_url(dead_url, socket_connect_timeout=0.5)
    store = AsyncRedisStore(client)
    app = create_management_app(store=store, token="read-secret")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as http:
        response = await http.get("/store/namespaces", headers=READ)
    await app.state.management.aclose()
    await client.aclose()
    assert response.status_code == 503 and "is unavailable" in response.json()["error"]


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_the_cli_lists_the_store_namespaces(store: RedisStore, redis_url: str) -> None:
    fill(store)
    base = ("--url", redis_url, "--prefix", store.core.layout.prefix)
    code, out, err = cli(*base, "store", "namespaces")
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert lines[0].split() == ["namespace", "items"]
    # Shown as it would be written: the '/' inside a label escaped, nothing percent-encoded.
    assert [line.split() for line in lines[2:5]] == [
        ["docs", "1"],
        ["users/alice", "2"],
        ["users/bob:x\\/y", "1"],
    ]
    assert lines[-1] == "3 namespaces"
    code, out, _ = cli(*base, "--json", "store", "namespaces", "--prefix", "users", "--limit", "1")
    assert code == EXIT_OK
    assert json.loads(out) == {
        "prefix": ["users"],
        "namespaces": [{"namespace": ["users", "alice"], "items": 2}],
        "more": True,
    }
    code, out, _ = cli(*base, "--json", "store", "namespaces", "--prefix", "users/bob:x\\/y")
    assert json.loads(out)["namespaces"] == [{"namespace": ["users", "bob:x/y"], "items": 1}]
    code, out, err = cli(*base, "store", "namespaces", "--prefix", "usr")
    assert code == EXIT_NOT_FOUND and not out
    assert "no store namespace under 'usr'" in err and "'users'" in err
    assert cli(*base, "store", "namespaces", "--prefix", "a//b")[0] == EXIT_USAGE
    assert cli(*base, "store")[0] == EXIT_USAGE


def test_the_cli_stats_count_the_store(store: RedisStore, redis_url: str) -> None:
    fill(store)
    code, out, err = cli(
        "--url", redis_url, "--prefix", store.core.layout.prefix, "--json", "stats"
    )
    assert code == EXIT_OK, err
    data = json.loads(out)
    assert data["store_namespaces"] == 3
    entry = data["keyspace"]["by_type"]["store"]
    assert entry["namespaces"] == 3 and entry["items"] == 4 and entry["keys"] == 8
    text = cli("--url", redis_url, "--prefix", store.core.layout.prefix, "stats")[1]
    assert "store namespaces: 3" in text and "store" in text
