"""The sync saver on a real redis-server: API, round trips, odd ids, TTLs, bad input, storage."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from redis.crc import key_slot

from redis_checkpoint import (
    AsyncRedisSaver,
    CorruptEntryError,
    MissingThreadIdError,
    RedisSaver,
    RedisUnavailableError,
)
from redis_checkpoint.checkpoint import codec, wire
from redis_checkpoint.checkpoint.known import KnownState, StoredList
from redis_checkpoint.checkpoint.memory import ThreadMemoryTier
from redis_checkpoint.checkpoint.wire import reopen_after
from redis_checkpoint.testing import RedisServer

ODD_THREAD_IDS = ["a:b", "{x}", "}{", "a{b}c:d", "ünïcödé ✓", "", "nul\x00byte", "\x01\x02"]
_prefixes = itertools.count()


@pytest.fixture
def saver(redis_server: RedisServer) -> Iterator[RedisSaver]:
    with RedisSaver.from_conn_string(redis_server.url, key_prefix=f"s{next(_prefixes)}") as s:
        yield s


def config(thread_id: str, ns: str = "", checkpoint_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def put(
    saver: Any,
    thread_id: str,
    values: dict[str, Any],
    parent: dict[str, Any] | None = None,
    ns: str = "",
    **metadata: Any,
) -> dict[str, Any]:
    """Put a checkpoint where ``values`` changed, carrying the parent's other channels along
    (as LangGraph does: a checkpoint holds every channel's value, new versions only for some)."""
    conf = config(thread_id, ns, parent["configurable"]["checkpoint_id"] if parent else None)
    previous = saver.get_tuple(parent) if parent else None
    versions = dict(previous.checkpoint["channel_versions"]) if previous else {}
    new = {ch: saver.get_next_version(versions.get(ch), None) for ch in values}
    versions.update(new)
    all_values = {**(previous.checkpoint["channel_values"] if previous else {}), **values}
    cp = generate_checkpoint(channel_values=all_values, channel_versions=versions)
    return saver.put(conf, cp, {"source": "loop", "step": 0, **metadata}, new)  # type: ignore[no-any-return]


def history(saver: Any, thread_id: str) -> list[CheckpointTuple]:
    return list(saver.list(config(thread_id)))


# -- the API -------------------------------------------------------------------------------------


def test_round_trip_of_values_metadata_parents_and_writes(saver: RedisSaver) -> None:
    first = put(saver, "t", {"messages": [HumanMessage("hi")], "n": 1}, user="ann")
    second = put(saver, "t", {"messages": [HumanMessage("hi"), AIMessage("yo")]}, first)
    saver.put_writes(second, [("n", 5), ("messages", [AIMessage("x")])], "task-b", "b")
    saver.put_writes(second, [("n", 6)], "task-a", "a")

    latest = saver.get_tuple(config("t"))
    assert latest is not None
    assert latest.config["configurable"]["checkpoint_id"] == second["configurable"]["checkpoint_id"]
    assert latest.parent_config == {"configurable": {**first["configurable"]}}
    assert latest.checkpoint["channel_values"] == {
        "messages": [HumanMessage("hi"), AIMessage("yo")],
        "n": 1,  # unchanged channel: read from the first checkpoint's version
    }
    # writes_sort_key order: task_path first, then task id, then index
    assert latest.pending_writes == [
        ("task-a", "n", 6),
        ("task-b", "n", 5),
        ("task-b", "messages", [AIMessage("x")]),
    ]
    by_id = saver.get_tuple(first)
    assert by_id is not None and by_id.metadata["user"] == "ann"
    assert by_id.checkpoint["channel_values"]["messages"] == [HumanMessage("hi")]


def test_normal_writes_are_idempotent_and_special_writes_overwrite(saver: RedisSaver) -> None:
    stored = put(saver, "w", {"a": 1})
    saver.put_writes(stored, [("a", "first")], "task")
    saver.put_writes(stored, [("a", "second")], "task")
    saver.put_writes(stored, [("__error__", "boom")], "task")
    saver.put_writes(stored, [("__error__", "boom again")], "task")
    tup = saver.get_tuple(stored)
    assert tup is not None
    assert sorted(tup.pending_writes or []) == [
        ("task", "__error__", "boom again"),
        ("task", "a", "first"),
    ]


def test_list_filters_before_limit_namespaces_and_all_threads(saver: RedisSaver) -> None:
    parent = None
    for step in range(6):
        parent = put(
            saver, "L", {"x": step}, parent, step=step, kind="even" if step % 2 == 0 else "odd"
        )
    put(saver, "L", {"x": "child"}, None, ns="sub:1", kind="even")
    put(saver, "other", {"x": 0}, kind="even")

    newest_first = [t.checkpoint["channel_values"]["x"] for t in saver.list(config("L", ""))]
    assert newest_first == [5, 4, 3, 2, 1, 0]
    both_ns = list(saver.list({"configurable": {"thread_id": "L"}}))
    assert len(both_ns) == 7
    evens = list(saver.list(config("L", ""), filter={"kind": "even", "step": 2}))
    assert [t.metadata["step"] for t in evens] == [2]
    assert [t.metadata["step"] for t in saver.list(config("L", ""), filter={"step": True})] == [1]
    cut = newest_first_ids = [
        t.config["configurable"]["checkpoint_id"] for t in saver.list(config("L", ""))
    ]
    before = list(saver.list(config("L", ""), before=config("L", "", cut[1]), limit=2))
    assert [t.config["configurable"]["checkpoint_id"] for t in before] == newest_first_ids[2:4]
    everything = list(saver.list(None))
    assert {t.config["configurable"]["thread_id"] for t in everything} == {"L", "other"}
    assert len(everything) == 8
    assert len(list(saver.list(None, filter={"kind": "even"}, limit=3))) == 3
    assert list(saver.list(config("L", ""), filter={"kind": "none"})) == []


def test_odd_thread_ids_and_namespaces_stay_apart(
    saver: RedisSaver, redis_client: redis.Redis
) -> None:
    for thread_id in ODD_THREAD_IDS:
        put(saver, thread_id, {"who": thread_id}, ns="ns:{1}\x00ü")
    for thread_id in ODD_THREAD_IDS:
        tup = saver.get_tuple(config(thread_id, "ns:{1}\x00ü"))
        assert tup is not None, thread_id
        assert tup.checkpoint["channel_values"] == {"who": thread_id}
        assert tup.config["configurable"]["thread_id"] == thread_id
        keys = saver.core.keys(thread_id)
        assert redis_client.exists(keys.idx, keys.data) == 2
        # both keys of a thread hash to one cluster slot
        assert key_slot(keys.idx.encode()) == key_slot(keys.data.encode())
    listed = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
    assert listed == set(ODD_THREAD_IDS)


def test_delete_copy_and_prune(saver: RedisSaver) -> None:
    a = put(saver, "src", {"m": [1, 2]})
    b = put(saver, "src", {"m": [1, 2, 3]}, a)
    saver.put_writes(b, [("m", 4)], "t1")
    saver.copy_thread("src", "dst")
    assert [t.checkpoint for t in history(saver, "dst")] == [
        t.checkpoint for t in history(saver, "src")
    ]
    saver.prune(["src"], strategy="keep_latest")
    kept = history(saver, "src")
    assert len(kept) == 1 and kept[0].checkpoint["channel_values"] == {"m": [1, 2, 3]}
    assert kept[0].pending_writes == [("t1", "m", 4)]
    saver.delete_thread("src")
    assert history(saver, "src") == []
    assert len(history(saver, "dst")) == 2
    saver.prune(["dst"], strategy="delete")
    assert history(saver, "dst") == []
    assert {t.config["configurable"]["thread_id"] for t in saver.list(None)} == set()


def test_delta_channel_history_matches_in_memory_saver(saver: RedisSaver) -> None:
    reference = InMemorySaver()
    configs: dict[int, Any] = {}
    for s in (saver, reference):
        parent = None
        for step in range(5):
            values = {"seed": "snapshot"} if step == 1 else {"other": step}
            parent = put(s, "h", values, parent, step=step)
            s.put_writes(parent, [("seed", f"d{step}"), ("other", step)], f"task{step}", f"p{step}")
        configs[id(s)] = parent
    ours = saver.get_delta_channel_history(config=configs[id(saver)], channels=["seed", "other"])
    theirs = reference.get_delta_channel_history(
        config=configs[id(reference)], channels=["seed", "other"]
    )
    assert ours == theirs
    assert ours["seed"]["seed"] == "snapshot"
    rt = saver.round_trips
    saver.get_delta_channel_history(config=configs[id(saver)], channels=["seed"])
    assert saver.round_trips - rt == 1  # the whole ancestor walk is one script call


# -- round trips ---------------------------------------------------------------------------------


def test_one_round_trip_per_operation(saver: RedisSaver) -> None:
    parent = None
    for step in range(60):
        parent = put(
            saver, "rt", {"messages": [HumanMessage(str(i)) for i in range(step + 1)]}, parent
        )
    assert parent is not None
    checkpoint = saver.get_tuple(parent)
    assert checkpoint is not None

    def count(fn: Any) -> int:
        before = saver.round_trips
        fn()
        return saver.round_trips - before

    new_cp = {**checkpoint.checkpoint, "id": str(uuid.uuid4())}
    assert count(lambda: saver.put(parent, new_cp, {"step": 1}, {})) == 1
    assert count(lambda: saver.put_writes(parent, [("a", 1), ("b", 2)], "task")) == 1
    assert count(lambda: saver.get_tuple(config("rt"))) == 1
    assert count(lambda: saver.get_tuple(parent)) == 1
    assert count(lambda: list(saver.list(config("rt"), limit=50))) == 1
    assert count(lambda: list(saver.list(config("rt", ""), limit=50, filter={"step": 0}))) == 1


# -- TTLs ----------------------------------------------------------------------------------------


def test_ttl_expires_every_key_of_a_thread_together(redis_server: RedisServer) -> None:
    client = redis_server.client()
    with RedisSaver.from_conn_string(redis_server.url, key_prefix="ttl1", ttl=0.4) as saver:
        stored = put(saver, "t", {"m": [1, 2, 3], "n": "x" * 100})
        saver.put_writes(stored, [("m", 1)], "task")
        keys = saver.core.keys("t")
        ttls = [client.pttl(keys.idx), client.pttl(keys.data)]
        assert all(0 < t <= 400 for t in ttls), ttls
        assert abs(ttls[0] - ttls[1]) < 50
        assert 0 < (saver.thread_ttl("t") or 0) <= 0.4
        time.sleep(0.6)
        assert saver.get_tuple(config("t")) is None
        assert client.exists(keys.idx, keys.data) == 0
        assert list(saver.list(None)) == []  # the registry forgets expired threads too
        assert client.zcard(saver.core.layout.registry) == 0


def test_refresh_on_read_and_pinning(redis_server: RedisServer) -> None:
    with RedisSaver.from_conn_string(
        redis_server.url, key_prefix="ttl2", ttl=0.5, refresh_on_read=True
    ) as saver:
        put(saver, "r", {"a": 1})
        put(saver, "p", {"a": 1})
        saver.pin_thread("p")
        assert saver.thread_ttl("p") is None
        for _ in range(4):  # 0.8 s in all, kept alive by reads
            time.sleep(0.2)
            assert saver.get_tuple(config("r")) is not None
        latest = saver.get_tuple(config("p"))
        assert latest is not None
        put(saver, "p", {"a": 2}, latest.config)
        assert saver.thread_ttl("p") is None  # a write keeps the pin
        time.sleep(0.6)
        assert saver.get_tuple(config("r")) is None
        assert saver.get_tuple(config("p")) is not None
        left = saver.unpin_thread("p")
        assert left is not None and 0 < left <= 0.5
        assert saver.set_thread_ttl("p", 30) == pytest.approx(30, abs=0.5)
        with pytest.raises(KeyError):
            saver.pin_thread("never-written")


def test_evicting_memory_policy_is_warned_about(redis_server_bin: str) -> None:
    with (
        RedisServer(binary=redis_server_bin, args=["--maxmemory-policy", "allkeys-lru"]) as server,
        pytest.warns(RuntimeWarning, match="allkeys-lru"),
        RedisSaver.from_conn_string(server.url),
    ):
        pass


# -- bad input -----------------------------------------------------------------------------------


def test_config_without_thread_id_fails_like_in_memory_saver(saver: RedisSaver) -> None:
    with pytest.raises(KeyError) as ours:
        saver.get_tuple({"configurable": {}})
    with pytest.raises(KeyError) as theirs:
        InMemorySaver().get_tuple({"configurable": {}})
    assert ours.value.args == theirs.value.args == ("thread_id",)
    assert isinstance(ours.value, MissingThreadIdError)
    assert "thread_id" in str(ours.value) and "configurable" in str(ours.value)
    with pytest.raises(KeyError):
        saver.put({"configurable": {}}, generate_checkpoint(), {}, {})


def test_unreachable_url_names_it_without_password() -> None:
    with (
        pytest.raises(RedisUnavailableError) as err,
        RedisSaver.from_conn_string("redis://user:s3cret@127.0.0.1:1/0"),
    ):
        pass
    assert "127.0.0.1:1" in str(err.value)
    assert "s3cret" not in str(err.value)


def test_corrupt_records_and_blobs_raise_naming_the_key(
    saver: RedisSaver, redis_client: redis.Redis
) -> None:
    stored = put(saver, "bad", {"m": ["x" * 100, "y"]})
    keys = saver.core.keys("bad")
    fields = redis_client.hkeys(keys.data)
    record = next(f for f in fields if f.startswith(b"c\x00"))
    blob = next(f for f in fields if f.startswith(b"b\x00"))
    redis_client.hset(keys.data, blob, b"Lgarbage")
    # a reader that has not seen the list yet (this saver remembers what it wrote)
    reader = RedisSaver(saver.client, url=saver.url, key_prefix=saver.core.layout.prefix)
    with pytest.raises(CorruptEntryError) as err:
        reader.get_tuple(stored)
    assert keys.data in str(err.value)
    redis_client.hset(keys.data, record, b"\xc1 not msgpack")
    with pytest.raises(CorruptEntryError) as err:
        saver.get_tuple(config("bad"))
    assert keys.data in str(err.value) and "record" in str(err.value)
    # The field name, NUL bytes and all, escaped: an error reply would end at its first NUL.
    shown = "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02x}" for b in record)
    assert shown in str(err.value) and "\\x00" in shown
    with pytest.raises(CorruptEntryError):
        list(saver.list(config("bad")))


