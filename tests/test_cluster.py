"""The saver on a real 3-node Redis Cluster: conformance, the sync API across nodes, a graph."""

from __future__ import annotations

import operator
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from itertools import pairwise
from typing import Annotated, Any, TypedDict

import pytest
import redis.cluster
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from redis_checkpoint import AsyncRedisSaver, RedisSaver
from redis_checkpoint.testing import RedisClusterServers

pytestmark = pytest.mark.cluster

# Thread ids that stress the hash tag: separators, braces, unicode and the empty string.
ODD_IDS = ["a:b", "{x}", "}{", "ünï", ""]
# What the conformance suite of langgraph-checkpoint-conformance 0.0.2 runs in all.
CONFORMANCE_TESTS = 81


def unique_prefix() -> str:
    # The cluster is shared by the whole session and never flushed.
    return f"test-cluster-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def saver(redis_cluster: RedisClusterServers) -> Iterator[RedisSaver]:
    with RedisSaver.from_conn_string(redis_cluster.url, key_prefix=unique_prefix()) as s:
        assert isinstance(s.client, redis.cluster.RedisCluster)
        yield s


@pytest.fixture
def inspector(redis_cluster: RedisClusterServers) -> Iterator[redis.cluster.RedisCluster]:
    # A separate client to look at what the saver stored.
    client = redis_cluster.client()
    try:
        yield client
    finally:
        client.close()


# -- conformance ------------------------------------------------------------------------------


async def test_conformance_suite_on_cluster(redis_cluster: RedisClusterServers) -> None:
    prefixes: list[str] = []

    @checkpointer_test(name=f"AsyncRedisSaver-cluster-{uuid.uuid4().hex[:8]}")
    async def factory() -> AsyncIterator[AsyncRedisSaver]:
        # A fresh prefix per capability suite: each expects an empty store (list(None) etc.).
        prefixes.append(unique_prefix())
        async with AsyncRedisSaver.from_conn_string(
            redis_cluster.url, key_prefix=prefixes[-1]
        ) as s:
            yield s

    report = await validate(factory)
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert failures == {}
    assert report.passed_all() and report.conformance_level() == "FULL"
    assert all(r.detected and r.passed is True for r in report.results.values())
    ran = sum(r.tests_passed + r.tests_failed for r in report.results.values())
    assert ran == CONFORMANCE_TESTS
    assert len(set(prefixes)) == len(report.results)


# -- the sync API with threads on every node --------------------------------------------------


def node_of(client: redis.cluster.RedisCluster, key: str) -> int:
    node = client.get_node_from_key(key)
    assert node is not None
    return int(node.port)


def spread_thread_ids(saver: RedisSaver, client: redis.cluster.RedisCluster) -> list[str]:
    """Deterministic thread ids whose keys land on each of the three primaries."""
    by_node: dict[int, str] = {}
    for i in range(200):
        thread_id = f"spread-{i}"
        by_node.setdefault(node_of(client, saver.core.layout.thread(thread_id).data), thread_id)
        if len(by_node) == 3:
            break
    assert len(by_node) == 3
    return sorted(by_node.values())


def put_chain(
    saver: RedisSaver,
    thread_id: str,
    count: int,
    ns: str = "",
    run_ids: Sequence[str] = (),
) -> list[RunnableConfig]:
    """``count`` checkpoints, each the child of the previous, with small, big and list values.

    ``run_ids``, when given, are the checkpoints' metadata run ids in turn.
    """
    config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
    version: str | None = None
    configs = []
    for step in range(count):
        version = saver.get_next_version(version, None)
        checkpoint: Checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6(clock_seq=step))
        checkpoint["channel_values"] = {
            "small": step,
            "big": f"{thread_id}|" * 40 + str(step),
            "items": [f"item-{i}" for i in range(step + 1)],
        }
        checkpoint["channel_versions"] = dict.fromkeys(checkpoint["channel_values"], version)
        metadata: CheckpointMetadata = {"source": "loop", "step": step, "parents": {}}
        if run_ids:
            metadata["run_id"] = run_ids[step % len(run_ids)]
        config = saver.put(config, checkpoint, metadata, dict(checkpoint["channel_versions"]))
        configs.append(config)
    return configs


