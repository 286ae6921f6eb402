"""The in-memory tier runs the scripts in Python: it must answer exactly as Lua on Redis does."""

from __future__ import annotations

import secrets
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

from redis_checkpoint import RedisSaver
from redis_checkpoint.testing import RedisServer

THREADS = ["plain", "a:{b}", "ünï", ""]


def script(savers: list[RedisSaver]) -> None:
    """The same operations, with the same checkpoint objects, on every saver."""
    for thread_id in THREADS:
        for ns in ("", "sub:1"):
            parent: dict[str, Any] | None = None
            messages: list[Any] = []
            versions: dict[str, Any] = {}
            for step in range(6):
                added = [HumanMessage(f"q{step} " * 30), AIMessage(f"a{step} " * 60)]
                messages = [*messages, *added]
                # The Agent Server's 32-digit versions: records name them in short.
                new = {"messages": f"{step + 1:032}.{0.25 + step:016}"}
                if step % 2 == 0:
                    new["note"] = savers[0].get_next_version(versions.get("note"), None)
                versions = {**versions, **new}
                values = {"messages": messages, "note": f"n{step - step % 2}", "big": "x" * 300}
                if step == 0:
                    new["big"] = versions["big"] = "000000000001.00000000"
                cp = generate_checkpoint(channel_values=values, channel_versions=dict(versions))
                conf = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
                if parent:
                    conf["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
                meta = {"source": "loop", "step": step, "parity": step % 2}
                # The parent's task wrote what this step adds: before the put (the list refers
                # to the writes), or after it (the writes turn the stored list into a reference).
                adding = [("messages", added)]
                if parent and step % 3 == 1:
                    for s in savers:
                        s.put_writes(parent, adding, "t2", "p2")
                outs = [s.put(conf, cp, meta, new) for s in savers]
                if parent and step % 3 == 2:
                    for s in savers:
                        s.put_writes(parent, adding, "t2", "p2")
                parent = outs[0]
                for s in savers:
                    s.put_writes(
                        parent, [("messages", [AIMessage("w")]), ("note", step)], "t1", "p1"
                    )
                    s.put_writes(parent, [("__error__", f"e{step}")], "t0", "p0")
                    s.put_writes(parent, [("__error__", f"again{step}")], "t0", "p0")


def observe(saver: RedisSaver) -> list[Any]:
    seen: list[Any] = []
    for thread_id in THREADS:
        seen.append(
            saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
        )
        seen.append(list(saver.list({"configurable": {"thread_id": thread_id}})))
        seen.append(
            list(
                saver.list(
                    {"configurable": {"thread_id": thread_id, "checkpoint_ns": "sub:1"}},
                    filter={"parity": 1},
                    limit=2,
                )
            )
        )
        latest = saver.get_tuple(
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": "sub:1"}}
        )
        assert latest is not None
        seen.append(saver.get_delta_channel_history(config=latest.config, channels=["note", "big"]))
    return seen


def test_memory_tier_answers_like_redis(redis_server: RedisServer, dead_url: str) -> None:
    with (
        RedisSaver.from_conn_string(redis_server.url, key_prefix="difftier") as on_redis,
        RedisSaver.from_conn_string(
            dead_url, require_redis=False, key_prefix="difftier"
        ) as in_memory,
    ):
        script([on_redis, in_memory])
        assert in_memory.serving_from_memory and not on_redis.serving_from_memory
        assert observe(in_memory) == observe(on_redis)
        # Both stored the same kinds of blob: lists referring to writes among them.
        assert in_memory.memory is not None
        for thread_id in THREADS:
            keys = on_redis.core.keys(thread_id)
            in_redis = on_redis.client.hgetall(keys.data)
            here = in_memory.memory._threads[thread_id].data
            kinds = sorted(v[:1] for f, v in in_redis.items() if f[:1] in (b"b", b"r"))
            assert kinds == sorted(v[:1] for f, v in here.items() if f[:1] in (b"b", b"r"))
            assert kinds.count(b"R") == 8  # per namespace steps 1, 4 (writes first), 2, 5 (after)
        # and the Redis saver's own mirror, read while Redis is "away", agrees too
        assert on_redis.memory is not None
        for thread_id in THREADS:
            for call in ("get", "list"):
                conf = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
                op = (
                    on_redis.core.get_tuple(conf)
                    if call == "get"
                    else on_redis.core.list_page(
                        thread_id,
                        "",
                        checkpoint_id=None,
                        filter=None,
                        before=None,
                        limit=100,
                        cursor=None,
                    )
                )
                request = next(op)
                from_memory = on_redis.memory.execute(request, outage=False)
                from_redis = on_redis._send_all([(request, on_redis._router.default)])[0]
                assert from_memory == from_redis, (thread_id, call)


def _put_call(core: Any, thread_id: str, size: int) -> Any:
    value = secrets.token_hex(size // 2)  # incompressible-ish, so the bytes are real
    cp = generate_checkpoint(channel_values={"blob": value}, channel_versions={"blob": 1})
    conf = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    return next(core.put(conf, cp, {"step": 0}, {"blob": 1}))


def test_the_tier_keeps_to_its_budget_but_never_drops_a_dirty_thread() -> None:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from redis_checkpoint.checkpoint.core import SaverCore
    from redis_checkpoint.checkpoint.memory import ThreadMemoryTier

    evicted: list[str] = []
    tier = ThreadMemoryTier(max_bytes=20_000, on_evict=evicted.append)
    core = SaverCore(JsonPlusSerializer())
    # while Redis is healthy: mirrored threads are dropped least recently used first
    for i in range(40):
        tier.mirror(_put_call(core, f"t{i}", 2_000), [[1, 0, 1]])
    assert tier.size <= 20_000
    assert evicted[:3] == ["t0", "t1", "t2"] and "t39" in tier
    # during an outage: dirty threads stay, whatever the budget says
    for i in range(40):
        tier.execute(_put_call(core, f"d{i}", 2_000), outage=True)
    assert tier.pending == 40
    assert all(f"d{i}" in tier for i in range(40))
    assert tier.size > 20_000
    taken = tier.take_many(100, lambda thread_id: True)
    assert sorted(t for t, _ in taken) == sorted(f"d{i}" for i in range(40))
    assert all(payload.members and payload.fields for _, payload in taken)
    assert tier.pending == 40  # in flight until their write-backs are answered
    for thread_id, _ in taken:
        tier.written_back(thread_id, ok=True)
    assert tier.pending == 0
