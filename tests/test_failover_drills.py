"""The failover drills of benchmarks/failover_drills.py, small, on real redis-server processes.

A 3+3 cluster loses a primary to SIGKILL, and a Sentinel group its primary, while concurrent
LangGraph conversations run on AsyncRedisSaver with ``wait_replicas=1``: callers see no error,
a fresh saver finds every acknowledged turn, only the killed primary's threads go to memory,
and each of those is written back once. Counts only: no wall-clock assertion.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from benchmarks import failover_drills
from redis_checkpoint.testing import find_redis_cli, find_redis_server

CONVERSATIONS, TURNS, AFTER_FAILOVER = 12, 20, 3

pytestmark = pytest.mark.slow


def server_binary() -> str:
    """No skipping: a drill without redis-server is a failure."""
    binary = find_redis_server()
    assert binary is not None, "redis-server not found (install it or set REDIS_SERVER_BIN)"
    return binary


def load() -> Any:
    return failover_drills.Load(CONVERSATIONS, TURNS, 0.05, 0.3, AFTER_FAILOVER, wait_replicas=1)


def check(result: Any) -> None:
    assert result.errors == []
    assert result.lost == 0 and result.acknowledged == CONVERSATIONS * TURNS
    assert result.in_memory, "no thread was served from memory: the fault missed the talk"
    assert result.in_memory <= result.on_victim  # only the killed primary's threads
    assert result.write_backs == Counter(dict.fromkeys(result.in_memory, 1))  # one each
    assert result.turns_after_failover >= CONVERSATIONS * AFTER_FAILOVER
    assert result.owed_after_close == 0


@pytest.mark.cluster
def test_a_cluster_loses_a_primary_and_no_acknowledged_turn() -> None:
    assert find_redis_cli() is not None, "redis-cli not found (install redis-server's tools)"
    result = failover_drills.cluster_drill(load(), binary=server_binary())
    check(result)
    # The other primaries' threads never left Redis.
    assert 0 < len(result.on_victim) < CONVERSATIONS
    assert result.map_refreshed  # the victim's threads now route to the promoted replica


def test_a_sentinel_group_loses_its_primary_and_no_acknowledged_turn() -> None:
    result = failover_drills.sentinel_drill(load(), binary=server_binary())
    check(result)
