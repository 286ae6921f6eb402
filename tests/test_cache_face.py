"""A face built from one redis-py client derives the other side's client (asyncio for a sync one,
and back) with the same connection settings, on one core; it closes only what it derived, and it
refuses at construction a client it cannot mirror, saying what to do instead."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.sentinel
from cache_helpers import private_metrics, unique
from langgraph.cache.base import FullKey
from node_helpers import build
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from redis_checkpoint import NodeCache
from redis_checkpoint.cache import AsyncCacheEngine, CacheEngine
from redis_checkpoint.errors import ConfigurationError
from redis_checkpoint.testing import RedisClusterServers, RedisServer

PASSWORD = "s3cret-pw"
KEY: FullKey = (("graph", "node"), "k")


@pytest.fixture(autouse=True)
def no_default_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # A face that ignored its client would fall back on REDIS_URL: never the system Redis.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")


@pytest.fixture(scope="module")
def guarded(redis_server_bin: str) -> Iterator[RedisServer]:
    """A server with a password that also listens on a unix socket."""
    socket_dir = tempfile.mkdtemp(prefix="rc-sock-")  # short: socket paths are limited
    server = RedisServer(
        binary=redis_server_bin,
        password=PASSWORD,
        args=("--unixsocket", f"{socket_dir}/redis.sock", "--unixsocketperm", "700"),
    )
    server.start()
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(socket_dir, ignore_errors=True)


def socket_path(server: RedisServer) -> str:
    return server.args[server.args.index("--unixsocket") + 1]


def named(raw: redis.Redis, name: str, expected: int) -> list[dict[str, Any]]:
    """The server's connections called ``name``, once there are ``expected`` of them (a closed
    socket takes the server a moment to notice)."""
    deadline = time.monotonic() + 5
    while True:
        found = [c for c in raw.client_list() if c.get("name") == name]
        if len(found) == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def entries_in_db(raw: redis.Redis, cache: NodeCache[Any]) -> int:
    return sum(1 for _ in raw.scan_iter(f"{cache.engine.core.layout.prefix}:*"))


# --- the settings carry over ---------------------------------------------------------------


async def test_a_sync_clients_settings_carry_over_to_the_async_side(guarded: RedisServer) -> None:
    name = unique("sync-own")
    own = redis.Redis(
        host=guarded.host,
        port=guarded.port,
        db=5,
        username="default",
        password=PASSWORD,
        client_name=name,
        socket_timeout=3.0,
        socket_connect_timeout=0.7,
        health_check_interval=7,
        max_connections=9,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), 2),
    )
    cache: NodeCache[Any] = NodeCache(own, prefix=unique("mirror"), metrics=private_metrics())
    await cache.aset({KEY: ({"v": 1}, None)})
    assert await cache.aget([KEY]) == {KEY: {"v": 1}}
    derived = cache.async_engine.client
    assert isinstance(derived, redis.asyncio.Redis)
    settings = derived.connection_pool.connection_kwargs
    assert {k: settings[k] for k in ("db", "username", "password", "client_name")} == {
        "db": 5,
        "username": "default",
        "password": PASSWORD,
        "client_name": name,
    }
    assert (settings["socket_timeout"], settings["socket_connect_timeout"]) == (3.0, 0.7)
    assert settings["health_check_interval"] == 7
    assert derived.connection_pool.max_connections == 9
    retry = settings["retry"]
    assert isinstance(retry, AsyncRetry) and retry.get_retries() == 2
    # It really talks to db 5 of that server, as that user, under that name.
    raw = guarded.client(db=5)
    assert entries_in_db(raw, cache) > 0
    assert entries_in_db(guarded.client(db=0), cache) == 0
    own.ping()
    assert [c["db"] for c in named(raw, name, 2)] == ["5", "5"]
    await cache.aclose()
    own.close()


async def test_an_async_clients_settings_carry_over_to_the_sync_side(
    guarded: RedisServer,
) -> None:
    name = unique("async-own")
    own = redis.asyncio.Redis(
        host=guarded.host,
        port=guarded.port,
        db=6,
        password=PASSWORD,
        client_name=name,
        socket_timeout=2.5,
        max_connections=4,
        retry=AsyncRetry(NoBackoff(), 1),
    )
    cache: NodeCache[Any] = NodeCache(own, prefix=unique("mirror"), metrics=private_metrics())
    cache.set({KEY: ({"v": 2}, None)})  # sync code: the derived sync client
    assert cache.get([KEY]) == {KEY: {"v": 2}}
    derived = cache.engine.client
    assert isinstance(derived, redis.Redis)
    settings = derived.connection_pool.connection_kwargs
    assert (settings["db"], settings["password"], settings["client_name"]) == (6, PASSWORD, name)
    assert settings["socket_timeout"] == 2.5 and derived.connection_pool.max_connections == 4
    assert isinstance(settings["retry"], Retry) and settings["retry"].get_retries() == 1
    assert entries_in_db(guarded.client(db=6), cache) > 0
    # The given async client serves async code itself.
    assert cache.async_engine.client is own
    assert await cache.aget([KEY]) == {KEY: {"v": 2}}
    cache.close()
    await own.aclose()


@pytest.mark.parametrize("given", ["sync", "async"])
async def test_unix_socket_clients_are_mirrored(given: str, guarded: RedisServer) -> None:
    path = socket_path(guarded)
    own: Any = (
        redis.Redis(unix_socket_path=path, password=PASSWORD)
        if given == "sync"
        else redis.asyncio.Redis(unix_socket_path=path, password=PASSWORD)
    )
    cache: NodeCache[Any] = NodeCache(own, prefix=unique("unix"), metrics=private_metrics())
    runs: list[str] = []
    graph = build(runs).compile(cache=cache)
    try:
        if given == "sync":
            assert (await graph.ainvoke({"question": "u"}))["answer"] == "U"
            assert (await graph.ainvoke({"question": "u"}))["answer"] == "U"
            pool = cache.async_engine.client.connection_pool
            assert pool.connection_class is redis.asyncio.connection.UnixDomainSocketConnection
        else:
            assert graph.invoke({"question": "u"})["answer"] == "U"
            assert graph.invoke({"question": "u"})["answer"] == "U"
            pool = cache.engine.client.connection_pool
            assert pool.connection_class is redis.connection.UnixDomainSocketConnection
        assert runs == ["u"]
        assert pool.connection_kwargs["path"] == path
    finally:
        await cache.aclose()
        await own.aclose() if given == "async" else own.close()


def test_tls_settings_are_mirrored_both_ways() -> None:
    tls: dict[str, Any] = {
        "host": "cache.example",
        "port": 6380,
        "ssl": True,
        "ssl_ca_certs": "/etc/ssl/ca.pem",
        "ssl_certfile": "/etc/ssl/me.pem",
        "ssl_keyfile": "/etc/ssl/me.key",
        "ssl_check_hostname": False,
        "ssl_cert_reqs": "required",
    }
    copied = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname", "host")
    from_sync: NodeCache[Any] = NodeCache(redis.Redis(**tls), metrics=private_metrics())
    twin = from_sync.async_engine.client  # built, not connected
    assert twin.connection_pool.connection_class is redis.asyncio.connection.SSLConnection
    assert {k: twin.connection_pool.connection_kwargs[k] for k in copied} == {
        k: tls[k] for k in copied
    }
    from_async: NodeCache[Any] = NodeCache(redis.asyncio.Redis(**tls), metrics=private_metrics())
    sync_twin = from_async.engine.client
    assert sync_twin.connection_pool.connection_class is redis.connection.SSLConnection
    assert {k: sync_twin.connection_pool.connection_kwargs[k] for k in copied} == {
        k: tls[k] for k in copied
    }
    asyncio.run(from_sync.aclose())
    from_async.close()


# --- what is closed, and what is shared ------------------------------------------------------


async def test_closing_a_cache_built_from_a_sync_client_closes_only_its_async_twin(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    name = unique("owner")
    own = redis_server.client(client_name=name)
    own_id = own.client_id()
    cache: NodeCache[Any] = NodeCache(own, prefix=unique("close"), metrics=private_metrics())
    await cache.aset({KEY: (1, None)})
    assert len(named(redis_client, name, 2)) == 2  # ours and the derived one
    await cache.aclose()
    assert len(named(redis_client, name, 1)) == 1
    assert own.client_id() == own_id  # the same connection: never closed
    own.close()


async def test_closing_a_cache_built_from_an_async_client_closes_only_its_sync_twin(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    name = unique("aowner")
    own = redis.asyncio.Redis(host=redis_server.host, port=redis_server.port, client_name=name)
    own_id = await own.client_id()
    cache: NodeCache[Any] = NodeCache(own, prefix=unique("close"), metrics=private_metrics())
    cache.set({KEY: (1, None)})
    assert len(named(redis_client, name, 2)) == 2
    cache.close()
    assert len(named(redis_client, name, 1)) == 1
    assert await own.client_id() == own_id
    await cache.aclose()  # the given async client stays open too
    assert await own.client_id() == own_id
    await own.aclose()


@pytest.mark.parametrize("given", ["sync", "async"])
async def test_both_sides_share_one_core(
    given: str, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    own: Any = (
        redis_server.client()
        if given == "sync"
        else redis.asyncio.Redis(host=redis_server.host, port=redis_server.port)
    )
    cache: NodeCache[Any] = NodeCache(own, prefix=unique("core"), metrics=private_metrics())
    cache.set({KEY: ("written in sync code", None)})
    assert await cache.aget([KEY]) == {KEY: "written in sync code"}
    assert entries_in_db(redis_client, cache) > 0  # on the given client's server
    assert cache.engine.core is cache.async_engine.core
    stats = cache.engine.stats()["node"]
    assert (stats.sets, stats.hits) == (1, 1)  # one set of counters for both sides
    await cache.aclose()
    await own.aclose() if given == "async" else own.close()


async def test_an_engine_built_from_a_client_serves_async_code(
    redis_server: RedisServer,
) -> None:
    own = redis_server.client()
    engine = CacheEngine(own, prefix=unique("engine"), metrics=private_metrics())
    cache: NodeCache[Any] = NodeCache(engine=engine)
    runs: list[str] = []
    graph = build(runs).compile(cache=cache)
    for _ in range(2):
        assert (await graph.ainvoke({"question": "e"}))["answer"] == "E"
    assert runs == ["e"]
    await cache.aclose()
    assert engine.client is own and own.ping()
    own.close()


def test_an_async_engine_alone_serves_sync_code(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    own = redis.asyncio.Redis(host=redis_server.host, port=redis_server.port)
    async_engine = AsyncCacheEngine(own, prefix=unique("aengine"), metrics=private_metrics())
    cache: NodeCache[Any] = NodeCache(async_engine=async_engine)
    runs: list[str] = []
    graph = build(runs).compile(cache=cache)
    for _ in range(2):
        assert graph.invoke({"question": "a"})["answer"] == "A"
    assert runs == ["a"]
    assert entries_in_db(redis_client, cache) > 0  # on that server, not on REDIS_URL
    cache.close()
    asyncio.run(own.aclose())


def test_engines_and_a_target_together_are_refused(redis_url: str) -> None:
    async_engine = AsyncCacheEngine(redis_url, metrics=private_metrics())
    with pytest.raises(TypeError, match="not both"):
        NodeCache(redis_url, async_engine=async_engine)


# --- clients that cannot be mirrored are refused at construction -----------------------------


class TracedConnection(redis.connection.Connection):
    """A user's own connection class: its behaviour has no asyncio counterpart we could know."""


