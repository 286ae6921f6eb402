"""Full LangGraph graphs on RedisSaver and AsyncRedisSaver, checked against InMemorySaver.

Every scenario runs twice - once on a Redis saver, once on langgraph's InMemorySaver - and the
observable results (values, next, metadata, tasks, interrupts, history shape) must be identical.
Checkpoint ids differ between the runs (they embed time), so histories are compared by position,
with each parent expressed as the index of the parent in the same history.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.channels import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot, interrupt

from redis_checkpoint import AsyncRedisSaver, RedisSaver

Graph = CompiledStateGraph[Any, Any, Any, Any]


# -- driving a graph the same way, sync or async ---------------------------------------------


@dataclass
class Driver:
    """Runs graph calls through the sync API (invoke, ...) or the async one (ainvoke, ...)."""

    saver: BaseCheckpointSaver[Any]
    asynchronous: bool

    def reference(self) -> Driver:
        # The same calling style on langgraph's own in-memory saver.
        return Driver(InMemorySaver(), self.asynchronous)

    async def invoke(self, graph: Graph, inp: Any, config: RunnableConfig) -> Any:
        if self.asynchronous:
            return await graph.ainvoke(inp, config)
        return graph.invoke(inp, config)

    async def stream(self, graph: Graph, inp: Any, config: RunnableConfig) -> list[Any]:
        if self.asynchronous:
            return [c async for c in graph.astream(inp, config, stream_mode="values")]
        return list(graph.stream(inp, config, stream_mode="values"))

    async def state(
        self, graph: Graph, config: RunnableConfig, *, subgraphs: bool = False
    ) -> StateSnapshot:
        if self.asynchronous:
            return await graph.aget_state(config, subgraphs=subgraphs)
        return graph.get_state(config, subgraphs=subgraphs)

    async def history(
        self, graph: Graph, config: RunnableConfig, **options: Any
    ) -> list[StateSnapshot]:
        # options: filter, before, limit
        if self.asynchronous:
            return [s async for s in graph.aget_state_history(config, **options)]
        return list(graph.get_state_history(config, **options))

    async def update(
        self, graph: Graph, config: RunnableConfig, values: Any, as_node: str | None = None
    ) -> RunnableConfig:
        if self.asynchronous:
            return await graph.aupdate_state(config, values, as_node=as_node)
        return graph.update_state(config, values, as_node=as_node)


@pytest.fixture(params=["sync", "async"])
async def driver(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Driver]:
    # A fresh key prefix per test: the session's server is shared and never flushed.
    prefix = f"test-graph-{uuid.uuid4().hex[:12]}"
    if request.param == "sync":
        with RedisSaver.from_conn_string(redis_url, key_prefix=prefix) as saver:
            yield Driver(saver, asynchronous=False)
    else:
        async with AsyncRedisSaver.from_conn_string(redis_url, key_prefix=prefix) as asaver:
            yield Driver(asaver, asynchronous=True)


def thread_config(thread_id: str | None = None) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id or f"t-{uuid.uuid4().hex}"}}


def cid(config: RunnableConfig | None) -> str | None:
    return None if config is None else config["configurable"]["checkpoint_id"]


# -- normalising what the savers hand back ---------------------------------------------------


def task_view(snapshot: StateSnapshot) -> list[tuple[Any, ...]]:
    # Task and interrupt ids hash checkpoint ids, so compare names, payloads and results.
    return [
        (t.name, tuple(i.value for i in t.interrupts), t.result, t.error is not None)
        for t in snapshot.tasks
    ]


def snapshot_view(snapshot: StateSnapshot) -> dict[str, Any]:
    return {
        "values": snapshot.values,
        "next": snapshot.next,
        "step": snapshot.metadata["step"] if snapshot.metadata else None,
        "source": snapshot.metadata["source"] if snapshot.metadata else None,
        "tasks": task_view(snapshot),
        "interrupts": [i.value for i in snapshot.interrupts],
        "ns": snapshot.config["configurable"].get("checkpoint_ns", "").split(":")[0],
    }


def history_view(history: Sequence[StateSnapshot]) -> list[dict[str, Any]]:
    """Each snapshot's view plus the position of its parent in the same history."""
    ids = [cid(s.config) for s in history]
    assert len(set(ids)) == len(ids), "a checkpoint listed twice"
    # Newest first: checkpoint ids are time-ordered.
    assert ids == sorted(ids, key=lambda i: str(i), reverse=True)
    out = []
    for snapshot in history:
        parent = cid(snapshot.parent_config)
        view = snapshot_view(snapshot)
        # index() raises when a parent link points outside the thread's history.
        view["parent"] = None if parent is None else ids.index(parent)
        out.append(view)
    return out