def keys_by_node(
    client: redis.cluster.RedisCluster, prefix: str
) -> dict[str, set[tuple[int, int]]]:
    """Each thread's keys as (node port, slot) pairs, found by scanning every primary."""
    found: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for node in client.get_primaries():
        connection = client.get_redis_connection(node)
        for raw in connection.scan_iter(match=f"{prefix}:cp:{{*", count=500):
            key = raw.decode() if isinstance(raw, bytes) else raw
            thread = key[: key.rindex(":")]
            found[thread].add((int(node.port), client.keyslot(key)))
    return found


def thread_tuples(saver: RedisSaver, thread_id: str) -> list[Any]:
    return list(saver.list({"configurable": {"thread_id": thread_id}}))


def test_sync_api_across_nodes(saver: RedisSaver, inspector: redis.cluster.RedisCluster) -> None:
    spread = spread_thread_ids(saver, inspector)
    threads = spread + ODD_IDS
    nodes = {t: node_of(inspector, saver.core.layout.thread(t).data) for t in threads}
    assert len({nodes[t] for t in spread}) == 3

    latest: dict[str, RunnableConfig] = {}
    for thread_id in threads:
        configs = put_chain(saver, thread_id, 3)
        latest[thread_id] = configs[-1]
        saver.put_writes(configs[-1], [("items", "w0"), ("small", 7)], "task-b", "~b")
        saver.put_writes(configs[-1], [("items", "w1")], "task-a", "~a")

    for thread_id in threads:
        # One Lua call, hence one round trip, on whichever node holds the thread.
        before = saver.round_trips
        tup = saver.get_tuple({"configurable": {"thread_id": thread_id}})
        assert saver.round_trips - before == 1
        assert tup is not None
        assert tup.config == latest[thread_id]
        assert tup.checkpoint["channel_values"] == {
            "small": 2,
            "big": f"{thread_id}|" * 40 + "2",
            "items": ["item-0", "item-1", "item-2"],
        }
        # writes_sort_key order: task_path first.
        assert tup.pending_writes == [
            ("task-a", "items", "w1"),
            ("task-b", "items", "w0"),
            ("task-b", "small", 7),
        ]
        history = thread_tuples(saver, thread_id)
        assert [t.metadata["step"] for t in history] == [2, 1, 0]
        for newer, older in pairwise(history):
            assert newer.parent_config == older.config
        assert history[-1].parent_config is None
        limited = list(saver.list({"configurable": {"thread_id": thread_id}}, limit=1))
        assert [t.config for t in limited] == [latest[thread_id]]
        assert tup.config["configurable"]["thread_id"] == thread_id

    # list(None): every thread of this prefix, on all nodes, three checkpoints each.
    everything = list(saver.list(None))
    per_thread: dict[str, int] = defaultdict(int)
    for tup in everything:
        per_thread[tup.config["configurable"]["thread_id"]] += 1
    assert per_thread == dict.fromkeys(threads, 3)

    # A thread's keys share one slot, on the node the slot maps to.
    prefix = saver.core.layout.prefix
    stored = keys_by_node(inspector, prefix)
    assert len(stored) == len(threads)
    for thread_id in threads:
        keys = saver.core.layout.thread(thread_id)
        assert inspector.keyslot(keys.idx) == inspector.keyslot(keys.data)
        assert inspector.cluster_keyslot(keys.data) == inspector.keyslot(keys.data)
        base = keys.data[: keys.data.rindex(":")]
        assert stored[base] == {(nodes[thread_id], inspector.keyslot(keys.data))}
        assert inspector.exists(keys.idx, keys.data) == 2

    # copy_thread between nodes: every checkpoint and write, under the new id.
    source = spread[0]
    target = _on_other_node(saver, inspector, source, nodes)
    saver.copy_thread(source, target)
    copied = thread_tuples(saver, target)
    original = thread_tuples(saver, source)
    assert [t.checkpoint for t in copied] == [t.checkpoint for t in original]
    assert [t.pending_writes for t in copied] == [t.pending_writes for t in original]
    assert {t.config["configurable"]["thread_id"] for t in copied} == {target}
    assert target in {t.config["configurable"]["thread_id"] for t in saver.list(None)}

    # prune keep_latest: one checkpoint left per thread, with its writes and values.
    saver.prune(threads)
    for thread_id in threads:
        left = thread_tuples(saver, thread_id)
        assert [t.config for t in left] == [latest[thread_id]]
        assert len(left[0].pending_writes) == 3
        assert left[0].checkpoint["channel_values"]["items"] == ["item-0", "item-1", "item-2"]

    # delete_thread: the thread is gone from its node and from list(None); others stay.
    for thread_id in [*spread, ""]:
        saver.delete_thread(thread_id)
        assert saver.get_tuple({"configurable": {"thread_id": thread_id}}) is None
        keys = saver.core.layout.thread(thread_id)
        assert inspector.exists(keys.idx, keys.data) == 0
    remaining = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
    assert remaining == {*ODD_IDS[:-1], target}

    # prune "delete" drops the rest.
    saver.prune([*ODD_IDS, target], strategy="delete")
    assert list(saver.list(None)) == []
    assert keys_by_node(inspector, prefix) == {}