class PatientRetry(Retry):
    """A user's own retry policy."""


def _unmirrorable() -> dict[str, tuple[Any, str]]:
    return {
        "sentinel": (
            redis.sentinel.Sentinel([("127.0.0.1", 1)]).master_for("mymaster"),
            "SentinelConnectionPool",
        ),
        "async sentinel": (
            redis.asyncio.sentinel.Sentinel([("127.0.0.1", 1)]).master_for("mymaster"),
            "SentinelConnectionPool",
        ),
        "sync-only TLS check": (
            redis.Redis(ssl=True, ssl_validate_ocsp=True, password="hunter2"),
            "'ssl_validate_ocsp'",
        ),
        "own connection class": (
            redis.Redis(connection_pool=redis.ConnectionPool(connection_class=TracedConnection)),
            "TracedConnection",
        ),
        "own retry policy": (
            redis.Redis(password="hunter2", retry=PatientRetry(NoBackoff(), 1)),
            "PatientRetry",
        ),
        "own connect hook": (
            redis.Redis(redis_connect_func=lambda connection: None),
            "'redis_connect_func'",
        ),
    }


@pytest.mark.parametrize("case", list(_unmirrorable()))
def test_a_client_that_cannot_be_mirrored_is_refused_with_the_fix(case: str) -> None:
    client, why = _unmirrorable()[case]
    with pytest.raises(ConfigurationError) as refused:
        NodeCache(client, metrics=private_metrics())
    message = str(refused.value)
    assert "NodeCache was given" in message and why in message
    assert "Pass a URL instead" in message
    assert "NodeCache(engine=engine, async_engine=engine.async_twin(async_client))" in message
    assert "hunter2" not in message