def test_a_key_of_another_type_is_a_corrupt_entry_that_delete_thread_removes(
    saver: RedisSaver, redis_client: redis.Redis
) -> None:
    put(saver, "typo", {"m": "x"})
    keys = saver.core.keys("typo")
    redis_client.delete(keys.idx)
    redis_client.set(keys.idx, "written by something else")
    with pytest.raises(CorruptEntryError) as err:
        saver.get_tuple(config("typo"))
    assert "WRONGTYPE" in str(err.value) and keys.idx in str(err.value)
    assert "script" not in str(err.value)  # no script sha or line number
    saver.delete_thread("typo")
    assert redis_client.exists(keys.idx, keys.data) == 0


def test_encrypted_serializer_plugs_in(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    serde = EncryptedSerializer.from_pycryptodome_aes(key=b"0123456789abcdef")
    with RedisSaver.from_conn_string(redis_server.url, key_prefix="enc", serde=serde) as saver:
        secret = "the launch code is 12345"
        first = put(saver, "e", {"messages": [HumanMessage(secret)], "note": secret})
        second = put(saver, "e", {"messages": [HumanMessage(secret), AIMessage("ok")]}, first)
        saver.put_writes(second, [("note", secret)], "task")
        tup = saver.get_tuple(config("e"))
        assert tup is not None
        assert tup.checkpoint["channel_values"]["messages"] == [
            HumanMessage(secret),
            AIMessage("ok"),
        ]
        assert tup.pending_writes == [("task", "note", secret)]
        stored = b"".join(redis_client.hvals(saver.core.keys("e").data))
        assert secret.encode() not in stored
    with (
        RedisSaver.from_conn_string(redis_server.url, key_prefix="enc") as plain,
        pytest.raises(CorruptEntryError),
    ):
        plain.get_tuple(config("e"))


# -- storage growth --------------------------------------------------------------------------------


def test_a_growing_message_list_is_stored_as_deltas(
    saver: RedisSaver, redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    messages: list[Any] = []
    parent = None
    sizes = []
    keys = saver.core.keys("grow")
    for turn in range(60):
        messages = [
            *messages,
            HumanMessage(f"question {turn} " * 10),
            AIMessage(f"answer {turn} " * 40),
        ]
        parent = put(saver, "grow", {"messages": messages}, parent)
        sizes.append(redis_client.memory_usage(keys.data, samples=0) or 0)
    early = (sizes[19] - sizes[9]) / 10
    late = (sizes[59] - sizes[49]) / 10
    assert late < early * 1.3, (early, late)  # flat: turn 55 costs about what turn 15 did
    tup = saver.get_tuple(config("grow"))
    assert tup is not None and tup.checkpoint["channel_values"]["messages"] == messages
    # a fresh process (empty list cache) still reads the chain, and writes a full copy once
    with RedisSaver.from_conn_string(
        redis_server.url, key_prefix=saver.core.layout.prefix
    ) as other:
        fresh = other.get_tuple(config("grow"))
        assert fresh is not None and fresh.checkpoint["channel_values"]["messages"] == messages
    older = list(saver.list(config("grow")))[30]
    assert older.checkpoint["channel_values"]["messages"] == messages[: 2 * 30]


def test_a_list_whose_base_was_pruned_elsewhere_is_written_whole(saver: RedisSaver) -> None:
    first = put(saver, "p2", {"m": list(range(10))})
    second = put(saver, "p2", {"m": list(range(12))}, first)
    # another process deletes the thread; this process still remembers list version two
    other = RedisSaver(saver.client, url=saver.url, key_prefix=saver.core.layout.prefix)
    other.delete_thread("p2")
    version = saver.get_next_version("000000000002.0", None)
    checkpoint = generate_checkpoint(
        channel_values={"m": list(range(14))}, channel_versions={"m": version}
    )
    rt = saver.round_trips
    third = saver.put(second, checkpoint, {"step": 3}, {"m": version})
    # the refusal, the whole list, and registering the re-created thread for list(None)
    assert saver.round_trips - rt == 3
    tup = saver.get_tuple(third)
    assert tup is not None and tup.checkpoint["channel_values"]["m"] == list(range(14))
    assert [t.config["configurable"]["thread_id"] for t in other.list(None)] == ["p2"]


def test_an_interrupted_round_trip_releases_the_callers_waiting_on_it(saver: RedisSaver) -> None:
    import threading

    real = saver._round_trip
    follower_queued = threading.Event()

    def interrupted(queue: Any, request: Any) -> Any:
        if not follower_queued.is_set():
            while not queue.waiting:  # wait until the other thread rides on this round trip
                time.sleep(0.001)
            follower_queued.set()
            raise KeyboardInterrupt
        return real(queue, request)

    saver._round_trip = interrupted  # type: ignore[method-assign]
    seen: list[BaseException] = []

    def follower() -> None:
        time.sleep(0.01)
        try:
            saver.get_tuple(config("other"))
        except BaseException as exc:
            seen.append(exc)

    other = threading.Thread(target=follower)
    other.start()
    with pytest.raises(KeyboardInterrupt):
        saver.get_tuple(config("leader"))
    other.join(5)
    assert not other.is_alive()
    assert len(seen) == 1 and "interrupted" in str(seen[0])
    saver._round_trip = real  # type: ignore[method-assign]
    assert saver.get_tuple(config("after")) is None  # nothing stuck: the next call goes through


def test_a_long_history_reads_back_whole_in_a_fresh_process(
    saver: RedisSaver, redis_server: RedisServer
) -> None:
    parent = None
    items: list[str] = []
    version = None
    conf = config("long")
    for i in range(1500):  # a chain of 1500 list deltas
        items = [*items, f"message {i}"]
        version = saver.get_next_version(version, None)
        checkpoint = generate_checkpoint(
            channel_values={"m": items}, channel_versions={"m": version}
        )
        parent = saver.put(parent or conf, checkpoint, {"step": i}, {"m": version})
    with RedisSaver.from_conn_string(
        redis_server.url, key_prefix=saver.core.layout.prefix
    ) as fresh:
        before = fresh.round_trips
        latest = fresh.get_tuple(conf)
        assert fresh.round_trips - before == 1
        assert latest is not None and latest.checkpoint["channel_values"]["m"] == items
        page = list(fresh.list(conf, limit=100))
        assert [len(t.checkpoint["channel_values"]["m"]) for t in page] == list(
            range(1500, 1400, -1)
        )
        fresh.prune(["long"], strategy="keep_latest")
        kept = fresh.get_tuple(conf)
        assert kept is not None and kept.checkpoint["channel_values"]["m"] == items


def test_data_in_earlier_formats_reads_and_takes_new_writes(saver: RedisSaver) -> None:
    """A format-3 record and a one-map writes field, as earlier versions wrote them."""
    serde, keys = saver.serde, saver.core.keys("legacy")
    cid, token, turn_token = "1f0-legacy", b"sc1.ab", b"sc2.cd"
    human = [HumanMessage("hi", id="h1")]
    stored = {"v": 4, "ts": "2026-01-01T00:00:00+00:00", "versions_seen": {}}
    kind, body = serde.dumps_typed(stored)
    hidden = [turn_token, codec.encode_value(serde.dumps_typed(7))]
    record = codec.pack(
        [
            3,
            None,
            codec.RAW,
            codec.pack([kind.encode(), body, hidden]),
            codec.FILTERS_ARE_METADATA,
            b"",
            [b"messages", token, b"", b"turn", b"", b"I"],
            {b"source": b'"loop"', b"step": b"1"},
        ]
    )
    typed = serde.dumps_typed(human)
    row = codec.pack([b"messages", typed[0].encode(), typed[1], b"p1", codec.RAW])
    legacy_writes = codec.pack({b"task-1\x000": row})
    client = saver.client
    client.zadd(keys.idx, {b"c\x00\x00" + cid.encode(): 0})
    client.hset(
        keys.data,
        mapping={
            b"c\x00\x00" + cid.encode(): record,
            b"b\x00\x00messages\x00" + token: codec.encode_value(typed),
            b"w\x00\x00" + cid.encode(): legacy_writes,
        },
    )
    got = saver.get_tuple(config("legacy"))
    assert got is not None
    assert got.checkpoint["channel_values"] == {"messages": human, "turn": 7}
    assert got.checkpoint["channel_versions"] == {"messages": "c1.ab", "turn": "c2.cd"}
    assert got.metadata == {"source": "loop", "step": 1}
    assert got.pending_writes == [("task-1", "messages", human)]

    # A new write appends a frame; the old map is kept as the first frame and both read back.
    saver.put_writes(got.config, [("turn", 8), ("messages", [])], "task-2", "p0")
    saver.put_writes(got.config, [("turn", 9)], "task-2", "p0")  # index 0 again: first one stays
    field = client.hget(keys.data, b"w\x00\x00" + cid.encode())
    assert field is not None and field[:1] == b"M"
    again = saver.get_tuple(config("legacy"))
    assert again is not None
    assert again.pending_writes == [
        ("task-2", "turn", 8),
        ("task-2", "messages", []),
        ("task-1", "messages", human),
    ]
    assert [t.checkpoint["id"] for t in saver.list(config("legacy"))] == [cid]

    # The memory tier's twin of the script turns the same old map into the same bytes.
    tier = ThreadMemoryTier()
    tier._thread("legacy", (keys.idx, keys.data), create=True).hset(  # type: ignore[union-attr]
        b"w\x00\x00" + cid.encode(), legacy_writes
    )
    for writes in ([("turn", 8), ("messages", [])], [("turn", 9)]):
        tier.execute(next(saver.core.put_writes(got.config, writes, "task-2", "p0")), outage=False)
    assert tier._threads["legacy"].data[b"w\x00\x00" + cid.encode()] == field


def _chat_graph(saver: RedisSaver) -> Any:
    from langgraph.graph import START, MessagesState, StateGraph

    def reply(state: MessagesState) -> dict[str, Any]:
        n = len(state["messages"])
        return {"messages": [AIMessage(f"answer {n} " * 20, id=f"a{n}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    return builder.compile(checkpointer=saver)


def _converse(saver: RedisSaver, thread_id: str, turns: int, words: int = 1) -> tuple[Any, Any]:
    """``turns`` turns of the chat graph on a thread: (the graph, the thread's config)."""
    graph = _chat_graph(saver)
    conf = config(thread_id)
    for turn in range(turns):
        text = f"question {turn} " * words
        graph.invoke({"messages": [HumanMessage(text, id=f"h{turn}")]}, conf)
    return graph, conf


def _blob_kinds(client: redis.Redis, data_key: str) -> dict[bytes, bytes]:
    return {
        name: value[:1]
        for name, value in client.hgetall(data_key).items()
        if name.startswith(b"b\x00\x00messages\x00")
    }


def test_a_list_refers_to_the_writes_that_added_its_items(
    saver: RedisSaver, redis_server: RedisServer
) -> None:
    graph, conf = _converse(saver, "refs", 6, words=10)
    keys = saver.core.keys("refs")
    kinds = _blob_kinds(saver.client, keys.data)
    # Each turn adds the HumanMessage (the input's write) and the AIMessage (reply's write): every
    # version only refers to the pending writes that hold those items, whichever of put and
    # put_writes (called from different threads by LangGraph) reached Redis first.
    assert list(kinds.values()) == [b"R"] * 12
    assert not [f for f in saver.client.hkeys(keys.data) if f.startswith(b"r")]
    expected = graph.get_state(conf).values["messages"]
    assert len(expected) == 12
    with RedisSaver.from_conn_string(
        redis_server.url, key_prefix=saver.core.layout.prefix
    ) as other:
        fresh = _chat_graph(other)
        assert fresh.get_state(conf).values["messages"] == expected
        history = [s.values.get("messages", []) for s in fresh.get_state_history(conf)]
        assert [len(m) for m in history] == [
            12,
            11,
            10,
            10,
            9,
            8,
            8,
            7,
            6,
            6,
            5,
            4,
            4,
            3,
            2,
            2,
            1,
            0,
        ]
        assert all(m == expected[: len(m)] for m in history)

    # Pruning keeps the writes a kept list refers to, and drops the rest.
    saver.prune(["refs"], strategy="keep_latest")
    fields = saver.client.hkeys(keys.data)
    writes_left = {f for f in fields if f.startswith(b"w\x00")}
    referred = {
        codec.list_ref(blob)[0]
        for name, blob in saver.client.hgetall(keys.data).items()
        if name.startswith(b"b\x00") and blob[:1] == b"R"
    }
    assert writes_left == referred and len(referred) >= 11
    with RedisSaver.from_conn_string(
        redis_server.url, key_prefix=saver.core.layout.prefix
    ) as other:
        latest = other.get_tuple(conf)
        assert latest is not None
        assert latest.checkpoint["channel_values"]["messages"] == expected
        assert len(list(other.list(conf))) == 1


def _after_one_turn(saver: RedisSaver, thread_id: str) -> CheckpointTuple:
    _, conf = _converse(saver, thread_id, 1)
    latest = saver.get_tuple(conf)
    assert latest is not None
    return latest


def _child(saver: RedisSaver, parent: CheckpointTuple, new: list[Any]) -> tuple[Any, str, Any]:
    """The next checkpoint after ``parent`` with ``new`` appended to its messages."""
    checkpoint = dict(parent.checkpoint)
    version = saver.get_next_version(checkpoint["channel_versions"]["messages"], None)
    messages = [*checkpoint["channel_values"]["messages"], *new]
    child = {
        **checkpoint,
        "id": str(uuid.uuid4()),
        "channel_values": {**checkpoint["channel_values"], "messages": messages},
        "channel_versions": {**checkpoint["channel_versions"], "messages": version},
    }
    return child, version, messages


def test_a_reference_made_before_its_list_arrives_waits_for_the_put(saver: RedisSaver) -> None:
    parent = _after_one_turn(saver, "early")
    reply = [AIMessage("two " * 50, id="a2")]
    child, version, messages = _child(saver, parent, reply)
    # The put is planned first (so it stores the items) but reaches Redis after the writes.
    put_op = saver.core.put(
        parent.config, child, {"source": "loop", "step": 9}, {"messages": version}
    )  # type: ignore[arg-type]
    put_call = next(put_op)
    saver.put_writes(parent.config, [("messages", reply)], "task-a")
    keys = saver.core.keys("early")
    assert [f for f in saver.client.hkeys(keys.data) if f.startswith(b"r")]  # waiting
    with pytest.raises(StopIteration):
        put_op.send(saver._send_all([(put_call, saver._router.default)])[0])
    blob = saver.client.hget(keys.data, b"b\x00\x00messages\x00s" + version.encode())
    assert blob is not None and blob[:1] == b"R"
    assert not [f for f in saver.client.hkeys(keys.data) if f.startswith(b"r")]
    back = saver.get_tuple(config("early", checkpoint_id=child["id"]))
    assert back is not None and back.checkpoint["channel_values"]["messages"] == messages


@pytest.mark.parametrize("writes_first", [True, False])
def test_whichever_of_put_and_put_writes_comes_second_stores_a_reference(
    saver: RedisSaver, writes_first: bool
) -> None:
    parent = _after_one_turn(saver, f"order-{writes_first}")
    reply = [AIMessage("two " * 50, id="a2")]
    child, version, messages = _child(saver, parent, reply)
    meta = {"source": "loop", "step": 9}
    rt = saver.round_trips
    if writes_first:
        saver.put_writes(parent.config, [("messages", reply)], "task-a")
        new = saver.put(parent.config, child, meta, {"messages": version})  # type: ignore[arg-type]
    else:
        new = saver.put(parent.config, child, meta, {"messages": version})  # type: ignore[arg-type]
        saver.put_writes(parent.config, [("messages", reply)], "task-a")
    assert saver.round_trips - rt == 2
    keys = saver.core.keys(f"order-{writes_first}")
    blob = saver.client.hget(keys.data, b"b\x00\x00messages\x00s" + version.encode())
    assert blob is not None and blob[:1] == b"R"
    back = saver.get_tuple(new)
    assert back is not None and back.checkpoint["channel_values"]["messages"] == messages
    assert back.parent_config == parent.config


def test_a_list_whose_referred_writes_are_gone_stores_its_items(saver: RedisSaver) -> None:
    parent = _after_one_turn(saver, "refs-gone")
    keys = saver.core.keys("refs-gone")
    reply = [AIMessage("two", id="a2")]
    saver.put_writes(parent.config, [("messages", reply)], "task-x")
    # The field vanishes before the put that refers to it (another process pruned, say).
    saver.client.hdel(keys.data, b"w\x00\x00" + parent.checkpoint["id"].encode())
    child, version, messages = _child(saver, parent, reply)
    rt = saver.round_trips
    new = saver.put(parent.config, child, {"source": "loop", "step": 9}, {"messages": version})  # type: ignore[arg-type]
    assert saver.round_trips - rt == 1  # the script stores the items it was given as well
    blob = saver.client.hget(keys.data, b"b\x00\x00messages\x00s" + version.encode())
    assert blob is not None and blob[:1] == b"L"
    back = saver.get_tuple(new)
    assert back is not None and back.checkpoint["channel_values"]["messages"] == messages


def _depths(client: redis.Redis, data_key: str, members: list[bytes]) -> list[int]:
    out = []
    for member in members:
        raw = client.hget(data_key, member)
        assert raw is not None
        out.append(codec.record_depth(codec.unpack(raw)))
    return out


def test_records_are_compressed_against_a_recent_ancestor_and_survive_pruning(
    saver: RedisSaver, redis_server: RedisServer
) -> None:
    graph, conf = _converse(saver, "keyed", 4)
    keys = saver.core.keys("keyed")
    members = saver.client.zrange(keys.idx, 0, -1)
    # Each record is compressed against the record at most three parents up (depth 0: alone).
    assert _depths(saver.client, keys.data, members) == [0, 1, 2, 3] * 3
    expected = [(s.config, s.values) for s in graph.get_state_history(conf)]
    with RedisSaver.from_conn_string(
        redis_server.url, key_prefix=saver.core.layout.prefix
    ) as other:
        fresh = _chat_graph(other)
        assert [(s.config, s.values) for s in fresh.get_state_history(conf)] == expected

    # keep_latest leaves the latest checkpoint; the records it was compressed against stay in
    # the hash, out of the index: not listed, not found by id, and gone with it later.
    latest = saver.get_tuple(conf)
    assert latest is not None
    saver.prune(["keyed"], strategy="keep_latest")
    assert saver.client.zrange(keys.idx, 0, -1) == [members[-1]]
    ghosts = [m for m in saver.client.hkeys(keys.data) if m.startswith(b"c\x00")]
    assert sorted(ghosts) == sorted(members[-4:])
    pruned_id = members[-2].split(b"\x00")[-1].decode()
    assert saver.get_tuple(config("keyed", checkpoint_id=pruned_id)) is None
    assert [t.config for t in saver.list(conf)] == [latest.config]
    with RedisSaver.from_conn_string(
        redis_server.url, key_prefix=saver.core.layout.prefix
    ) as other:
        again = other.get_tuple(conf)
        assert again is not None and again.checkpoint == latest.checkpoint

    # The next turn starts over from a record stored whole (prune forgot the thread's cache).
    graph.invoke({"messages": [HumanMessage("after", id="h9")]}, conf)
    members = saver.client.zrange(keys.idx, 0, -1)
    assert _depths(saver.client, keys.data, members) == [3, 0, 1, 2]


def test_deleting_the_run_that_holds_a_keyframe_keeps_later_runs_readable(
    saver: RedisSaver,
) -> None:
    graph = _chat_graph(saver)
    conf = config("runs")
    for run in ("run-1", "run-2"):
        graph.invoke(
            {"messages": [HumanMessage(run, id=run)]}, {**conf, "metadata": {"run_id": run}}
        )
    keys = saver.core.keys("runs")
    members = saver.client.zrange(keys.idx, 0, -1)
    runs = [t.metadata["run_id"] for t in reversed(list(saver.list(conf)))]
    assert runs == ["run-1"] * 3 + ["run-2"] * 3
    # run-2's first records are compressed against run-1's first: depth runs across the runs.
    assert _depths(saver.client, keys.data, members) == [0, 1, 2, 3, 0, 1]
    expected = saver.get_tuple(conf)
    saver.delete_for_runs(["run-1"])
    left = list(saver.list(conf))
    assert [t.metadata["run_id"] for t in left] == ["run-2"] * 3
    assert left[0] == expected


def test_a_keyed_record_whose_keyframe_is_gone_is_a_corrupt_entry_naming_the_key(
    saver: RedisSaver,
) -> None:
    graph = _chat_graph(saver)
    conf = config("kf-gone")
    graph.invoke({"messages": [HumanMessage("one", id="h1")]}, conf)
    keys = saver.core.keys("kf-gone")
    members = saver.client.zrange(keys.idx, 0, -1)
    assert _depths(saver.client, keys.data, members)[-1] > 0
    saver.client.hdel(keys.data, members[0])  # the keyframe of the others
    with pytest.raises(CorruptEntryError, match=re.escape(keys.data)):
        saver.get_tuple(conf)


def test_a_dropped_connection_is_reopened_without_falling_back(
    saver: RedisSaver, redis_client: redis.Redis
) -> None:
    first = put(saver, "drop", {"v": "a" * 100})
    # The saver keeps one connection for its round trips: close it from the server's side.
    killed = redis_client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    before = saver._router.fallback_calls
    second = put(saver, "drop", {"v": "b" * 100}, first)
    assert saver._router.fallback_calls == before and not saver.serving_from_memory
    got = saver.get_tuple(second)
    assert got is not None and got.checkpoint["channel_values"]["v"] == "b" * 100


async def test_both_savers_reload_their_scripts_after_a_script_flush(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with RedisSaver.from_conn_string(redis_server.url, key_prefix="flush") as saver:
        first = put(saver, "flush", {"v": "a"})
        redis_client.script_flush()
        second = put(saver, "flush", {"v": "b"}, first)
        got = saver.get_tuple(second)
        assert got is not None and got.checkpoint["channel_values"]["v"] == "b"
    async with AsyncRedisSaver.from_conn_string(redis_server.url, key_prefix="aflush") as asaver:
        redis_client.script_flush()
        got = await asaver.aget_tuple(second)  # another prefix: nothing there, but no error
        assert got is None and not asaver.serving_from_memory


def test_a_channel_unchanged_since_the_parent_this_process_wrote_is_not_serialized_again(
    redis_server: RedisServer,
) -> None:
    seen: list[Any] = []

    class Counting(JsonPlusSerializer):
        def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
            seen.append(obj)
            return super().dumps_typed(obj)

    with RedisSaver.from_conn_string(
        redis_server.url, key_prefix="reuse", serde=Counting()
    ) as saver:
        first = put(saver, "reuse", {"topic": "billing", "step": 1})
        seen.clear()
        second = put(saver, "reuse", {"step": 2}, first)
        assert "billing" not in seen and 2 in seen
        got = saver.get_tuple(second)
        assert got is not None
        assert got.checkpoint["channel_values"] == {"topic": "billing", "step": 2}
        # A fork from an older checkpoint is not the last one written: serialized afresh.
        seen.clear()
        put(saver, "reuse", {"step": 3}, first)
        assert "billing" in seen


def test_a_held_connection_is_reopened_once_after_a_close_never_after_a_timeout() -> None:
    closed = redis.ConnectionError("Connection closed by server.")
    assert reopen_after(closed, attempt=0, reused=True)
    assert not reopen_after(closed, attempt=1, reused=True)  # once
    assert not reopen_after(closed, attempt=0, reused=False)  # a fresh one failing: Redis is away
    for slow in (redis.TimeoutError("Timeout reading"), asyncio.TimeoutError()):
        assert not reopen_after(slow, attempt=0, reused=True)
    assert not reopen_after(KeyboardInterrupt(), attempt=0, reused=True)


def test_a_batch_is_packed_as_redis_py_packs_it_with_or_without_hiredis(
    saver: RedisSaver, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = [("EVALSHA", "ab" * 20, 2, "k1", "k2", b"\x00bytes", 7, "caf\u00e9"), ("PING",)]
    connection = redis.Redis.from_url(redis_server.url).connection_pool.make_connection()
    by_redis_py = b"".join(connection.pack_commands(commands))
    assert wire.hiredis_pack is not None  # the test extras install it
    assert wire.packed(connection, commands) == [by_redis_py]  # one buffer: one send
    assert wire.packed(connection, commands[:1]) == [connection.pack_command(*commands[0])[0]]
    monkeypatch.setattr(wire, "hiredis_pack", None)
    assert b"".join(wire.packed(connection, commands)) == by_redis_py
    conf = put(saver, "no-hiredis", {"n": 1})
    tup = saver.get_tuple(conf)
    assert tup is not None and tup.checkpoint["channel_values"]["n"] == 1


async def test_the_async_saver_reopens_a_dropped_connection_without_falling_back(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    async with AsyncRedisSaver.from_conn_string(redis_server.url, key_prefix="adrop") as saver:
        conf = config("adrop")
        cp = generate_checkpoint(channel_values={"v": "a"}, channel_versions={"v": "b1.0"})
        first = await saver.aput(conf, cp, {"source": "loop", "step": 0}, {"v": "b1.0"})
        link = saver._queues["redis"].link
        assert link is not None and link.connection is not None
        killed = redis_client.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        before = saver._router.fallback_calls
        await saver.aput_writes(first, [("v", "b")], "task-1")
        assert saver._router.fallback_calls == before and not saver.serving_from_memory
        got = await saver.aget_tuple(first)
        assert got is not None and got.pending_writes == [("task-1", "v", "b")]


def test_deleting_a_thread_forgets_all_this_process_remembered_of_it(saver: RedisSaver) -> None:
    _converse(saver, "forget", 2)
    caches = [v for v in vars(saver.core.known).values() if isinstance(v, OrderedDict)]

    def entries() -> list[Any]:
        return [k for c in caches for k in c if (k[0] if isinstance(k, tuple) else k) == "forget"]

    assert len(caches) >= 6 and entries()
    saver.delete_thread("forget")
    assert entries() == []


def test_what_a_process_knows_of_a_thread_is_indexed_by_thread_and_stays_bounded() -> None:
    known = KnownState(limit=8)
    for i in range(20):
        for ns in (b"", b"sub"):
            known.remember_lists(f"t{i}", ns, {"messages": StoredList(b"f", [b"x"])})
            known.stored(f"t{i}", ns, {}, b"m", codec.Keyframe(0, b"m", b"p"))
    for cache in (known._lists, known._last_record):
        assert len(cache) == 8  # the newest 8 (thread, namespace) pairs: threads 16 to 19
        indexed = {key for keys in cache.of_thread.values() for key in keys}
        assert indexed == set(cache) and set(cache.of_thread) == {"t16", "t17", "t18", "t19"}
    known.forget_thread("t18")
    assert known.lists("t18", b"") == {} and known.last_record("t18", b"sub") is None
    assert known.lists("t19", b"sub") and "t18" not in known._lists.of_thread
    assert len(known._lists) == len(known._last_record) == 6


def test_control_bytes_integer_versions_and_nested_filters_round_trip(saver: RedisSaver) -> None:
    """What the key and record escaping must carry through Redis: NUL and 0x01 in a parent id,
    a channel name and a version; an integer version stays an integer; a dict-valued metadata
    filter matches whatever order its keys come in."""
    odd = generate_checkpoint(checkpoint_id="odd\x00\x01id")
    odd["channel_values"] = {"ch\x00an\x01nel": ["v"]}
    odd["channel_versions"] = {"ch\x00an\x01nel": "v\x01\x00"}
    parent = config("ctl", checkpoint_id="parent\x00\x01")
    saver.put(parent, odd, {"source": "loop", "step": 2}, {"ch\x00an\x01nel": "v\x01\x00"})
    back = saver.get_tuple(config("ctl"))
    assert back is not None and back.checkpoint["id"] == "odd\x00\x01id"
    assert back.checkpoint["channel_values"] == {"ch\x00an\x01nel": ["v"]}
    assert back.checkpoint["channel_versions"] == {"ch\x00an\x01nel": "v\x01\x00"}
    assert back.parent_config is not None
    assert back.parent_config["configurable"]["checkpoint_id"] == "parent\x00\x01"

    numbered = generate_checkpoint(checkpoint_id="n1")
    numbered["channel_values"] = {"a": "x"}
    numbered["channel_versions"] = {"a": 1}
    who = {"a": 1, "b": {"c": 2, "d": 3}}
    saver.put(config("int"), numbered, {"source": "input", "step": 1, "who": who}, {"a": 1})
    stored = saver.get_tuple(config("int"))
    assert stored is not None and stored.checkpoint["channel_versions"] == {"a": 1}
    assert type(stored.checkpoint["channel_versions"]["a"]) is int
    reordered = {"b": {"d": 3, "c": 2}, "a": 1}
    assert [t.config for t in saver.list(None, filter={"who": reordered})] == [stored.config]
    assert list(saver.list(None, filter={"who": {"a": 1}})) == []  # equality, not a subset