def assert_linear(history: Sequence[StateSnapshot]) -> None:
    """A history without forks: each checkpoint's parent is the next older one."""
    for newer, older in pairwise(history):
        assert cid(newer.parent_config) == cid(older.config)
    assert history[-1].parent_config is None


async def both(driver: Driver, scenario: Callable[[Driver], Awaitable[Any]]) -> tuple[Any, Any]:
    """The scenario's observations on the Redis saver and on InMemorySaver."""
    return await scenario(driver), await scenario(driver.reference())


# -- graphs -----------------------------------------------------------------------------------


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    turns: Annotated[int, operator.add]
    summary: str


def chat(state: ChatState) -> dict[str, Any]:
    last = state["messages"][-1]
    # Fixed ids keep both runs' values comparable (add_messages otherwise draws uuids).
    reply = AIMessage(f"echo {last.content}", id=f"ai-{len(state['messages'])}")
    return {"messages": [reply], "turns": 1}


def summarize(state: ChatState) -> dict[str, Any]:
    # Grows past the inline and the compression thresholds of the saver's record format.
    return {"summary": " | ".join(str(m.content) for m in state["messages"]) * 3}


def chat_graph(saver: BaseCheckpointSaver[Any], **compile_args: Any) -> Graph:
    builder = StateGraph(ChatState)
    builder.add_node("chat", chat)
    builder.add_node("summarize", summarize)
    builder.add_edge(START, "chat")
    builder.add_edge("chat", "summarize")
    builder.add_edge("summarize", END)
    return builder.compile(checkpointer=saver, **compile_args)


def human(turn: int, text: str | None = None) -> dict[str, Any]:
    return {"messages": [HumanMessage(text or f"hello {turn}", id=f"h-{turn}")]}


# -- multi-turn conversation ------------------------------------------------------------------

TURNS = 4


async def test_multi_turn_conversation(driver: Driver) -> None:
    async def scenario(drv: Driver) -> dict[str, Any]:
        graph = chat_graph(drv.saver)
        config = thread_config()
        results = []
        for turn in range(TURNS):
            if turn % 2:
                # Stream some turns: every intermediate value must match too.
                results.append(await drv.stream(graph, human(turn), config))
            else:
                results.append(await drv.invoke(graph, human(turn), config))
        state = await drv.state(graph, config)
        history = await drv.history(graph, config)
        assert_linear(history)
        assert cid(history[0].config) == cid(state.config)
        # filter, before and limit select the same snapshots as InMemorySaver's.
        inputs = await drv.history(graph, config, filter={"source": "input"})
        page = await drv.history(graph, config, before=history[2].config, limit=3)
        return {
            "results": results,
            "state": snapshot_view(state),
            "history": history_view(history),
            "inputs": [snapshot_view(s) for s in inputs],
            "page": [snapshot_view(s) for s in page],
            "page_ids": [history.index(s) for s in page],
        }

    got, expected = await both(driver, scenario)
    assert got == expected
    # And the state is what the conversation says, not only what InMemorySaver says.
    values = got["state"]["values"]
    assert [m.id for m in values["messages"]] == [
        i for t in range(TURNS) for i in (f"h-{t}", f"ai-{2 * t + 1}")
    ]
    assert values["turns"] == TURNS
    assert got["state"]["next"] == ()
    # input, loop-after-input, chat, summarize: four checkpoints per turn.
    assert len(got["history"]) == 4 * TURNS
    assert [h["step"] for h in got["history"]] == list(range(4 * TURNS - 2, -2, -1))
    assert [s["step"] for s in got["inputs"]] == [4 * t - 1 for t in range(TURNS - 1, -1, -1)]
    assert got["page_ids"] == [3, 4, 5]


