"""A cluster node going away sends only its own threads to memory.

A dedicated 3-primary cluster (the session's shared one is left alone); one primary gets SIGKILL
and comes back on its port and directory, with its slots.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from redis_checkpoint import AsyncRedisSaver
from redis_checkpoint.testing import RedisClusterServers, RedisServer
from tests.test_fallback import build, cfg, reference_history, stored_history

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def cluster_ok(node: RedisServer) -> None:
    """A restarted node answers CLUSTERDOWN until it has heard from the others."""
    with node.client() as client:
        for _ in range(500):
            if b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"):
                return
            time.sleep(0.02)
    raise AssertionError(f"node {node.port} never reached cluster_state:ok")


async def test_only_the_dead_nodes_threads_go_to_memory(redis_server_bin: str) -> None:
    threads = [f"n{i}" for i in range(24)]
    with RedisClusterServers(binary=redis_server_bin) as cluster:
        victim = cluster.nodes[1]
        async with AsyncRedisSaver.from_conn_string(cluster.url, key_prefix="nodes") as saver:
            served: set[str] = set()
            real = saver._router.in_memory

            def in_memory(call: Any, cause: BaseException | None = None) -> list[Any]:
                served.add(call.thread_id)
                return real(call, cause)

            saver._router.in_memory = in_memory  # type: ignore[method-assign]
            graph = build().compile(checkpointer=saver)

            async def talk(turns: range) -> None:
                async def one(thread_id: str) -> None:
                    for i in turns:
                        await graph.ainvoke(
                            {"messages": [("user", f"{thread_id}-{i}")]}, cfg(thread_id)
                        )

                await asyncio.gather(*(one(t) for t in threads))

            await talk(range(0, 2))
            on_victim = {
                t
                for t in threads
                if saver._router.locate is not None
                and saver._router.locate(saver.core.keys(t).idx).endswith(f":{victim.port}")
            }
            assert 0 < len(on_victim) < len(threads)
            await asyncio.to_thread(victim.kill)
            await talk(range(2, 4))
            assert served == on_victim  # the other nodes' threads stayed on Redis
            assert saver.memory is not None and saver.memory.pending == len(on_victim)
            states = {
                s.name.rsplit(":", 1)[-1]: s.breaker.state for s in saver._router.shards.values()
            }
            assert states[str(victim.port)] == "open"
            assert [state for port, state in states.items() if port != str(victim.port)] == [
                "closed",
                "closed",
            ]
            await asyncio.to_thread(victim.restart)
            await asyncio.to_thread(cluster_ok, victim)
            await asyncio.to_thread(time.sleep, 1.2)  # past the breaker's recovery timeout
            await talk(range(4, 6))
            assert saver.memory.pending == 0
            assert saver.write_backs == len(on_victim)  # once per thread
        expected = reference_history({t: [f"{t}-{i}" for i in range(6)] for t in threads})
        assert stored_history(cluster.url, "nodes", threads) == expected
