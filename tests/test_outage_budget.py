"""fallback_max_owed_bytes: what the in-memory tier holds owed to Redis is bounded. An outage
write that would go over the budget is refused (RedisUnavailableError, nothing changed), reads
are still answered, and once Redis is back and the owed threads are written back, writes are
accepted again.

The savers' tests kill a real redis-server during conversations, record which checkpoint calls
were accepted, and compare what Redis holds after the write-back with langgraph's InMemorySaver
given the same accepted calls.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from prometheus_client import CollectorRegistry
from test_fallback import Clock, build, cfg

from redis_checkpoint import (
    AsyncRedisSaver,
    CircuitBreaker,
    ConfigurationError,
    Metrics,
    RedisSaver,
    RedisUnavailableError,
)
from redis_checkpoint.checkpoint.core import SaverCore
from redis_checkpoint.checkpoint.journal import Journal, read_segment
from redis_checkpoint.checkpoint.memory import ThreadMemoryTier
from redis_checkpoint.steps import Call
from redis_checkpoint.testing import RedisServer

BUDGET = 200_000
THREADS = ["a", "b", "c"]


# -- the tier on its own -----------------------------------------------------------------------


def _put_call(core: SaverCore, thread_id: str, size: int) -> Call:
    """A put of ``size`` hex digits (about half that once compressed)."""
    value = secrets.token_hex(size // 2)
    cp = generate_checkpoint(channel_values={"blob": value}, channel_versions={"blob": 1})
    conf = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    call: Call = next(core.put(conf, cp, {"step": 0}, {"blob": 1}))
    return call


def _get_call(core: SaverCore, thread_id: str) -> Call:
    call: Call = next(core.get_tuple({"configurable": {"thread_id": thread_id}}))
    return call


def _held_sizes(tier: ThreadMemoryTier) -> int:
    """owed_bytes counted the slow way: the sizes of every thread the tier holds for Redis."""
    return sum(t.size for thread_id, t in tier._threads.items() if tier._held(thread_id))


def _snapshot(tier: ThreadMemoryTier, journal: Journal) -> dict[str, Any]:
    threads = {
        thread_id: (list(t.members), dict(t.data), t.size) for thread_id, t in tier._threads.items()
    }
    return {
        "threads": threads,
        "size": tier.size,
        "owed_bytes": tier.owed_bytes,
        "owed": tier.owed_threads(),
        "appended": journal.appended,
        "file": journal.path.read_bytes(),
        "journal_owes": read_segment(journal.path).owed,
    }


def test_a_write_over_the_budget_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "rc")
    tier = ThreadMemoryTier(journal=journal, max_owed_bytes=20_000)
    core = SaverCore(JsonPlusSerializer())
    accepted = 0
    with pytest.raises(RedisUnavailableError) as refused:
        for i in range(100):
            call = _put_call(core, THREADS[i % 3], 3_000)
            before = _snapshot(tier, journal) if accepted else None
            tier.execute(call, outage=True)
            accepted += 1
            assert tier.owed_bytes == _held_sizes(tier) <= 20_000
    assert 3 <= accepted < 100
    message = str(refused.value)
    assert "fallback_max_owed_bytes=20000" in message and "refused" in message
    # the refused put left the tier and the journal as they were
    assert before is not None and _snapshot(tier, journal) == before
    assert tier.refused_writes == 1
    # reads are still answered, from what was accepted
    for thread_id in THREADS:
        reply = tier.execute(_get_call(core, thread_id), outage=True)
        assert reply[0] is not None
    # Redis answers: the owed threads are written back, and the budget is free again
    for thread_id, _ in tier.take_many(10, lambda thread_id: True):
        tier.written_back(thread_id, ok=True)
    assert tier.owed_bytes == _held_sizes(tier) == 0 and tier.pending == 0
    tier.execute(call, outage=True)
    assert tier.owed_bytes == _held_sizes(tier) > 0
    journal.close()


def test_the_budget_counts_what_the_tier_holds_for_redis_and_nothing_else() -> None:
    tier = ThreadMemoryTier(max_owed_bytes=5_000)
    core = SaverCore(JsonPlusSerializer())
    # mirrored while Redis answers: under fallback_max_bytes, not this budget
    tier.mirror(_put_call(core, "mirrored", 12_000), [[1, 0, 1]])
    assert tier.size > 5_000 and tier.owed_bytes == 0
    # a first outage write to it would make the whole thread owed: refused
    with pytest.raises(RedisUnavailableError, match="fallback_max_owed_bytes=5000"):
        tier.execute(_put_call(core, "mirrored", 200), outage=True)
    assert tier.owed_bytes == 0 and tier.pending == 0
    # a new thread's small write fits
    tier.execute(_put_call(core, "new", 200), outage=True)
    assert 0 < tier.owed_bytes == _held_sizes(tier) < 5_000
    # writes that WAIT did not see confirmed by replicas are held too, until a WAIT confirms
    tier.unconfirmed("redis", ["mirrored"])
    assert tier.owed_bytes == _held_sizes(tier) > 5_000
    tier.confirmed("redis")
    assert 0 < tier.owed_bytes == _held_sizes(tier) < 5_000


def test_a_delete_is_accepted_over_the_budget_and_frees_it() -> None:
    tier = ThreadMemoryTier(max_owed_bytes=10_000)
    core = SaverCore(JsonPlusSerializer())
    tier.execute(_put_call(core, "big", 14_000), outage=True)
    other = _put_call(core, "other", 8_000)
    with pytest.raises(RedisUnavailableError):
        tier.execute(other, outage=True)
    tier.execute(next(core.delete_thread("big")), outage=True)
    assert tier.owed_bytes == 0 and tier.owed_threads() == ["big"]  # the deletion is owed
    tier.execute(other, outage=True)
    assert tier.owed_bytes == _held_sizes(tier) > 3_000


def test_the_budget_must_be_a_byte_count(dead_url: str) -> None:
    client = redis.Redis.from_url(dead_url)
    for wrong in (-1, 1.5, None):
        with pytest.raises(ConfigurationError, match="fallback_max_owed_bytes"):
            RedisSaver(client, fallback_max_owed_bytes=wrong)
    saver = RedisSaver(client, fallback_max_owed_bytes=0)  # 0: every outage write refused
    assert saver.memory is not None and saver.memory.max_owed_bytes == 0
    assert RedisSaver(client).memory.max_owed_bytes == 256 * 1024 * 1024  # type: ignore[union-attr]


# -- the savers, on a killed redis-server ------------------------------------------------------


class Recorder:
    """Wraps a saver's put and put_writes (or their async forms): the calls that returned, in
    order, and how many raised RedisUnavailableError."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, tuple[Any, ...]]] = []
        self.refused = 0

    def wrap(self, saver: Any, names: tuple[str, ...]) -> None:
        for name in names:
            real = getattr(saver, name)
            maker = self._async if name.startswith("a") else self._sync
            setattr(saver, name, maker(name.removeprefix("a"), real))

    def _sync(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            try:
                out = real(*args)
            except RedisUnavailableError:
                self.refused += 1
                raise
            self.accepted.append((name, args))
            return out

        return call

    def _async(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        async def call(*args: Any) -> Any:
            try:
                out = await real(*args)
            except RedisUnavailableError:
                self.refused += 1
                raise
            self.accepted.append((name, args))
            return out

        return call

    def replayed(self) -> InMemorySaver:
        """InMemorySaver given the same accepted calls."""
        reference = InMemorySaver()
        for name, args in self.accepted:
            getattr(reference, name)(*args)
        return reference


def history(saver: Any, thread_ids: list[str]) -> dict[str, list[Any]]:
    graph = build().compile(checkpointer=saver)
    return {
        t: [
            (
                s.config["configurable"]["checkpoint_id"],
                [m.content for m in s.values.get("messages", [])],
                s.next,
                s.metadata["step"] if s.metadata else None,
            )
            for s in graph.get_state_history(cfg(t))
        ]
        for t in thread_ids
    }


def ours_versions(saver: InMemorySaver) -> InMemorySaver:
    """InMemorySaver going on from our saver's checkpoints: it must read our versions."""
    saver.get_next_version = functools.partial(RedisSaver.get_next_version, saver)  # type: ignore[method-assign]
    return saver


def contents(state: Any) -> list[str]:
    return [m.content for m in state.values.get("messages", [])]


def tuples(found: list[Any]) -> list[Any]:
    """What a saver's list() says of each checkpoint, comparable across savers."""
    return [
        (
            t.config["configurable"]["checkpoint_id"],
            [m.content for m in t.checkpoint["channel_values"].get("messages", [])],
            t.metadata.get("step"),
            sorted((task, channel) for task, channel, _ in t.pending_writes or []),
        )
        for t in found
    ]


def stored(url: str, thread_ids: list[str]) -> dict[str, list[Any]]:
    with RedisSaver.from_conn_string(url, key_prefix="budget", fallback=False) as fresh:
        return history(fresh, thread_ids)


def texts() -> Iterator[tuple[str, str]]:
    """Turns over the threads in turn, each message ~4 KB that does not compress away."""
    for i in range(400):
        yield THREADS[i % len(THREADS)], f"{i} {secrets.token_hex(2_000)}"


def options(clock: Clock, registry: CollectorRegistry) -> dict[str, Any]:
    return {
        "key_prefix": "budget",
        "fallback_max_owed_bytes": BUDGET,
        "breaker": CircuitBreaker(
            "checkpoint", failure_threshold=3, recovery_timeout=1.0, clock=clock
        ),
        "metrics": Metrics(registry),
    }


def refused_metric(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("redis_fallback_refused_total", {"component": "checkpoint"})


def check_outage(saver: Any, recorder: Recorder, turns: int, errors: list[Exception]) -> None:
    """What the outage left: some turns accepted, then refusals naming the budget, within it."""
    assert turns >= 5  # the budget held several turns of the three conversations
    assert errors and recorder.refused >= len(errors)
    message = str(errors[0])
    assert f"fallback_max_owed_bytes={BUDGET}" in message and saver.url in message
    assert 0 < saver.memory.owed_bytes <= BUDGET
    assert saver.memory.refused_writes == recorder.refused


def test_sync_outage_past_the_budget(fresh_redis: RedisServer) -> None:
    clock, registry, recorder = Clock(), CollectorRegistry(), Recorder()
    with RedisSaver.from_conn_string(fresh_redis.url, **options(clock, registry)) as saver:
        recorder.wrap(saver, ("put", "put_writes"))
        graph = build().compile(checkpointer=saver)
        graph.invoke({"messages": [HumanMessage("before")]}, cfg("a"))
        fresh_redis.kill()

        turns, errors = 0, []
        for thread_id, text in texts():
            try:
                graph.invoke({"messages": [HumanMessage(text)]}, cfg(thread_id))
                turns += 1
            except RedisUnavailableError as exc:
                errors.append(exc)
                if len(errors) == 3:
                    break
        check_outage(saver, recorder, turns, errors)
        assert refused_metric(registry) == recorder.refused
        # reads are still answered, from what was accepted
        reference = recorder.replayed()
        for t in THREADS:
            assert tuples(list(saver.list(cfg(t)))) == tuples(list(reference.list(cfg(t))))
        assert history(saver, THREADS) == history(reference, THREADS)

        fresh_redis.restart()
        clock.now += 1.5  # past the breaker's recovery timeout
        assert saver.ping()  # written back
        assert saver.memory.owed_bytes == 0 and saver.memory.pending == 0
        assert stored(fresh_redis.url, THREADS) == history(recorder.replayed(), THREADS)

        # writes are accepted again, on Redis and in memory in a later outage, going on from
        # what was accepted (a turn refused half-way included) as InMemorySaver does
        reference_graph = build().compile(checkpointer=ours_versions(recorder.replayed()))
        for g in (graph, reference_graph):
            g.invoke({"messages": [HumanMessage("after")]}, cfg("a"))
        after = contents(graph.get_state(cfg("a")))
        assert after == contents(reference_graph.get_state(cfg("a"))) and "after" in after
        fresh_redis.kill()
        graph.invoke({"messages": [HumanMessage("second outage")]}, cfg("d"))
        assert saver.memory.owed_threads() == ["d"]
        fresh_redis.restart()
        clock.now += 1.5
        assert saver.ping()
    assert stored(fresh_redis.url, ["d"])["d"][0][1] == [
        "second outage",
        "reply #1 to second outage",
    ]


async def test_async_outage_past_the_budget(fresh_redis: RedisServer) -> None:
    clock, registry, recorder = Clock(), CollectorRegistry(), Recorder()
    async with AsyncRedisSaver.from_conn_string(
        fresh_redis.url, **options(clock, registry)
    ) as saver:
        recorder.wrap(saver, ("aput", "aput_writes"))
        graph = build().compile(checkpointer=saver)
        await graph.ainvoke({"messages": [HumanMessage("before")]}, cfg("a"))
        fresh_redis.kill()

        turns, errors = 0, []
        for thread_id, text in texts():
            try:
                await graph.ainvoke({"messages": [HumanMessage(text)]}, cfg(thread_id))
                turns += 1
            except RedisUnavailableError as exc:
                errors.append(exc)
                if len(errors) == 3:
                    break
        check_outage(saver, recorder, turns, errors)
        assert refused_metric(registry) == recorder.refused
        # reads are still answered, from what was accepted
        reference = recorder.replayed()
        for t in THREADS:
            ours = [tup async for tup in saver.alist(cfg(t))]
            assert tuples(ours) == tuples(list(reference.list(cfg(t))))

        fresh_redis.restart()
        clock.now += 1.5
        assert await saver.aping()
        assert saver.memory.owed_bytes == 0 and saver.memory.pending == 0
        assert stored(fresh_redis.url, THREADS) == history(recorder.replayed(), THREADS)

        reference_graph = build().compile(checkpointer=ours_versions(recorder.replayed()))
        await graph.ainvoke({"messages": [HumanMessage("after")]}, cfg("a"))
        reference_graph.invoke({"messages": [HumanMessage("after")]}, cfg("a"))
        after = contents(await graph.aget_state(cfg("a")))
        assert after == contents(reference_graph.get_state(cfg("a"))) and "after" in after
        fresh_redis.kill()
        await graph.ainvoke({"messages": [HumanMessage("second outage")]}, cfg("d"))
        assert saver.memory.owed_threads() == ["d"]
        fresh_redis.restart()
        clock.now += 1.5
        assert await saver.aping()
    assert stored(fresh_redis.url, ["d"])["d"][0][1] == [
        "second outage",
        "reply #1 to second outage",
    ]