async def test_threads_do_not_mix(driver: Driver) -> None:
    graph = chat_graph(driver.saver)
    first, second = thread_config(), thread_config()
    await driver.invoke(graph, human(0, "first thread"), first)
    await driver.invoke(graph, human(0, "second thread"), second)
    await driver.invoke(graph, human(1, "first again"), first)
    one = (await driver.state(graph, first)).values
    two = (await driver.state(graph, second)).values
    assert [m.content for m in one["messages"]] == [
        "first thread",
        "echo first thread",
        "first again",
        "echo first again",
    ]
    assert [m.content for m in two["messages"]] == ["second thread", "echo second thread"]


# -- interrupt and resume ---------------------------------------------------------------------


class ReviewState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    log: Annotated[list[str], operator.add]
    approved: bool


def draft(state: ReviewState) -> dict[str, Any]:
    return {"messages": [AIMessage("a draft", id="draft")], "log": ["draft"]}


def review(state: ReviewState) -> dict[str, Any]:
    # Two interrupts in one node: the first answer is stored as a pending RESUME write and
    # must come back from the saver when the node reruns to reach the second one.
    verdict = interrupt({"question": "approve?", "draft": state["messages"][-1].content})
    reason = interrupt({"question": "why?"})
    return {"approved": verdict == "yes", "log": [f"review:{verdict}:{reason}"]}


def publish(state: ReviewState) -> dict[str, Any]:
    return {"log": ["publish"]}


def review_graph(saver: BaseCheckpointSaver[Any], **compile_args: Any) -> Graph:
    builder = StateGraph(ReviewState)
    builder.add_node("draft", draft)
    builder.add_node("review", review)
    builder.add_node("publish", publish)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "review")
    builder.add_edge("review", "publish")
    builder.add_edge("publish", END)
    return builder.compile(checkpointer=saver, **compile_args)


async def test_interrupt_and_resume(driver: Driver) -> None:
    async def scenario(drv: Driver) -> dict[str, Any]:
        graph = review_graph(drv.saver)
        config = thread_config()
        start: dict[str, Any] = {"messages": [HumanMessage("write", id="h")], "log": []}
        first = await drv.invoke(graph, start, config)
        paused = await drv.state(graph, config)
        second = await drv.invoke(graph, Command(resume="yes"), config)
        paused_again = await drv.state(graph, config)
        final = await drv.invoke(graph, Command(resume="looks fine"), config)
        history = await drv.history(graph, config)
        assert_linear(history)
        return {
            "first": [i.value for i in first["__interrupt__"]],
            "paused": snapshot_view(paused),
            "second": [i.value for i in second["__interrupt__"]],
            "paused_again": snapshot_view(paused_again),
            "final": final,
            "state": snapshot_view(await drv.state(graph, config)),
            "history": history_view(history),
        }

    got, expected = await both(driver, scenario)
    assert got == expected
    assert got["first"] == [{"question": "approve?", "draft": "a draft"}]
    assert got["paused"]["next"] == ("review",)
    assert got["paused"]["tasks"][0][:2] == (
        "review",
        ({"question": "approve?", "draft": "a draft"},),
    )
    assert got["paused"]["interrupts"] == [{"question": "approve?", "draft": "a draft"}]
    assert got["paused_again"]["interrupts"] == [{"question": "why?"}]
    assert got["final"]["log"] == ["draft", "review:yes:looks fine", "publish"]
    assert got["final"]["approved"] is True
    assert got["state"]["next"] == ()
    assert got["state"]["interrupts"] == []


