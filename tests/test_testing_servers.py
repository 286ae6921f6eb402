from __future__ import annotations

import gc
import random
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis.cluster
import redis.exceptions
import redis.sentinel

from redis_checkpoint.client import create_client, is_cluster
from redis_checkpoint.errors import ConfigurationError
from redis_checkpoint.testing import (
    RedisClusterServers,
    RedisSentinelGroup,
    RedisServer,
    find_redis_cli,
    free_port,
)
from redis_checkpoint.testing.ports import free_cluster_port


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


def test_a_cluster_port_skips_taken_and_busy_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    assert 0 < free_port() < 65536
    free = free_cluster_port(set())
    assert 20000 <= free <= 45000
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        busy = held.getsockname()[1]
        # 20000's bus port is taken, `busy` is bound, `free` was free a moment ago.
        candidates = iter([20000, busy, free])
        monkeypatch.setattr(random, "randint", lambda lo, hi: next(candidates))
        assert free_cluster_port({30000}) == free


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


# --- clusters with replicas, Sentinel groups: crash drills --------------------------------


@pytest.fixture
def redis_cli_bin(redis_server_bin: str) -> str:
    path = find_redis_cli()
    if path is None:
        pytest.skip("redis-cli not found: install it with `apt-get install redis-server`")
    return path


def _eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _key_on(cluster: RedisClusterServers, node: RedisServer) -> str:
    """A fresh key whose slot ``node`` serves."""
    while True:
        key = f"test-drill:{uuid.uuid4().hex}"
        if cluster.primary_for_key(key) is node:
            return key


def _read_on_replica(replica: RedisServer, key: str) -> Any:
    with replica.client() as client:
        pipe = client.pipeline(transaction=False)  # one connection: READONLY applies to the GET
        pipe.execute_command("READONLY")
        pipe.get(key)
        return pipe.execute()[-1]


@pytest.mark.slow
@pytest.mark.cluster
def test_cluster_replica_takes_over_a_killed_primary(
    redis_server_bin: str, redis_cli_bin: str
) -> None:
    with RedisClusterServers(
        1, node_timeout_ms=1000, binary=redis_server_bin, cli=redis_cli_bin
    ) as cluster:
        assert len(cluster.nodes) == 6
        primaries = cluster.primaries()
        assert len(primaries) == 3
        replicas = {p.port: cluster.replicas_of(p) for p in primaries}
        assert all(len(r) == 1 for r in replicas.values())
        assert {n.port for r in replicas.values() for n in r} | {p.port for p in primaries} == set(
            cluster.ports
        )

        client = cluster.client()
        key = f"test-drill:{uuid.uuid4().hex}"
        client.set(key, b"replicated")
        owner = cluster.primary_for_key(key)
        node = client.get_node_from_key(key)
        assert owner.port == node.port
        # WAIT runs on the connection that wrote: one replica has acknowledged it.
        assert client.execute_command("WAIT", 1, 1000, target_nodes=node) == 1
        (replica,) = replicas[owner.port]
        assert _read_on_replica(replica, key) == b"replicated"

        cluster.kill(owner)
        assert not owner.running
        started = time.monotonic()
        promoted = cluster.wait_failover(owner)
        took = time.monotonic() - started
        print(f"\ncluster failover, node_timeout_ms=1000: {took:.2f} s after SIGKILL")
        assert promoted is replica
        assert owner not in cluster.primaries()
        assert cluster.primary_for_key(key) is promoted
        with promoted.client() as direct:
            assert direct.get(key) == b"replicated"
        # The client that wrote refreshes its slot map on the refused connection.
        assert client.get(key) == b"replicated"
        fresh = cluster.client()
        assert fresh.get(key) == b"replicated"

        # The old primary rejoins as the replica of the node that took its slots.
        started = time.monotonic()
        cluster.restart(owner)
        print(f"old primary rejoined as a synced replica in {time.monotonic() - started:.2f} s")
        assert cluster.replicas_of(promoted) == [owner]
        assert _read_on_replica(owner, key) == b"replicated"
        client.close()
        fresh.close()


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.parametrize("full_coverage", [True, False], ids=["full-coverage", "partial-coverage"])
def test_cluster_without_replicas_loses_a_primary(
    redis_server_bin: str, redis_cli_bin: str, full_coverage: bool
) -> None:
    args = [] if full_coverage else ["--cluster-require-full-coverage", "no"]
    with RedisClusterServers(
        node_timeout_ms=1000, args=args, binary=redis_server_bin, cli=redis_cli_bin
    ) as cluster:
        victim, survivor, _ = cluster.primaries()
        dead_key, live_key = _key_on(cluster, victim), _key_on(cluster, survivor)
        client = cluster.client()
        client.set(dead_key, b"dead")
        client.set(live_key, b"live")
        cluster.kill(victim)
        started = time.monotonic()
        with survivor.client() as direct:

            def victim_failed() -> bool:
                nodes = direct.execute_command("CLUSTER", "NODES").decode().splitlines()
                line = next(n for n in nodes if f":{victim.port}@" in n)
                return "fail" in line.split()[2].split(",")

            _eventually(victim_failed)
            print(f"\nprimary flagged FAIL {time.monotonic() - started:.2f} s after SIGKILL")

            def cluster_state() -> str:
                info: bytes = direct.execute_command("CLUSTER", "INFO")
                return info.decode().splitlines()[0]

            if full_coverage:
                # One uncovered slot takes the whole cluster down, live slots too.
                _eventually(lambda: cluster_state() == "cluster_state:fail", timeout=5)
                with pytest.raises(redis.exceptions.ClusterDownError):
                    direct.get(live_key)
                with pytest.raises(redis.exceptions.ClusterDownError):
                    client.get(live_key)
            else:
                # The others keep serving; the dead slots still point at the dead node.
                assert cluster_state() == "cluster_state:ok"
                assert direct.get(live_key) == b"live"
                assert client.get(live_key) == b"live"
                with pytest.raises(redis.exceptions.ResponseError, match=f":{victim.port}"):
                    direct.get(dead_key)  # MOVED to the dead node
                with pytest.raises(redis.exceptions.ConnectionError):
                    client.get(dead_key)

        # No replica can take over: wait_failover gives up with the cluster's view.
        with pytest.raises(RuntimeError, match=f"(?s)killed node {victim.port}.*CLUSTER NODES"):
            cluster.wait_failover(victim, timeout=1)

        # Restarted on its dir, it serves its slots again (empty: no AOF, no RDB).
        started = time.monotonic()
        cluster.restart(victim)
        print(f"cluster ok again {time.monotonic() - started:.2f} s after the restart")
        assert cluster.primary_for_key(dead_key) is victim
        fresh = cluster.client()
        assert fresh.get(live_key) == b"live"
        assert fresh.get(dead_key) is None
        client.close()
        fresh.close()