# --- Redis Cluster ---------------------------------------------------------------------------


@pytest.mark.cluster
async def test_a_sync_cluster_client_serves_ainvoke(redis_cluster: RedisClusterServers) -> None:
    own = redis_cluster.client()
    cache: NodeCache[Any] = NodeCache(own, prefix=unique("clu"), metrics=private_metrics())
    runs: list[str] = []
    graph = build(runs).compile(cache=cache)
    for _ in range(2):
        assert (await graph.ainvoke({"question": "c"}))["answer"] == "C"
    assert runs == ["c"]
    twin = cache.async_engine.client
    assert isinstance(twin, redis.asyncio.cluster.RedisCluster)
    await graph.aclear_cache()
    await graph.ainvoke({"question": "c"})
    assert runs == ["c", "c"]
    await cache.aclose()
    assert own.ping()  # the given client is still open
    own.close()


@pytest.mark.cluster
def test_an_async_cluster_client_serves_invoke(redis_cluster: RedisClusterServers) -> None:
    nodes = [redis.asyncio.cluster.ClusterNode(n.host, n.port) for n in redis_cluster.startup_nodes]
    own = redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, socket_timeout=4.0)
    cache: NodeCache[Any] = NodeCache(own, prefix=unique("aclu"), metrics=private_metrics())
    runs: list[str] = []
    graph = build(runs).compile(cache=cache)
    for _ in range(2):
        assert graph.invoke({"question": "d"})["answer"] == "D"
    assert runs == ["d"]
    twin = cache.engine.client
    assert isinstance(twin, redis.cluster.RedisCluster)
    assert twin.nodes_manager.connection_kwargs["socket_timeout"] == 4.0
    graph.clear_cache()
    graph.invoke({"question": "d"})
    assert runs == ["d", "d"]
    cache.close()
    asyncio.run(own.aclose())


async def test_a_client_made_by_create_client_with_a_db_is_mirrored(
    redis_server: RedisServer,
) -> None:
    """Our own clients check a non-zero db as they connect; a copy may go without that check."""
    from redis_checkpoint.client import create_client

    client = create_client(f"redis://127.0.0.1:{redis_server.port}/3")
    cache: NodeCache[Any] = NodeCache(client, prefix=unique("mirror-db"), metrics=private_metrics())
    await cache.aset({KEY: ("async", 60)})
    assert cache.get([KEY]) == {KEY: "async"}
    with redis_server.client() as raw:
        raw.select(3)
        assert entries_in_db(raw, cache) >= 1
    await cache.aclose()
    client.close()