async def test_interrupt_before_then_continue(driver: Driver) -> None:
    async def scenario(drv: Driver) -> dict[str, Any]:
        graph = chat_graph(drv.saver, interrupt_before=["summarize"])
        config = thread_config()
        stopped = await drv.invoke(graph, human(0), config)
        paused = await drv.state(graph, config)
        # Edit the paused state, then continue with None: the breakpoint does not fire again.
        await drv.update(graph, config, {"turns": 10})
        done = await drv.invoke(graph, None, config)
        history = await drv.history(graph, config)
        assert_linear(history)
        return {
            "stopped": stopped,
            "paused": snapshot_view(paused),
            "done": done,
            "history": history_view(history),
        }

    got, expected = await both(driver, scenario)
    assert got == expected
    assert got["paused"]["next"] == ("summarize",)
    assert "summary" not in got["stopped"]
    assert got["done"]["turns"] == 11
    assert got["done"]["summary"].startswith("hello 0 | echo hello 0")
    assert got["history"][0]["next"] == ()


# -- subgraphs --------------------------------------------------------------------------------


class InnerState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    detail: str


class OuterState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    detail: str
    done: bool


def think(state: InnerState) -> dict[str, Any]:
    return {"messages": [AIMessage("thinking", id="think")]}


def ask(state: InnerState) -> dict[str, Any]:
    detail = interrupt("which detail?")
    return {"detail": detail, "messages": [AIMessage(f"got {detail}", id="ask")]}


def outer_graph(saver: BaseCheckpointSaver[Any]) -> Graph:
    inner = StateGraph(InnerState)
    inner.add_node("think", think)
    inner.add_node("ask", ask)
    inner.add_edge(START, "think")
    inner.add_edge("think", "ask")
    inner.add_edge("ask", END)

    def intro(state: OuterState) -> dict[str, Any]:
        return {"messages": [AIMessage("intro", id="intro")], "done": False}

    def outro(state: OuterState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"outro {state['detail']}", id="outro")], "done": True}

    outer = StateGraph(OuterState)
    outer.add_node("intro", intro)
    # Compiled without a checkpointer: it checkpoints into the parent's, under its namespace.
    outer.add_node("sub", inner.compile())
    outer.add_node("outro", outro)
    outer.add_edge(START, "intro")
    outer.add_edge("intro", "sub")
    outer.add_edge("sub", "outro")
    outer.add_edge("outro", END)
    return outer.compile(checkpointer=saver)


async def test_subgraph_namespaces_and_interrupt(driver: Driver) -> None:
    async def scenario(drv: Driver) -> dict[str, Any]:
        graph = outer_graph(drv.saver)
        config = thread_config()
        first = await drv.invoke(graph, {"messages": [HumanMessage("go", id="go")]}, config)
        outer = await drv.state(graph, config, subgraphs=True)
        assert len(outer.tasks) == 1 and isinstance(outer.tasks[0].state, StateSnapshot)
        inner = outer.tasks[0].state
        # The subgraph's checkpoints live under their own namespace of the same thread.
        inner_ns = inner.config["configurable"]["checkpoint_ns"]
        assert inner_ns.startswith("sub:")
        inner_history = await drv.history(
            graph, {"configurable": {**config["configurable"], "checkpoint_ns": inner_ns}}
        )
        assert_linear(inner_history)
        assert {s.config["configurable"]["checkpoint_ns"] for s in inner_history} == {inner_ns}
        final = await drv.invoke(graph, Command(resume="the blue one"), config)
        history = await drv.history(graph, config)
        assert_linear(history)
        # The parent's history lists only the root namespace.
        assert {s.config["configurable"]["checkpoint_ns"] for s in history} == {""}
        return {
            "first": [i.value for i in first["__interrupt__"]],
            "outer": snapshot_view(outer),
            "inner": snapshot_view(inner),
            "inner_history": history_view(inner_history),
            "final": final,
            "state": snapshot_view(await drv.state(graph, config, subgraphs=True)),
            "history": history_view(history),
        }

    got, expected = await both(driver, scenario)
    assert got == expected
    assert got["first"] == ["which detail?"]
    assert got["outer"]["next"] == ("sub",)
    assert got["outer"]["interrupts"] == ["which detail?"]
    assert got["inner"]["next"] == ("ask",)
    assert got["inner"]["ns"] == "sub"
    assert [m.id for m in got["inner"]["values"]["messages"]] == ["go", "intro", "think"]
    assert [m.id for m in got["final"]["messages"]] == ["go", "intro", "think", "ask", "outro"]
    assert got["final"]["detail"] == "the blue one"
    assert got["state"]["tasks"] == []


