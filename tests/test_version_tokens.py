"""Channel versions as records name them: the LangGraph Agent Server's 32-digit versions in
short, their blobs under one name whichever record refers to them, and threads written before
the short form reading on."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages

from redis_checkpoint import RedisSaver
from redis_checkpoint.checkpoint import codec, core, scripts
from redis_checkpoint.checkpoint.keys import (
    field_token,
    record_token,
    version_from_token,
    version_token,
)
from redis_checkpoint.testing import RedisServer

PADDED = "00000000000000000000000000000007.0.5488135039273248"


@pytest.mark.parametrize(
    ("version", "token"),
    [
        (PADDED, b"z7.0.5488135039273248"),
        ("0" * 32 + ".5", b"z0.5"),
        (f"{10**31:032}.{0.25:016}", b"z1" + b"0" * 31 + b".0000000000000.25"),
        ("1" * 33 + ".5", b"s" + b"1" * 33 + b".5"),  # not 32 digits: spelled in full
        ("0" * 32, b"s" + b"0" * 32),
        ("0" * 31 + "a.5", b"s" + b"0" * 31 + b"a.5"),
        ("+" + "0" * 31 + ".5", b"s+" + b"0" * 31 + b".5"),
        (3, b"i3"),
        (2.5, b"f2.5"),
        ("1.abc", b"s1.abc"),
    ],
)
def test_a_record_names_only_the_agent_servers_versions_in_short(
    version: str | int | float, token: bytes
) -> None:
    assert record_token(version) == token
    assert field_token(token) == version_token(version)  # the blob keeps its one name
    assert version_from_token(token) == version and type(version_from_token(token)) is type(version)


def test_a_foreign_short_token_names_no_blob_and_breaks_no_read(redis_server: RedisServer) -> None:
    with RedisSaver.from_conn_string(redis_server.url, key_prefix="vforeign") as saver:
        conf = {"configurable": {"thread_id": "odd", "checkpoint_ns": ""}}
        _graph(saver).invoke({"messages": [HumanMessage("hi", id="h0")]}, conf)
        data = saver.core.keys("odd").data
        name, raw = next((n, v) for n, v in saver.client.hgetall(data).items() if n[:1] == b"c")
        record = codec.unpack(raw)
        record[6] = [b"messages", b"z-no-dot", b"profile", b"z" + b"1" * 40 + b".5"]
        saver.client.hset(data, name, codec.pack(record))
        fresh = RedisSaver(saver.client, key_prefix="vforeign")
        for tup in fresh.list(conf):  # every read goes through the scripts' field_token
            assert tup.checkpoint["id"]


def test_the_scripts_spell_a_blob_field_as_python_does(redis_server: RedisServer) -> None:
    tokens = [record_token(PADDED), b"z0.5", b"z-no-dot", b"z" + b"1" * 40 + b".5", b"i3", b"s1.a"]
    client = redis_server.client()
    spelled = client.eval(
        scripts.PRELUDE + "local out = {} for i, t in ipairs(ARGV) do out[i] = field_token(t) end"
        " return out",
        0,
        *tokens,
    )
    client.close()
    assert spelled == [field_token(token) for token in tokens]


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    profile: str  # set once, then unchanged: every later record refers to its first blob
    turns: Annotated[int, operator.add]


def _graph(saver: Any) -> Any:
    def reply(state: Chat) -> dict[str, Any]:
        n = len(state["messages"])
        out: dict[str, Any] = {"messages": [AIMessage(f"answer {n} " * 10, id=f"a{n}")]}
        if not state.get("profile"):
            out["profile"] = "a profile long enough to live in a blob of its own " * 3
        return {**out, "turns": 1}

    builder = StateGraph(Chat)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    return builder.compile(checkpointer=saver)


def _agent_server_version(current: Any, channel: None) -> str:
    return InMemorySaver.get_next_version(None, current, channel)  # type: ignore[arg-type]


def _record_tokens(saver: RedisSaver, thread_id: str) -> list[bytes]:
    data = saver.client.hgetall(saver.core.keys(thread_id).data)
    records = [codec.unpack(value) for name, value in data.items() if name[:1] == b"c"]
    return [record[6][i + 1] for record in records for i in range(0, len(record[6]), 2)]


def test_a_thread_written_with_the_long_spelling_reads_on_and_continues_in_short(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _graph(InMemorySaver())  # InMemorySaver's versions are the Agent Server's
    conf = {"configurable": {"thread_id": "upgraded"}}
    with RedisSaver.from_conn_string(redis_server.url, key_prefix="vtok") as saver:
        saver.get_next_version = _agent_server_version  # type: ignore[method-assign]
        graph = _graph(saver)

        def turn(n: int) -> None:
            for g in (graph, reference):
                g.invoke({"messages": [HumanMessage(f"question {n}", id=f"h{n}")]}, conf)

        with monkeypatch.context() as earlier:
            earlier.setattr(core, "record_token", version_token)  # as earlier versions wrote
            for n in range(3):
                turn(n)
        before = _record_tokens(saver, "upgraded")
        assert before and all(token[:1] == b"s" for token in before)
        for n in range(3, 6):
            turn(n)
        after = _record_tokens(saver, "upgraded")
        assert {token[:1] for token in after} == {b"s", b"z"}

    # A fresh process reads what both spellings wrote, as InMemorySaver holds it.
    with RedisSaver.from_conn_string(redis_server.url, key_prefix="vtok") as fresh:
        ours = [t.checkpoint for t in fresh.list(conf)]
        theirs = [t.checkpoint for t in reference.checkpointer.list(conf)]
        assert len(ours) == len(theirs) == 18  # three checkpoints a turn
        for mine, other in zip(ours, theirs, strict=True):
            assert mine["channel_values"] == other["channel_values"]
            assert set(mine["channel_versions"]) == set(other["channel_versions"])
            assert all(len(str(v)) > 32 for v in mine["channel_versions"].values())
        latest = fresh.get_tuple(conf)
        assert latest is not None and latest.checkpoint["channel_values"]["turns"] == 6
        assert latest.checkpoint["channel_values"]["profile"].startswith("a profile")
