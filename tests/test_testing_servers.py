from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis.cluster

from redis_checkpoint.client import create_client, is_cluster
from redis_checkpoint.errors import ConfigurationError
from redis_checkpoint.testing import RedisClusterServers, RedisServer


def test_fresh_redis_survives_sigkill(fresh_redis: RedisServer) -> None:
    client = create_client(fresh_redis.url)
    key = f"test-servers:{uuid.uuid4().hex}"
    client.set(key, b"durable")
    pid = fresh_redis.pid
    fresh_redis.kill()
    assert not fresh_redis.running
    fresh_redis.restart()
    assert fresh_redis.running
    assert fresh_redis.pid != pid
    # The same client reconnects to the restarted server on the same port.
    assert client.get(key) == b"durable"
    client.close()


def test_stop_removes_dir_unless_appendonly(redis_server_bin: str) -> None:
    plain = RedisServer(binary=redis_server_bin).start()
    plain_dir = plain.data_dir
    assert plain_dir is not None and plain_dir.is_dir()
    plain.stop()
    assert not plain_dir.exists()

    durable = RedisServer(appendonly=True, binary=redis_server_bin).start()
    durable_dir = durable.data_dir
    assert durable_dir is not None
    durable.stop()
    assert durable_dir.is_dir()
    durable.close()
    assert not durable_dir.exists()


def test_start_failure_reports_log(redis_server_bin: str) -> None:
    server = RedisServer(binary=redis_server_bin, args=["--no-such-option", "1"])
    with pytest.raises(RuntimeError, match="no-such-option"):
        server.start()
    server.close()


def test_fixed_port_in_use_is_reported(redis_server: RedisServer, redis_server_bin: str) -> None:
    clash = RedisServer(redis_server.port, binary=redis_server_bin)
    with pytest.raises(RuntimeError, match=f"could not bind port {redis_server.port}"):
        clash.start()
    clash.close()
    assert redis_server.client().ping()


@pytest.mark.cluster
def test_cluster_round_trip(redis_cluster: RedisClusterServers) -> None:
    assert redis_cluster.url == f"redis+cluster://127.0.0.1:{redis_cluster.ports[0]}"
    assert len(redis_cluster.ports) == 3
    client = create_client(redis_cluster.url)
    assert isinstance(client, redis.cluster.RedisCluster)
    assert is_cluster(client)
    # Keys spread over all three primaries.
    keys = [f"test-cluster:{uuid.uuid4().hex}:{i}" for i in range(30)]
    for i, key in enumerate(keys):
        client.set(key, str(i).encode())
    assert [client.get(key) for key in keys] == [str(i).encode() for i in range(30)]
    locate: Any = client.get_node_from_key
    owners = {locate(key).port for key in keys}
    assert owners == set(redis_cluster.ports)
    client.delete(*keys[:1])
    client.close()


@pytest.mark.cluster
def test_cluster_client_passthrough(redis_cluster: RedisClusterServers) -> None:
    existing = redis_cluster.client()
    assert create_client(existing) is existing
    existing.close()
    decoding = redis_cluster.client(decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        create_client(decoding)
    decoding.close()