# -- time travel ------------------------------------------------------------------------------


async def test_time_travel_replay_and_fork(driver: Driver) -> None:
    async def scenario(drv: Driver) -> dict[str, Any]:
        graph = chat_graph(drv.saver)
        config = thread_config()
        for turn in range(3):
            await drv.invoke(graph, human(turn), config)
        history = await drv.history(graph, config)
        # Replay: rerun from the checkpoint before turn 1's summarize.
        before_summary = next(
            s for s in history if s.next == ("summarize",) and s.metadata["step"] == 5
        )
        replayed = await drv.invoke(graph, None, before_summary.config)
        # Fork: rewrite turn 1's human message on the checkpoint that awaits its reply.
        before_chat = next(s for s in history if s.next == ("chat",) and s.metadata["step"] == 4)
        forked = await drv.update(
            graph, before_chat.config, {"messages": [HumanMessage("rewritten", id="h-1")]}
        )
        fork_state = await drv.state(graph, forked)
        resumed = await drv.invoke(graph, None, forked)
        # The older branch is still readable as it was.
        old_end = await drv.state(graph, history[0].config)
        return {
            "replayed": replayed,
            "fork_state": snapshot_view(fork_state),
            "fork_parent_is_past": cid(fork_state.parent_config) == cid(before_chat.config),
            "resumed": resumed,
            "latest": snapshot_view(await drv.state(graph, config)),
            "old_end": snapshot_view(old_end),
            "history": history_view(await drv.history(graph, config)),
        }

    got, expected = await both(driver, scenario)
    assert got == expected
    assert got["fork_parent_is_past"]
    assert got["fork_state"]["source"] == "update"
    assert got["fork_state"]["next"] == ("chat",)
    assert [m.content for m in got["resumed"]["messages"]] == [
        "hello 0",
        "echo hello 0",
        "rewritten",
        "echo rewritten",
    ]
    # The latest checkpoint of the thread is the end of the fork.
    assert got["latest"]["values"] == got["resumed"]
    assert len(got["old_end"]["values"]["messages"]) == 6
    # 12 original; the replay forks (a "fork" copy, then summarize); the update, then chat and
    # summarize on that second branch.
    assert len(got["history"]) == 17
    assert [h["source"] for h in got["history"]].count("fork") == 1


# -- parallel fan-out: pending writes order ---------------------------------------------------


class FanState(TypedDict):
    log: Annotated[list[str], operator.add]
    messages: Annotated[list[AnyMessage], add_messages]


def fan_graph(saver: BaseCheckpointSaver[Any], runs: dict[str, int]) -> Graph:
    def worker(name: str) -> Callable[[FanState], dict[str, Any]]:
        def node(state: FanState) -> dict[str, Any]:
            runs[name] = runs.get(name, 0) + 1
            if name == "c":
                # c pauses after a and b finished in the same superstep: their writes are
                # saved as pending writes and must be replayed in order on resume.
                answer = interrupt("c needs input")
                return {"log": [f"c:{answer}"], "messages": [AIMessage(answer, id="c")]}
            return {"log": [name, f"{name}-again"], "messages": [AIMessage(name, id=name)]}

        return node

    def join(state: FanState) -> dict[str, Any]:
        return {"log": [f"join saw {len(state['log'])}"]}

    builder = StateGraph(FanState)
    builder.add_node("split", lambda state: {"log": ["split"]})
    for name in ("a", "b", "c"):
        builder.add_node(name, worker(name))
        builder.add_edge("split", name)
    builder.add_node("join", join)
    builder.add_edge(["a", "b", "c"], "join")
    builder.add_edge(START, "split")
    builder.add_edge("join", END)
    return builder.compile(checkpointer=saver)


