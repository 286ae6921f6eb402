"""Acknowledged checkpoints are never lost: closing writes back what the tier owes, each thread
is written back once per outage, and WAIT keeps what replicas did not confirm.

Every test runs on real redis-server processes started by the tests and kills them with SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from redis_checkpoint import AsyncRedisSaver, RedisSaver
from redis_checkpoint.testing import RedisServer
from redis_checkpoint.testing._process import NotReady, poll
from tests.test_fallback import (
    Clock,
    breaker,
    build,
    cfg,
    reference_history,
    stored_history,
    turn,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_closing_writes_back_what_the_outage_left_in_memory(
    fresh_redis: RedisServer, clock: Clock
) -> None:
    with RedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="close", breaker=breaker(clock)
    ) as saver:
        graph = build().compile(checkpointer=saver)
        turn(graph, "a", "before")
        fresh_redis.kill()
        turn(graph, "a", "during")
        turn(graph, "b", "new during")
        assert saver.memory is not None and saver.memory.pending == 2
        fresh_redis.restart()
        # No call after the restart, and the breaker is still open: only closing writes back.
        assert saver.breaker.state == "open"
    assert saver.memory.pending == 0 and saver.write_backs == 2
    expected = reference_history({"a": ["before", "during"], "b": ["new during"]})
    assert stored_history(fresh_redis.url, "close", ["a", "b"]) == expected


async def test_async_context_exit_writes_back(fresh_redis: RedisServer, clock: Clock) -> None:
    threads = [f"t{i}" for i in range(8)]
    async with AsyncRedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="aclose", breaker=breaker(clock)
    ) as saver:
        graph = build().compile(checkpointer=saver)
        await asyncio.gather(
            *(graph.ainvoke({"messages": [("user", f"{t} 0")]}, cfg(t)) for t in threads)
        )
        await asyncio.to_thread(fresh_redis.kill)
        for i in (1, 2):
            await asyncio.gather(
                *(graph.ainvoke({"messages": [("user", f"{t} {i}")]}, cfg(t)) for t in threads)
            )
        assert saver.memory is not None and saver.memory.pending == len(threads)
        await asyncio.to_thread(fresh_redis.restart)
    assert saver.memory.pending == 0
    expected = reference_history({t: [f"{t} {i}" for i in range(3)] for t in threads})
    assert stored_history(fresh_redis.url, "aclose", threads) == expected


def test_what_closing_cannot_write_back_is_logged_with_the_thread_ids(
    fresh_redis: RedisServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="redis_checkpoint.checkpoint"),
        RedisSaver.from_conn_string(
            fresh_redis.url, key_prefix="lost", breaker=breaker(clock), close_timeout=0.3
        ) as saver,
    ):
        graph = build().compile(checkpointer=saver)
        turn(graph, "x", "hello")
        fresh_redis.kill()
        turn(graph, "x", "during")
        turn(graph, "y:odd", "during")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "2 threads" in message and "'x'" in message and "'y:odd'" in message
    assert "LOST" in message and "0.3 s" in message
    assert saver.memory is not None and saver.memory.owed_threads() == ["x", "y:odd"]


async def test_each_thread_is_written_back_once_while_traffic_goes_on(
    fresh_redis: RedisServer, clock: Clock
) -> None:
    threads = [f"c{i}" for i in range(30)]
    async with AsyncRedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="once", breaker=breaker(clock)
    ) as saver:
        graph = build().compile(checkpointer=saver)

        async def talk(thread_id: str, turns: range) -> None:
            for i in turns:
                await graph.ainvoke({"messages": [("user", f"{thread_id}-{i}")]}, cfg(thread_id))

        await asyncio.gather(*(talk(t, range(0, 2)) for t in threads))
        await asyncio.to_thread(fresh_redis.kill)
        await asyncio.gather(*(talk(t, range(2, 4)) for t in threads))
        assert saver.memory is not None and saver.memory.pending == len(threads)
        await asyncio.to_thread(fresh_redis.restart)
        clock.now += 1.5
        # All conversations go on at once while the tier is written back under them.
        await asyncio.gather(*(talk(t, range(4, 8)) for t in threads))
        assert saver.memory.pending == 0
        assert saver.write_backs == len(threads)  # one per thread: nothing re-dirtied
        assert saver._router.fallback_calls > 0
    expected = reference_history({t: [f"{t}-{i}" for i in range(8)] for t in threads})
    assert stored_history(fresh_redis.url, "once", threads) == expected


REPLICA_SYNC_TIMEOUT = 30.0


def replica_of(primary: RedisServer, redis_server_bin: str) -> RedisServer:
    with primary.client() as client:
        # Redis 7 delays a diskless full sync by 5 s; on a busy machine that outlasted the wait.
        client.config_set("repl-diskless-sync-delay", 0)
    replica = RedisServer(
        binary=redis_server_bin, args=["--replicaof", "127.0.0.1", str(primary.port)]
    ).start()

    def synced() -> None:
        with replica.client() as client:
            info = client.info("replication")
        if info.get("master_link_status") != "up" or info.get("master_sync_in_progress") != 0:
            raise NotReady(f"replica not synced: {info}")

    poll(synced, REPLICA_SYNC_TIMEOUT, "the replica synced with its primary")
    # Synced is not yet answering: the first acknowledgement after a full sync can take longer
    # than a saver's WAIT allows on a busy machine. Wait for one here, before the test's writes.
    with primary.client() as client:
        client.set("replica-ready", 1)  # WAIT counts acknowledgements of this client's writes
        acknowledged = client.execute_command("WAIT", 1, int(REPLICA_SYNC_TIMEOUT * 1000))
        client.delete("replica-ready")
    assert acknowledged >= 1, "the replica never acknowledged its primary"
    return replica


def test_wait_keeps_what_no_replica_confirmed_and_writes_it_back_after_the_primary_dies(
    redis_server_bin: str, clock: Clock
) -> None:
    # A primary without persistence: when it dies, what it held is gone, unless the saver
    # still has it. With wait_replicas=1, what the replica confirmed survives on the replica;
    # what it did not confirm stays in the tier and is written back.
    with RedisServer(binary=redis_server_bin) as primary:
        replica = replica_of(primary, redis_server_bin)
        try:
            with RedisSaver.from_conn_string(
                primary.url,
                key_prefix="wait",
                breaker=breaker(clock),
                wait_replicas=1,
                wait_timeout=0.05,
            ) as saver:
                graph = build().compile(checkpointer=saver)
                turn(graph, "w", "confirmed")
                assert saver.memory is not None and saver.memory.unconfirmed_threads() == []
                assert saver._router.replication_shortfalls == 0
                replica.kill()
                turn(graph, "w", "unconfirmed")
                turn(graph, "v", "unconfirmed too")
                assert saver._router.replication_shortfalls >= 1
                assert saver.memory.unconfirmed_threads() == ["v", "w"]
                assert saver.memory.pending == 0  # held, not owed: the primary has them
                primary.kill()
                primary.restart()  # empty: nothing was persisted
                replica.restart()  # resyncs from the empty primary
                # The first call finds the connection dead: the shard failed, so what it did not
                # confirm is owed now, and written back.
                turn(graph, "w", "after")
                clock.now += 1.5
                turn(graph, "w", "after again")
                assert saver.memory.pending == 0
            expected = reference_history(
                {
                    "w": ["confirmed", "unconfirmed", "after", "after again"],
                    "v": ["unconfirmed too"],
                }
            )
            assert stored_history(primary.url, "wait", ["w", "v"]) == expected
        finally:
            replica.close()


def test_wait_rides_on_the_saver_round_trips(redis_server_bin: str) -> None:
    with RedisServer(binary=redis_server_bin) as primary:
        replica = replica_of(primary, redis_server_bin)
        try:
            with RedisSaver.from_conn_string(
                primary.url, key_prefix="waitrt", wait_replicas=1
            ) as saver:
                graph = build().compile(checkpointer=saver)
                turn(graph, "r", "counted")
                assert saver._router.replication_shortfalls == 0
            with primary.client() as client:
                assert client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0) > 0
        finally:
            replica.close()


async def test_a_write_during_its_threads_probe_write_back_waits_for_it(
    fresh_redis: RedisServer, clock: Clock
) -> None:
    """LangGraph sends a thread's writes concurrently. When the breaker's probe is the write
    that takes the thread's write-back, a second write of that thread must wait for it, not be
    served from memory: that would owe the thread again and write it back twice."""
    async with AsyncRedisSaver.from_conn_string(
        fresh_redis.url, key_prefix="probe", breaker=breaker(clock)
    ) as saver:
        graph = build().compile(checkpointer=saver)
        await graph.ainvoke({"messages": [("user", "before")]}, cfg("p"))
        await asyncio.to_thread(fresh_redis.kill)
        await graph.ainvoke({"messages": [("user", "during")]}, cfg("p"))
        assert saver.memory is not None and saver.memory.pending == 1
        assert saver.breaker.state == "open"
        latest = await saver.aget_tuple(cfg("p"))  # from memory
        assert latest is not None
        await asyncio.to_thread(fresh_redis.restart)
        clock.now += 1.5  # the next call is the breaker's probe
        fallback_calls = saver._router.fallback_calls
        await asyncio.gather(
            saver.aput_writes(latest.config, [("messages", "one")], "task-1"),
            saver.aput_writes(latest.config, [("messages", "two")], "task-2"),
        )
        assert saver._router.fallback_calls == fallback_calls  # neither went to memory
        assert saver.memory.pending == 0 and saver.breaker.state == "closed"
        assert saver.write_backs == 1
        stored = await saver.aget_tuple(cfg("p"))
        assert stored is not None
        assert sorted(value for _, _, value in stored.pending_writes) == ["one", "two"]
