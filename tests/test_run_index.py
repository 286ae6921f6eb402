"""The run index: ``delete_for_runs`` visits the threads a run wrote to, not every thread; and
``copy_thread`` names the copy in the copied checkpoints' metadata, as the Agent Server does."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

from redis_checkpoint import CircuitBreaker, RedisSaver
from redis_checkpoint.testing import RedisServer


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def put_run(saver: RedisSaver, thread_id: str, run_id: str, steps: int = 2) -> None:
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    for step in range(steps):
        checkpoint = generate_checkpoint(
            channel_values={"n": step}, channel_versions={"n": step + 1}
        )
        metadata = {"step": step, "run_id": run_id, "thread_id": thread_id}
        config = saver.put(config, checkpoint, metadata, {"n": step + 1})  # type: ignore[arg-type]


def scripts_run(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(
        stats.get("cmdstat_eval", {}).get("calls", 0)
    )


def runs_of(saver: RedisSaver, thread_id: str) -> list[str]:
    return [t.metadata["run_id"] for t in saver.list({"configurable": {"thread_id": thread_id}})]


@pytest.mark.parametrize("bystanders", [10, 300])
def test_delete_for_runs_costs_the_run_not_the_keyspace(redis_url: str, bystanders: int) -> None:
    with RedisSaver.from_conn_string(redis_url, key_prefix=unique("ri")) as saver:
        for i in range(bystanders):
            put_run(saver, f"other-{i}", "run-other", steps=1)
        put_run(saver, "a", "run-1")
        put_run(saver, "b", "run-1")
        put_run(saver, "b", "run-2")
        before_scripts, before_trips = scripts_run(saver.client), saver.round_trips
        saver.delete_for_runs(["run-1"])
        # one delete_runs script per thread the run wrote to, whatever the number of threads
        assert scripts_run(saver.client) - before_scripts == 2
        # read the index; delete; unregister the emptied thread "a"; drop the index
        assert saver.round_trips - before_trips == 4
        assert runs_of(saver, "a") == []
        assert runs_of(saver, "b") == ["run-2", "run-2"]
        assert runs_of(saver, "other-0") == ["run-other"]
        assert "a" not in saver.list_threads() and "b" in saver.list_threads()
        assert not saver.client.exists(saver.core.layout.run_index("run-1"))
        # a run that wrote nothing, and no runs at all
        saver.delete_for_runs(["never-ran"])
        saver.delete_for_runs([])
        assert runs_of(saver, "b") == ["run-2", "run-2"]


def test_the_index_expires_with_the_threads(redis_url: str) -> None:
    with RedisSaver.from_conn_string(redis_url, key_prefix=unique("rittl"), ttl=60) as saver:
        put_run(saver, "t", "run-ttl")
        key = saver.core.layout.run_index("run-ttl")
        assert 60_000 < saver.client.pttl(key) <= 75_000
        (member, score) = saver.client.zrange(key, 0, -1, withscores=True)[0]
        assert member == b"t" and score > 0
        saver.delete_for_runs(["run-ttl"])
        assert runs_of(saver, "t") == []


def test_run_ids_are_escaped_in_keys(redis_url: str) -> None:
    with RedisSaver.from_conn_string(redis_url, key_prefix=unique("riesc")) as saver:
        odd = "run:{1}*?ü %2F"
        put_run(saver, "t", odd)
        put_run(saver, "u", "run:")
        assert saver.core.layout.run_index(odd).endswith("}")
        saver.delete_for_runs([odd])
        assert runs_of(saver, "t") == [] and runs_of(saver, "u") == ["run:", "run:"]


def test_another_process_finds_the_run(redis_url: str) -> None:
    prefix = unique("riproc")
    with RedisSaver.from_conn_string(redis_url, key_prefix=prefix) as writer:
        put_run(writer, "t", "run-x")
    with RedisSaver.from_conn_string(redis_url, key_prefix=prefix) as other:
        other.delete_for_runs(["run-x"])
        assert runs_of(other, "t") == []


def test_a_thread_deleted_and_written_again_is_indexed_again(redis_url: str) -> None:
    with RedisSaver.from_conn_string(redis_url, key_prefix=unique("riagain")) as saver:
        put_run(saver, "t", "run-1")
        saver.delete_for_runs(["run-1"])
        put_run(saver, "t", "run-1")  # this process had indexed it before the delete
        saver.delete_for_runs(["run-1"])
        assert runs_of(saver, "t") == []
        put_run(saver, "u", "run-2")
        # deleted by hand (another process's delete_for_runs): the thread comes back new
        keys = saver.core.keys("u")
        saver.client.delete(saver.core.layout.run_index("run-2"), keys.idx, keys.data)
        put_run(saver, "u", "run-2")
        saver.delete_for_runs(["run-2"])
        assert runs_of(saver, "u") == []


def test_outage_writes_are_indexed_when_written_back(fresh_redis: RedisServer) -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "checkpoint", failure_threshold=1, recovery_timeout=1.0, clock=lambda: now[0]
    )
    with RedisSaver.from_conn_string(fresh_redis.url, key_prefix="riout", breaker=breaker) as saver:
        put_run(saver, "before", "run-1")
        fresh_redis.kill()
        put_run(saver, "during", "run-1")
        put_run(saver, "during", "run-2")
        assert saver.serving_from_memory
        fresh_redis.restart()
        now[0] += 2
        assert saver.ping() and saver.write_backs == 1
        saver.delete_for_runs(["run-1"])
        assert runs_of(saver, "during") == ["run-2", "run-2"]
        assert runs_of(saver, "before") == []


def test_copy_thread_names_the_copy_in_its_metadata(redis_url: str) -> None:
    with RedisSaver.from_conn_string(redis_url, key_prefix=unique("ricopy")) as saver:
        put_run(saver, "src", "run-1", steps=3)
        # metadata the filters cannot spell exactly (a float) is stored serialized
        config = saver.get_tuple({"configurable": {"thread_id": "src"}})
        assert config is not None
        checkpoint = generate_checkpoint(channel_values={"n": 9}, channel_versions={"n": 9})
        meta = {"step": 3, "run_id": "run-2", "thread_id": "src", "score": 0.5}
        saver.put(config.config, checkpoint, meta, {"n": 9})  # type: ignore[arg-type]
        saver.copy_thread("src", "dst")

        def found(thread_id: str, named: str) -> list[Any]:
            conf = {"configurable": {"thread_id": thread_id}}
            return list(saver.list(conf, filter={"thread_id": named}))

        assert len(found("dst", "dst")) == 4 and found("dst", "src") == []
        assert len(found("src", "src")) == 4 and found("src", "dst") == []
        copied = saver.get_tuple({"configurable": {"thread_id": "dst"}})
        assert copied is not None
        assert copied.metadata == {**meta, "thread_id": "dst"}
        assert copied.checkpoint["channel_values"] == {"n": 9}
        # the copy is indexed under the source's runs
        saver.delete_for_runs(["run-1"])
        assert runs_of(saver, "dst") == ["run-2"]
        assert runs_of(saver, "src") == ["run-2"]