def _on_other_node(
    saver: RedisSaver,
    client: redis.cluster.RedisCluster,
    source: str,
    nodes: dict[str, int],
) -> str:
    """A fresh thread id whose keys live on another node than ``source``'s."""
    for i in range(200):
        candidate = f"copy-{i}-{uuid.uuid4().hex[:6]}"
        if node_of(client, saver.core.layout.thread(candidate).data) != nodes[source]:
            return candidate
    raise AssertionError("no thread id on another node")


def test_delete_for_runs_across_nodes(
    saver: RedisSaver, inspector: redis.cluster.RedisCluster
) -> None:
    # One call that spans threads on every node (a pipeline split per node by the client).
    spread = spread_thread_ids(saver, inspector)
    for thread_id in spread:
        put_chain(saver, thread_id, 4, run_ids=["run-keep", "run-drop"])
    put_chain(saver, "only-dropped", 2, run_ids=["run-drop"])
    saver.delete_for_runs(["run-drop"])
    for thread_id in spread:
        left = thread_tuples(saver, thread_id)
        assert [t.metadata["step"] for t in left] == [2, 0]
        assert {t.metadata["run_id"] for t in left} == {"run-keep"}
    assert saver.get_tuple({"configurable": {"thread_id": "only-dropped"}}) is None
    listed = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
    assert listed == set(spread)


def test_thread_ttl_across_nodes(
    redis_cluster: RedisClusterServers, inspector: redis.cluster.RedisCluster
) -> None:
    with RedisSaver.from_conn_string(
        redis_cluster.url, key_prefix=unique_prefix(), ttl=600
    ) as saver:
        spread = spread_thread_ids(saver, inspector)
        for thread_id in spread:
            put_chain(saver, thread_id, 1)
            keys = saver.core.layout.thread(thread_id)
            left = saver.thread_ttl(thread_id)
            assert left is not None and 500 < left <= 600
            # Both keys of the thread expire together.
            assert 500_000 < inspector.pttl(keys.idx) <= 600_000
            assert 500_000 < inspector.pttl(keys.data) <= 600_000
            saver.pin_thread(thread_id)
            assert saver.thread_ttl(thread_id) is None
            assert inspector.pttl(keys.idx) == inspector.pttl(keys.data) == -1
            # A write keeps the pin.
            put_chain(saver, thread_id, 2)
            assert saver.thread_ttl(thread_id) is None
            unpinned = saver.unpin_thread(thread_id)
            assert unpinned is not None and 500 < unpinned <= 600
            custom = saver.set_thread_ttl(thread_id, 30)
            assert custom is not None and 20 < custom <= 30
            assert 20_000 < inspector.pttl(keys.data) <= 30_000


def test_odd_thread_ids_stay_apart(saver: RedisSaver) -> None:
    # Ids that differ only in escaping-relevant characters must not share a thread.
    similar = ["a:b", "a%3Ab", "a_b", "%", "", "{x}", "%7Bx%7D", "}{", "ünï", "u\u0308nï"]
    for thread_id in similar:
        put_chain(saver, thread_id, 1)
    for thread_id in similar:
        tup = saver.get_tuple({"configurable": {"thread_id": thread_id}})
        assert tup is not None
        assert tup.config["configurable"]["thread_id"] == thread_id
        assert tup.checkpoint["channel_values"]["big"].startswith(f"{thread_id}|")
        assert len(thread_tuples(saver, thread_id)) == 1
    listed = sorted(t.config["configurable"]["thread_id"] for t in saver.list(None))
    assert listed == sorted(similar)