@pytest.mark.slow
def test_sentinel_group_promotes_a_replica(redis_server_bin: str) -> None:
    with RedisSentinelGroup(
        replicas=1, sentinels=3, down_after_ms=1000, binary=redis_server_bin
    ) as group:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in group.sentinels)
        assert group.url == f"redis+sentinel://{hosts}/mymaster"
        old = group.primary()
        assert old is group.servers[0]
        key = f"test-drill:{uuid.uuid4().hex}"
        with old.client() as direct:
            pipe = direct.pipeline(transaction=False)  # one connection for SET and its WAIT
            pipe.set(key, b"replicated")
            pipe.execute_command("WAIT", 1, 1000)
            assert pipe.execute() == [True, 1]
        # This package's factory parses the group's URL and finds the primary.
        factory = create_client(group.url)
        assert factory.get(key) == b"replicated"

        assert group.kill_primary() is old
        assert not old.running
        started = time.monotonic()
        new = group.wait_failover(old)
        took = time.monotonic() - started
        print(f"\nsentinel failover, down_after_ms=1000: {took:.2f} s after SIGKILL")
        assert new is group.servers[1]
        assert group.primary() is new

        sentinel = redis.sentinel.Sentinel(group.sentinel_addresses, socket_timeout=1.0)
        assert sentinel.discover_master("mymaster") == ("127.0.0.1", new.port)
        master = sentinel.master_for("mymaster", socket_timeout=1.0)
        assert master.get(key) == b"replicated"
        master.set(key, b"written after the failover")
        # The factory's client asks the Sentinels again when its primary is gone.
        assert factory.get(key) == b"written after the failover"
        master.close()
        factory.close()


def test_dropped_groups_kill_their_processes(redis_server_bin: str) -> None:
    group = RedisSentinelGroup(replicas=1, sentinels=1, binary=redis_server_bin).start()
    kept = [*group.servers, *group.sentinels]  # references that outlive the group
    assert all(p.running for p in kept)
    del group
    gc.collect()
    assert not any(p.running for p in kept)