async def test_parallel_fan_out_pending_writes(driver: Driver) -> None:
    async def scenario(drv: Driver) -> dict[str, Any]:
        runs: dict[str, int] = {}
        graph = fan_graph(drv.saver, runs)
        config = thread_config()
        await drv.invoke(graph, {"log": ["start"]}, config)
        paused = await drv.state(graph, config)
        final = await drv.invoke(graph, Command(resume="ok"), config)
        history = await drv.history(graph, config)
        assert_linear(history)
        return {
            "paused": snapshot_view(paused),
            "final": final,
            "runs": runs,
            "history": history_view(history),
        }

    got, expected = await both(driver, scenario)
    assert got == expected
    # a and b ran once: their results came back from the saver's pending writes.
    assert got["runs"] == {"a": 1, "b": 1, "c": 2}
    # Only c is still to run; a's and b's results are its pending writes.
    assert got["paused"]["next"] == ("c",)
    assert [t[0] for t in got["paused"]["tasks"]] == ["a", "b", "c"]
    assert got["paused"]["tasks"][0][2] == {
        "log": ["a", "a-again"],
        "messages": [AIMessage("a", id="a")],
    }
    assert got["paused"]["interrupts"] == ["c needs input"]
    assert got["final"]["log"] == [
        "start",
        "split",
        "a",
        "a-again",
        "b",
        "b-again",
        "c:ok",
        "join saw 7",
    ]


async def test_parallel_fan_out_without_interrupt(driver: Driver) -> None:
    async def scenario(drv: Driver) -> Any:
        def left(state: FanState) -> dict[str, Any]:
            return {"log": ["left"]}

        def right(state: FanState) -> dict[str, Any]:
            return {"log": ["right"]}

        builder = StateGraph(FanState)
        builder.add_node("left", left)
        builder.add_node("right", right)
        builder.add_edge(START, "left")
        builder.add_edge(START, "right")
        builder.add_edge("left", END)
        builder.add_edge("right", END)
        graph = builder.compile(checkpointer=drv.saver)
        config = thread_config()
        out = [await drv.invoke(graph, {"log": [f"in{i}"]}, config) for i in range(3)]
        return out, history_view(await drv.history(graph, config))

    got, expected = await both(driver, scenario)
    assert got == expected
    assert got[0][-1]["log"] == [
        "in0",
        "left",
        "right",
        "in1",
        "left",
        "right",
        "in2",
        "left",
        "right",
    ]


# -- DeltaChannel: prune keep_latest keeps what reconstruction needs --------------------------


def extend(state: list[str], batches: Sequence[list[str]]) -> list[str]:
    # Batching-invariant, as DeltaChannel requires: folding batches one by one or all at once
    # gives the same list.
    out = list(state)
    for batch in batches:
        out.extend(batch)
    return out


class DeltaState(TypedDict):
    items: Annotated[list[str], DeltaChannel(extend, snapshot_frequency=4)]
    turn: int


def delta_graph(saver: BaseCheckpointSaver[Any]) -> Graph:
    def left(state: DeltaState) -> dict[str, Any]:
        return {"items": [f"L{state['turn']}"]}

    def right(state: DeltaState) -> dict[str, Any]:
        return {"items": [f"R{state['turn']}", f"R{state['turn']}'"]}

    def tail(state: DeltaState) -> dict[str, Any]:
        return {"items": [f"T{state['turn']}:{len(state['items'])}"]}

    builder = StateGraph(DeltaState)
    builder.add_node("left", left)
    builder.add_node("right", right)
    builder.add_node("tail", tail)
    builder.add_edge(START, "left")
    builder.add_edge(START, "right")
    builder.add_edge(["left", "right"], "tail")
    builder.add_edge("tail", END)
    return builder.compile(checkpointer=saver)