def test_namespaces_share_the_thread_slot(
    saver: RedisSaver, inspector: redis.cluster.RedisCluster
) -> None:
    thread_id = "ns-thread"
    put_chain(saver, thread_id, 2)
    put_chain(saver, thread_id, 2, ns="child:1")
    stored = keys_by_node(inspector, saver.core.layout.prefix)
    # Two namespaces, still two keys and one slot.
    assert len(stored) == 1
    assert len(next(iter(stored.values()))) == 1
    assert len(thread_tuples(saver, thread_id)) == 4
    child = list(saver.list({"configurable": {"thread_id": thread_id, "checkpoint_ns": "child:1"}}))
    assert [t.config["configurable"]["checkpoint_ns"] for t in child] == ["child:1"] * 2


def test_scripts_flushed_on_every_node_are_reloaded(
    redis_cluster: RedisClusterServers, saver: RedisSaver, inspector: redis.cluster.RedisCluster
) -> None:
    # As after a failover to a node that never saw SCRIPT LOAD: the saver reloads and retries.
    threads = spread_thread_ids(saver, inspector)
    for thread_id in threads:
        put_chain(saver, thread_id, 2)

    def flush_scripts() -> None:
        for node in redis_cluster.nodes:
            with node.client() as client:
                client.script_flush()

    flush_scripts()
    for thread_id in threads:
        tup = saver.get_tuple({"configurable": {"thread_id": thread_id}})
        assert tup is not None and tup.metadata["step"] == 1
    flush_scripts()
    # A new thread's first put also registers it: a pipeline over two slots.
    put_chain(saver, "after-flush", 2)
    assert len(list(saver.list(None))) == 2 * len(threads) + 2


async def test_async_saver_reloads_flushed_scripts(redis_cluster: RedisClusterServers) -> None:
    async with AsyncRedisSaver.from_conn_string(
        redis_cluster.url, key_prefix=unique_prefix()
    ) as asaver:
        config: RunnableConfig = {"configurable": {"thread_id": "a:{sync}", "checkpoint_ns": ""}}
        checkpoint = empty_checkpoint()
        version = asaver.get_next_version(None, None)
        checkpoint["channel_values"] = {"v": "x" * 100}
        checkpoint["channel_versions"] = {"v": version}
        for node in redis_cluster.nodes:
            with node.client() as client:
                client.script_flush()
        saved = await asaver.aput(config, checkpoint, {"step": 0}, {"v": version})
        await asaver.aput_writes(saved, [("v", "w")], "task")
        tup = await asaver.aget_tuple(saved)
        assert tup is not None
        assert tup.checkpoint["channel_values"] == {"v": "x" * 100}
        assert tup.pending_writes == [("task", "v", "w")]


# -- a graph conversation on the cluster ------------------------------------------------------


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    turns: Annotated[int, operator.add]


def reply(state: ChatState) -> dict[str, Any]:
    last = state["messages"][-1]
    return {
        "messages": [AIMessage(f"re: {last.content}", id=f"ai-{len(state['messages'])}")],
        "turns": 1,
    }


def conversation(checkpointer: Any, thread_id: str, turns: int) -> tuple[Any, list[Any]]:
    builder = StateGraph(ChatState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    graph = builder.compile(checkpointer=checkpointer)
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    for turn in range(turns):
        graph.invoke({"messages": [HumanMessage(f"turn {turn}", id=f"h-{turn}")]}, config)
    history = [
        (s.values, s.next, s.metadata["step"] if s.metadata else None)
        for s in graph.get_state_history(config)
    ]
    return graph.get_state(config).values, history


def test_graph_conversation_on_cluster(saver: RedisSaver) -> None:
    threads = ["conv:{1}", "conv-ünï", ""]
    for thread_id in threads:
        got = conversation(saver, thread_id, 4)
        expected = conversation(InMemorySaver(), thread_id, 4)
        assert got == expected
        assert got[0]["turns"] == 4
        assert [m.content for m in got[0]["messages"]][-2:] == ["turn 3", "re: turn 3"]
