from __future__ import annotations

import asyncio
import importlib.util
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.exceptions
import redis.sentinel
import redis.utils

from redis_checkpoint.client import (
    HIREDIS_AVAILABLE,
    acheck_connection,
    check_connection,
    create_async_client,
    create_client,
    describe_client,
    is_cluster,
    redact_url,
)
from redis_checkpoint.errors import ConfigurationError, RedisUnavailableError
from redis_checkpoint.failures import is_unavailable_error
from redis_checkpoint.settings import ENV_VARS, Settings
from redis_checkpoint.testing import RedisServer, free_port


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # create_client(url) still reads the other settings from the environment.
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def _key() -> str:
    return f"test-client:{uuid.uuid4().hex}"


# --- redact_url ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://alice:pw@host:6379/0", "redis://alice:***@host:6379/0"),
        ("rediss://alice:p%40ss@host:6380/2", "rediss://alice:***@host:6380/2"),
        ("redis://alice:p@ss@host:1/0", "redis://alice:***@host:1/0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://alice@host/0", "redis://alice@host/0"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        ("unix:///tmp/r.sock?db=1&password=pw", "unix:///tmp/r.sock?db=1&password=***"),
        (
            "redis+sentinel://:pw@h1:26379,h2:26380/mymaster/1",
            "redis+sentinel://:***@h1:26379,h2:26380/mymaster/1",
        ),
        ("redis://[broken", "<unparseable redis url>"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# --- standalone ---------------------------------------------------------------------


def test_create_client_round_trip_returns_bytes(redis_url: str) -> None:
    client = create_client(redis_url)
    try:
        key = _key()
        client.set(key, "välue")
        assert client.get(key) == "välue".encode()
        client.delete(key)
    finally:
        client.close()


def test_create_client_applies_settings(redis_url: str) -> None:
    client = create_client(
        Settings(url=redis_url, max_connections=7, socket_timeout=1.25, retries=2),
        socket_connect_timeout=0.3,
    )
    assert isinstance(client, redis.Redis)
    pool = client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.max_connections == 7
    kwargs = client.get_connection_kwargs()
    assert kwargs["socket_timeout"] == 1.25
    assert kwargs["socket_connect_timeout"] == 0.3
    assert kwargs["decode_responses"] is False
    retry = kwargs["retry"]
    assert retry.get_retries() == 2
    assert set(retry._supported_errors) == {
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    }
    # Backoff is small and capped: the whole retry budget stays far below a second.
    assert max(retry._backoff.compute(n) for n in range(1, 20)) <= 0.1
    client.close()


def test_create_client_none_reads_environment(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_SOCKET_TIMEOUT", "1.5")
    monkeypatch.setenv("REDIS_MAX_CONNECTIONS", "3")
    client = create_client()
    assert isinstance(client, redis.Redis)
    assert client.get_connection_kwargs()["socket_timeout"] == 1.5
    assert client.connection_pool.max_connections == 3
    assert client.ping() is True
    client.close()


def test_url_and_url_override_together_is_an_error(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        create_client(redis_url, url=redis_url)


def test_decode_responses_in_url_query_is_rejected(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="decode_responses"):
        create_client(redis_url + "?decode_responses=true")


def test_unsupported_scheme() -> None:
    with pytest.raises(ConfigurationError, match="unsupported scheme 'memcached'"):
        create_client("memcached://127.0.0.1:11211")


def test_unsupported_target_type() -> None:
    with pytest.raises(ConfigurationError, match="int"):
        create_client(42)  # type: ignore[arg-type]


def test_rediss_uses_tls_connections() -> None:
    client = create_client(f"rediss://127.0.0.1:{free_port()}/0")
    assert isinstance(client, redis.Redis)
    assert issubclass(client.connection_pool.connection_class, redis.connection.SSLConnection)
    client.close()


def test_db_check_hooks_only_connections_that_select_a_db() -> None:
    # db 0 is never SELECTed: its connections keep redis-py's own handshake untouched.
    plain = create_client(f"redis://127.0.0.1:{free_port()}/0")
    assert "redis_connect_func" not in plain.get_connection_kwargs()
    plain.close()
    # Another db gets the check that turns "DB index is out of range" into a ConfigurationError
    # (tests/test_url_errors.py runs it on real servers).
    selecting = create_client(f"redis://127.0.0.1:{free_port()}/2")
    assert callable(selecting.get_connection_kwargs()["redis_connect_func"])
    selecting.close()


async def test_async_round_trip(redis_url: str) -> None:
    client = create_async_client(redis_url, max_connections=4)
    assert isinstance(client, redis.asyncio.Redis)
    assert isinstance(client.connection_pool, redis.asyncio.BlockingConnectionPool)
    assert client.connection_pool.max_connections == 4
    try:
        key = _key()
        await client.set(key, b"\x00\xff")
        assert await client.get(key) == b"\x00\xff"
        await client.delete(key)
        await acheck_connection(client, redis_url)
    finally:
        await client.aclose()


# --- unix sockets -------------------------------------------------------------------


@pytest.fixture(scope="module")
def unix_socket_server(redis_server_bin: str) -> Iterator[tuple[RedisServer, str]]:
    # A short directory of our own: unix socket paths are limited to ~107 bytes.
    sock_dir = Path(tempfile.mkdtemp(prefix="rc-sock-"))
    path = str(sock_dir / "redis.sock")
    server = RedisServer(
        binary=redis_server_bin, args=["--unixsocket", path, "--unixsocketperm", "700"]
    )
    server.start()
    try:
        yield server, path
    finally:
        server.close()
        sock_dir.rmdir()


def test_unix_socket_round_trip(unix_socket_server: tuple[RedisServer, str]) -> None:
    _, path = unix_socket_server
    client = create_client(f"unix://{path}?db=0")
    assert isinstance(client, redis.Redis)
    assert client.connection_pool.connection_class is redis.connection.UnixDomainSocketConnection
    key = _key()
    client.set(key, b"over-unix")
    assert client.get(key) == b"over-unix"
    check_connection(client)
    client.close()


async def test_async_unix_socket_round_trip(
    unix_socket_server: tuple[RedisServer, str],
) -> None:
    _, path = unix_socket_server
    client = create_async_client(f"unix://{path}")
    key = _key()
    await client.set(key, b"async-unix")
    assert await client.get(key) == b"async-unix"
    await client.aclose()


def test_unix_socket_cannot_be_cluster() -> None:
    with pytest.raises(ConfigurationError, match="unix sockets"):
        create_client("unix:///tmp/x.sock?cluster=true")


# --- sentinel -----------------------------------------------------------------------


def _sentinel_hosts(pool: Any) -> list[tuple[str, int]]:
    return [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in pool.sentinel_manager.sentinels
    ]


def test_sentinel_url_configures_sentinel_without_connecting() -> None:
    client = create_client(
        "redis+sentinel://:masterpw@10.1.2.3:26379,sentinel-b:26380/mymaster/2"
        "?sentinel_password=sentpw",
        socket_timeout=0.9,
    )
    assert isinstance(client, redis.Redis)
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.is_master
    assert _sentinel_hosts(pool) == [("10.1.2.3", 26379), ("sentinel-b", 26380)]
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "masterpw"
    assert pool.connection_kwargs["socket_timeout"] == 0.9
    assert pool.connection_kwargs["decode_responses"] is False
    assert pool.max_connections == 50
    assert not issubclass(pool.connection_class, redis.connection.SSLConnection)
    sentinel_kwargs = pool.sentinel_manager.sentinel_kwargs
    assert sentinel_kwargs["password"] == "sentpw"
    assert sentinel_kwargs["socket_timeout"] == 0.9
    assert sentinel_kwargs["retry"].get_retries() == 1


def test_sentinel_defaults_port_and_db_and_tls() -> None:
    client = create_client("rediss+sentinel://s1,s2:5000/cache")
    assert isinstance(client, redis.Redis)
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert _sentinel_hosts(pool) == [("s1", 26379), ("s2", 5000)]
    assert pool.service_name == "cache"
    assert pool.connection_kwargs["db"] == 0
    assert pool.connection_kwargs.get("password") is None
    assert issubclass(pool.connection_class, redis.connection.SSLConnection)
    assert pool.sentinel_manager.sentinel_kwargs["ssl"] is True


async def test_async_sentinel_url() -> None:
    client = create_async_client("redis+sentinel://:pw@h1:26379,h2:26381/svc/1")
    assert isinstance(client, redis.asyncio.Redis)
    pool = client.connection_pool
    assert isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert pool.service_name == "svc"
    assert _sentinel_hosts(pool) == [("h1", 26379), ("h2", 26381)]
    assert pool.connection_kwargs["db"] == 1
    assert pool.connection_kwargs["password"] == "pw"


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:26379",  # no service name
        "redis+sentinel://h1:26379/svc/notadb",
        "redis+sentinel://h1:26379/svc?foo=bar",
        "redis+sentinel://h1:notaport/svc",
    ],
)
def test_bad_sentinel_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        create_client(url)


# --- cluster selection (asyncio cluster clients connect lazily) -------------------------


async def test_cluster_scheme_selects_cluster_client() -> None:
    client = create_async_client("redis+cluster://127.0.0.1:7100,127.0.0.1:7101")
    assert isinstance(client, redis.asyncio.cluster.RedisCluster)
    assert is_cluster(client)
    ports = sorted(node.port for node in client.nodes_manager.startup_nodes.values())
    assert ports == [7100, 7101]
    assert client.retry.get_retries() == 1
    await client.aclose()


@pytest.mark.parametrize(
    ("target", "overrides"),
    [
        ("redis://127.0.0.1:7102/0?cluster=true", {}),
        ("redis://127.0.0.1:7102", {"cluster": True}),
        (Settings(url="redis://127.0.0.1:7102", cluster=True), {}),
    ],
)
async def test_cluster_selected_by_query_or_setting(
    target: str | Settings, overrides: dict[str, Any]
) -> None:
    client = create_async_client(target, **overrides)
    assert isinstance(client, redis.asyncio.cluster.RedisCluster)
    await client.aclose()


def test_cluster_false_contradicting_url_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="contradicts"):
        create_client("redis+cluster://127.0.0.1:7100", cluster=False)


def test_sync_cluster_unreachable_raises_unavailable() -> None:
    url = f"redis+cluster://:pw@127.0.0.1:{free_port()}"
    with pytest.raises(RedisUnavailableError) as info:
        create_client(url)
    assert ":***@" in str(info.value)
    assert "pw@" not in str(info.value)


def test_cluster_client_against_standalone_server_is_a_config_error(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot use Redis Cluster"):
        create_client(redis_url, cluster=True)


def test_cluster_false_query_keeps_standalone(redis_url: str) -> None:
    client = create_client(redis_url + "?cluster=false")
    assert isinstance(client, redis.Redis)
    assert client.ping() is True
    client.close()


def test_is_cluster_false_for_standalone(redis_url: str) -> None:
    client = create_client(redis_url)
    assert not is_cluster(client)
    assert not is_cluster(object())
    client.close()


async def test_describe_client(unix_socket_server: tuple[RedisServer, str]) -> None:
    assert describe_client(create_client("redis://:pw@127.0.0.1:7200/3")) == (
        "redis://127.0.0.1:7200/3"
    )
    _, path = unix_socket_server
    assert describe_client(create_client(f"unix://{path}")) == f"unix://{path}"
    sentinel = create_client("redis+sentinel://:pw@s1:1,s2:2/svc")
    assert describe_client(sentinel) == "redis+sentinel://s1:1,s2:2/svc"
    cluster = create_async_client("redis+cluster://127.0.0.1:7300")
    assert describe_client(cluster) == "redis+cluster://127.0.0.1:7300"
    await cluster.aclose()
    assert describe_client(object()) == "object"


# --- existing clients ---------------------------------------------------------------


def test_existing_client_is_returned_as_is(redis_server: RedisServer) -> None:
    existing = redis_server.client()
    assert create_client(existing) is existing
    existing.close()


def test_existing_decoding_client_is_rejected(redis_server: RedisServer) -> None:
    decoding = redis_server.client(decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses=True"):
        create_client(decoding)
    decoding.close()


async def test_existing_async_clients(redis_server: RedisServer) -> None:
    existing = redis.asyncio.Redis(port=redis_server.port)
    assert create_async_client(existing) is existing
    decoding = redis.asyncio.Redis(port=redis_server.port, decode_responses=True)
    with pytest.raises(ConfigurationError, match="binary"):
        create_async_client(decoding)
    await existing.aclose()
    await decoding.aclose()


async def test_sync_async_mismatch_is_rejected(redis_server: RedisServer) -> None:
    async_client = redis.asyncio.Redis(port=redis_server.port)
    sync_client = redis_server.client()
    with pytest.raises(ConfigurationError, match="create_async_client"):
        create_client(async_client)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="create_client"):
        create_async_client(sync_client)  # type: ignore[arg-type]
    await async_client.aclose()
    sync_client.close()


# --- bounded retries against a dead server ------------------------------------------


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_dead_server_bounded_connection_attempts(
    retries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = 0
    original: Any = redis.connection.Connection._connect

    def counting(self: redis.connection.Connection) -> Any:
        nonlocal attempts
        attempts += 1
        return original(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", counting)
    url = f"redis://:topsecret@127.0.0.1:{free_port()}/0"
    client = create_client(url, retries=retries)
    with pytest.raises(redis.exceptions.ConnectionError):
        client.ping()
    assert attempts == retries + 1

    attempts = 0
    with pytest.raises(RedisUnavailableError) as info:
        check_connection(client, url)
    assert attempts == retries + 1
    message = str(info.value)
    assert message.startswith("cannot reach Redis at redis://:***@127.0.0.1:")
    assert "topsecret" not in message
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    client.close()


@pytest.mark.parametrize("retries", [0, 2])
async def test_async_dead_server_bounded_connection_attempts(
    retries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = 0
    original: Any = redis.asyncio.connection.Connection._connect

    async def counting(self: redis.asyncio.connection.Connection) -> Any:
        nonlocal attempts
        attempts += 1
        return await original(self)

    monkeypatch.setattr(redis.asyncio.connection.Connection, "_connect", counting)
    url = f"redis://127.0.0.1:{free_port()}/0"
    client = create_async_client(url, retries=retries)
    with pytest.raises(RedisUnavailableError) as info:
        await acheck_connection(client, url)
    assert attempts == retries + 1
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    await client.aclose()


def test_check_connection_passes_on_live_server(redis_url: str) -> None:
    client = create_client(redis_url)
    check_connection(client, redis_url)
    client.close()


# --- error classification -----------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.ConnectionError("refused"),
        redis.exceptions.TimeoutError("timeout"),
        redis.exceptions.BusyLoadingError("loading"),
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.MasterDownError("MASTERDOWN no master"),
        redis.exceptions.TryAgainError("TRYAGAIN"),
        redis.exceptions.ClusterError("TTL exhausted"),
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.exceptions.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
        redis.exceptions.RedisClusterException("Redis Cluster cannot be connected."),
        OSError("network down"),
        TimeoutError("timed out"),  # what socket timeouts raise
        asyncio.TimeoutError(),
        ConnectionRefusedError(),
        RedisUnavailableError("down"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_unavailable_errors(exc: BaseException) -> None:
    assert is_unavailable_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.NoScriptError("No matching script."),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
        redis.exceptions.ResponseError("ERR syntax error"),
        redis.exceptions.DataError("bad"),
        redis.exceptions.WatchError("changed"),
        redis.exceptions.RedisClusterException("Argument 'db' is not possible"),
        redis.exceptions.RedisClusterException(
            "Redis Cluster cannot be connected. Please provide at least one reachable node: "
            "Cluster mode is not enabled on this node"
        ),
        ValueError("x"),
        ConfigurationError("x"),
        KeyError("x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_ordinary_errors_are_not_unavailability(exc: BaseException) -> None:
    assert not is_unavailable_error(exc)


def test_real_server_errors_are_classified(redis_url: str) -> None:
    client = create_client(redis_url)
    key = _key()
    client.set(key, b"string")
    with pytest.raises(redis.exceptions.ResponseError) as wrongtype:
        client.lpush(key, b"x")
    assert "WRONGTYPE" in str(wrongtype.value)
    assert not is_unavailable_error(wrongtype.value)
    with pytest.raises(redis.exceptions.NoScriptError) as noscript:
        client.evalsha("0" * 40, 0)
    assert not is_unavailable_error(noscript.value)
    client.delete(key)
    client.close()


def test_real_out_of_memory_is_unavailable(redis_server_bin: str) -> None:
    with RedisServer(binary=redis_server_bin, args=["--maxmemory", "1"]) as server:
        client = create_client(server.url)
        with pytest.raises(redis.exceptions.OutOfMemoryError) as info:
            client.set(_key(), b"x" * 100)
        assert is_unavailable_error(info.value)
        client.close()


def test_hiredis_flag_matches_redis_py() -> None:
    assert isinstance(HIREDIS_AVAILABLE, bool)
    assert redis.utils.HIREDIS_AVAILABLE == HIREDIS_AVAILABLE
    if importlib.util.find_spec("hiredis") is not None:
        assert HIREDIS_AVAILABLE
        assert redis.connection.DefaultParser.__name__ == "_HiredisParser"