@dataclass
class DeltaRun:
    after_turns: list[Any] = field(default_factory=list)
    state: Any = None
    latest_has_value: bool = True
    history_len: int = 0


async def test_delta_channel_prune_keep_latest(driver: Driver) -> None:
    turns, config = 7, thread_config()
    thread_id = config["configurable"]["thread_id"]

    async def run(drv: Driver, prune: bool) -> DeltaRun:
        graph = delta_graph(drv.saver)
        out = DeltaRun()
        for turn in range(turns):
            out.after_turns.append(
                await drv.invoke(graph, {"turn": turn, "items": [f"in{turn}"]}, config)
            )
        latest = await drv.saver.aget_tuple(config)
        assert latest is not None
        out.latest_has_value = "items" in latest.checkpoint["channel_values"]
        if prune:
            if drv.asynchronous:
                await drv.saver.aprune([thread_id], strategy="keep_latest")
            else:
                drv.saver.prune([thread_id], strategy="keep_latest")
        out.history_len = len(await drv.history(graph, config))
        out.state = snapshot_view(await drv.state(graph, config))
        # One more turn on top of the pruned thread must still build on the full value.
        out.after_turns.append(await drv.invoke(graph, {"turn": 99, "items": ["last"]}, config))
        return out

    pruned = await run(driver, prune=True)
    reference = await run(driver.reference(), prune=False)
    # With 3 updates a turn and a snapshot every 4th, the latest checkpoint holds no value of
    # its own: reading it walks back to a snapshot, through checkpoints prune must keep.
    assert not reference.latest_has_value and not pruned.latest_has_value
    assert pruned.after_turns == reference.after_turns
    assert pruned.state["values"] == reference.state["values"]
    assert pruned.state["next"] == reference.state["next"] == ()
    # Five items per turn: the input's, left's, right's two and tail's.
    assert len(reference.after_turns[-1]["items"]) == 5 * (turns + 1)
    # keep_latest dropped the older checkpoints but kept the chain back to the snapshot.
    assert reference.history_len == 4 * turns
    assert 2 <= pruned.history_len < reference.history_len


async def test_delta_channel_fork_reads_its_own_branch(driver: Driver) -> None:
    # A DeltaChannel value is rebuilt from the writes along the parent chain: on a fork that
    # chain must be the fork's, not the newer checkpoints of the other branch.
    async def scenario(drv: Driver) -> dict[str, Any]:
        graph = delta_graph(drv.saver)
        config = thread_config()
        for turn in range(4):
            await drv.invoke(graph, {"turn": turn, "items": [f"in{turn}"]}, config)
        history = await drv.history(graph, config)
        past = next(s for s in history if s.metadata["step"] == 5)
        forked = await drv.update(graph, past.config, {"items": ["edited"]}, as_node="tail")
        fork_state = await drv.state(graph, forked)
        after = await drv.invoke(graph, {"turn": 50, "items": ["on-fork"]}, forked)
        return {
            "past": snapshot_view(past),
            "fork_state": snapshot_view(fork_state),
            "after": after,
            "latest": snapshot_view(await drv.state(graph, config)),
            "old_branch": snapshot_view(await drv.state(graph, history[0].config)),
            "history": history_view(await drv.history(graph, config)),
        }

    got, expected = await both(driver, scenario)
    assert got == expected
    assert got["fork_state"]["values"]["items"] == [*got["past"]["values"]["items"], "edited"]
    assert got["after"]["items"][: len(got["past"]["values"]["items"]) + 1] == [
        *got["past"]["values"]["items"],
        "edited",
    ]
    assert len(got["old_branch"]["values"]["items"]) == 5 * 4
