"""Many concurrent writers on the real standalone server: outcomes only, never timing."""

from __future__ import annotations

import asyncio
import operator
import random
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from itertools import pairwise
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    Checkpoint,
    CheckpointMetadata,
    empty_checkpoint,
    writes_sort_key,
)
from langgraph.checkpoint.base.id import uuid6
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

from redis_checkpoint import AsyncRedisSaver, RedisSaver

Graph = CompiledStateGraph[Any, Any, Any, Any]
TURNS = 4


def unique_prefix() -> str:
    # The session's server is shared and never flushed.
    return f"test-conc-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def saver(redis_url: str) -> Iterator[RedisSaver]:
    with RedisSaver.from_conn_string(redis_url, key_prefix=unique_prefix()) as s:
        yield s


@pytest.fixture
async def asaver(redis_url: str) -> AsyncIterator[AsyncRedisSaver]:
    async with AsyncRedisSaver.from_conn_string(redis_url, key_prefix=unique_prefix()) as s:
        yield s


# -- a conversation graph with a fan-out, so each turn has parallel writes --------------------


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    notes: Annotated[list[str], operator.add]
    turns: Annotated[int, operator.add]


def reply(state: ChatState) -> dict[str, Any]:
    last = state["messages"][-1]
    # Ids derived from the content: a message stored twice would show up as a duplicate id.
    return {"messages": [AIMessage(f"re: {last.content}", id=f"ai:{last.id}")], "turns": 1}


def note(state: ChatState) -> dict[str, Any]:
    return {"notes": [f"saw {state['messages'][-1].id}"]}


def chat_graph(checkpointer: BaseCheckpointSaver[Any]) -> Graph:
    builder = StateGraph(ChatState)
    builder.add_node("reply", reply)
    builder.add_node("note", note)
    builder.add_edge(START, "reply")
    builder.add_edge(START, "note")
    builder.add_edge("reply", END)
    builder.add_edge("note", END)
    return builder.compile(checkpointer=checkpointer)


def turn_input(thread_id: str, turn: int) -> dict[str, Any]:
    return {"messages": [HumanMessage(f"{thread_id} says {turn}", id=f"h:{thread_id}:{turn}")]}


def expected_messages(thread_id: str, turns: int) -> list[str]:
    return [i for t in range(turns) for i in (f"h:{thread_id}:{t}", f"ai:h:{thread_id}:{t}")]


def check_conversation(values: dict[str, Any], history: list[Any], thread_id: str) -> None:
    """Every message exactly once, in order; a linear history of 3 checkpoints per turn."""
    assert [m.id for m in values["messages"]] == expected_messages(thread_id, TURNS)
    assert values["turns"] == TURNS
    assert values["notes"] == [f"saw h:{thread_id}:{t}" for t in range(TURNS)]
    # input, after input, after the parallel reply+note step.
    assert len(history) == 3 * TURNS
    for newer, older in pairwise(history):
        assert newer.parent_config == older.config
        assert newer.metadata["step"] == older.metadata["step"] + 1
    assert history[-1].parent_config is None
    assert {s.config["configurable"]["thread_id"] for s in history} == {thread_id}


# -- (a) 16 OS threads, one shared RedisSaver -------------------------------------------------


def test_sixteen_threads_share_one_sync_saver(saver: RedisSaver) -> None:
    workers = 16
    start = threading.Barrier(workers)

    def converse(n: int) -> str:
        graph = chat_graph(saver)  # each worker its own graph, all on the one saver
        thread_id = f"os-thread-{n}"
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        start.wait()  # all conversations write at the same time
        for turn in range(TURNS):
            graph.invoke(turn_input(thread_id, turn), config)
        return thread_id

    with ThreadPoolExecutor(workers) as pool:
        threads = list(pool.map(converse, range(workers)))

    graph = chat_graph(saver)
    for thread_id in threads:
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        history = list(graph.get_state_history(config))
        check_conversation(graph.get_state(config).values, history, thread_id)
    listed = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
    assert listed == set(threads)


# -- (b) 50 asyncio conversations, one AsyncRedisSaver ----------------------------------------


async def test_fifty_async_conversations_share_one_saver(asaver: AsyncRedisSaver) -> None:
    graph = chat_graph(asaver)

    async def converse(n: int) -> str:
        thread_id = f"task-{n}"
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        for turn in range(TURNS):
            await graph.ainvoke(turn_input(thread_id, turn), config)
        return thread_id

    threads = await asyncio.gather(*(converse(n) for n in range(50)))

    for thread_id in threads:
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        history = [s async for s in graph.aget_state_history(config)]
        check_conversation((await graph.aget_state(config)).values, history, thread_id)
    listed = {t.config["configurable"]["thread_id"] async for t in asaver.alist(None)}
    assert listed == set(threads)


async def test_sync_graph_calls_from_threads_on_async_saver(asaver: AsyncRedisSaver) -> None:
    """Sync graph.invoke in worker threads and ainvoke on the loop, one AsyncRedisSaver.

    The sync calls hop onto the saver's event loop, which is busy with async conversations.
    """
    graph = chat_graph(asaver)

    def converse_sync(n: int) -> str:
        thread_id = f"sync-on-async-{n}"
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        for turn in range(TURNS):
            graph.invoke(turn_input(thread_id, turn), config)
        return thread_id

    async def converse_async(n: int) -> str:
        thread_id = f"async-{n}"
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        for turn in range(TURNS):
            await graph.ainvoke(turn_input(thread_id, turn), config)
        return thread_id

    threads = await asyncio.gather(
        *(asyncio.to_thread(converse_sync, n) for n in range(8)),
        *(converse_async(n) for n in range(8)),
    )
    for thread_id in threads:
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        history = [s async for s in graph.aget_state_history(config)]
        check_conversation((await graph.aget_state(config)).values, history, thread_id)


# -- (c) concurrent put_writes on one checkpoint ----------------------------------------------


def first_checkpoint(
    saver: BaseCheckpointSaver[Any], thread_id: str
) -> tuple[RunnableConfig, Checkpoint, CheckpointMetadata, dict[str, Any]]:
    """The arguments of put() for a thread's first checkpoint."""
    checkpoint: Checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=0))
    version = saver.get_next_version(None, None)
    checkpoint["channel_values"] = {"log": ["seed"]}
    checkpoint["channel_versions"] = {"log": version}
    metadata: CheckpointMetadata = {"source": "loop", "step": 0, "parents": {}}
    config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    return config, checkpoint, metadata, {"log": version}


def task_writes(n: int) -> tuple[str, str, list[tuple[str, Any]]]:
    """Task n's id, path and writes; paths and ids are shuffled against n on purpose."""
    task_id = f"task-{(n * 37) % 101:03d}-{uuid.UUID(int=n).hex[-6:]}"
    task_path = f"~__pregel_pull, node{(n * 7) % 5}"
    writes: list[tuple[str, Any]] = [("log", f"{n}-a"), ("log", {"n": n}), ("count", n)]
    return task_id, task_path, writes


def expected_pending(tasks: list[tuple[str, str, list[tuple[str, Any]]]]) -> list[Any]:
    rows = [
        (writes_sort_key(path, task_id, idx), (task_id, channel, value))
        for task_id, path, writes in tasks
        for idx, (channel, value) in enumerate(writes)
    ]
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def test_concurrent_put_writes_threads(saver: RedisSaver) -> None:
    config = saver.put(*first_checkpoint(saver, "writes-threads"))
    tasks = [task_writes(n) for n in range(64)]
    start = threading.Barrier(16)

    def write(batch: list[tuple[str, str, list[tuple[str, Any]]]]) -> None:
        start.wait()
        for task_id, path, writes in batch:
            saver.put_writes(config, writes, task_id, path)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, [tasks[i::16] for i in range(16)]))

    tup = saver.get_tuple(config)
    assert tup is not None
    assert tup.pending_writes == expected_pending(tasks)


async def test_concurrent_put_writes_asyncio(asaver: AsyncRedisSaver) -> None:
    config = await asaver.aput(*first_checkpoint(asaver, "writes-async"))
    tasks = [task_writes(n) for n in range(200)]
    random.Random(7).shuffle(tasks)
    await asyncio.gather(
        *(asaver.aput_writes(config, writes, task_id, path) for task_id, path, writes in tasks)
    )
    # A task that writes again keeps its first writes (put_writes is idempotent per task).
    first_id, first_path, _ = tasks[0]
    await asaver.aput_writes(config, [("log", "late")], first_id, first_path)

    tup = await asaver.aget_tuple(config)
    assert tup is not None
    assert tup.pending_writes == expected_pending(tasks)
    assert len(tup.pending_writes) == 3 * 200


# -- (d) two savers, as two processes, alternating on one thread -----------------------------


class Process:
    """One "process": its own saver (own client, own caches) and its graph."""

    def __init__(self, saver: RedisSaver | AsyncRedisSaver) -> None:
        self.saver = saver
        self.graph = chat_graph(saver)
        self.asynchronous = isinstance(saver, AsyncRedisSaver)

    async def invoke(self, inp: Any, config: RunnableConfig) -> Any:
        if self.asynchronous:
            return await self.graph.ainvoke(inp, config)
        return self.graph.invoke(inp, config)

    async def view(self, config: RunnableConfig) -> tuple[dict[str, Any], list[Any]]:
        if self.asynchronous:
            state = await self.graph.aget_state(config)
            history = [s async for s in self.graph.aget_state_history(config)]
        else:
            state = self.graph.get_state(config)
            history = list(self.graph.get_state_history(config))
        return state.values, history

    async def thread_ids(self) -> set[str]:
        if isinstance(self.saver, AsyncRedisSaver):
            return {t.config["configurable"]["thread_id"] async for t in self.saver.alist(None)}
        return {t.config["configurable"]["thread_id"] for t in self.saver.list(None)}


async def open_process(stack: AsyncExitStack, kind: str, url: str, prefix: str) -> Process:
    if kind == "sync":
        return Process(stack.enter_context(RedisSaver.from_conn_string(url, key_prefix=prefix)))
    return Process(
        await stack.enter_async_context(AsyncRedisSaver.from_conn_string(url, key_prefix=prefix))
    )


@pytest.mark.parametrize("kinds", [("sync", "sync"), ("async", "async"), ("sync", "async")])
async def test_two_savers_alternate_on_one_thread(redis_url: str, kinds: tuple[str, str]) -> None:
    prefix, thread_id = unique_prefix(), "shared:{thread}"
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    async with AsyncExitStack() as stack:
        processes = [await open_process(stack, kind, redis_url, prefix) for kind in kinds]
        assert processes[0].saver.client is not processes[1].saver.client
        for turn in range(TURNS):
            # Even turns on the first process, odd ones on the second: each builds on
            # lists the other stored.
            result = await processes[turn % 2].invoke(turn_input(thread_id, turn), config)
            assert [m.id for m in result["messages"]] == expected_messages(thread_id, turn + 1)

        views = []
        for process in processes:
            values, history = await process.view(config)
            check_conversation(values, history, thread_id)
            views.append((values, [(s.config, s.parent_config, s.values) for s in history]))
        # Both processes see the very same thread.
        assert views[0] == views[1]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_thread_deleted_by_one_process_and_recreated_by_another(
    redis_url: str, kind: str
) -> None:
    """Process B deletes a thread (a user's "reset"); process A then starts it over.

    The new conversation must be whole, and listed by list(None) like any other thread.
    """
    prefix, thread_id = unique_prefix(), "reset-me"
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    async with AsyncExitStack() as stack:
        a, b = [await open_process(stack, kind, redis_url, prefix) for _ in range(2)]
        for turn in range(2):
            await a.invoke(turn_input(thread_id, turn), config)
        assert await b.thread_ids() == {thread_id}

        if isinstance(b.saver, AsyncRedisSaver):
            await b.saver.adelete_thread(thread_id)
        else:
            b.saver.delete_thread(thread_id)
        assert await a.thread_ids() == set()

        # The same inputs again: the lists A remembers from before the delete are gone.
        for turn in range(TURNS):
            await a.invoke(turn_input(thread_id, turn), config)
        values, history = await b.view(config)
        check_conversation(values, history, thread_id)
        assert await a.thread_ids() == {thread_id}
        assert await b.thread_ids() == {thread_id}


# -- a janitor deleting threads while others write -------------------------------------------


@pytest.fixture
def fast_thread_switches() -> Iterator[None]:
    # Switch threads as often as possible, so that interleavings which a real server's load
    # produces now and then happen within a short test.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_deletes_and_prunes_while_other_threads_write(
    saver: RedisSaver, fast_thread_switches: None
) -> None:
    """A cleanup job on a shared saver while conversations are written.

    Writers put list values (what a messages channel holds), which the saver remembers per
    thread; the janitor deletes and prunes other threads at the same time.
    """
    writers, puts = 6, 120
    errors: list[BaseException] = []
    done = threading.Event()

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
                done.set()

        return run

    def writer(w: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(puts):
                if done.is_set():
                    return
                thread_id = f"writer-{w}-{i}"
                checkpoint: Checkpoint = empty_checkpoint()
                version = saver.get_next_version(None, None)
                checkpoint["channel_values"] = {"messages": [f"m{j}" for j in range(i % 7 + 2)]}
                checkpoint["channel_versions"] = {"messages": version}
                metadata: CheckpointMetadata = {"source": "loop", "step": 0, "parents": {}}
                saver.put(
                    {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}},
                    checkpoint,
                    metadata,
                    {"messages": version},
                )

        return run

    def janitor(j: int) -> Callable[[], None]:
        def run() -> None:
            n = 0
            while not done.is_set():
                saver.delete_thread(f"gone-{j}-{n}")
                saver.prune([f"gone-{j}-{n}"], strategy="keep_latest")
                n += 1

        return run

    writer_threads = [threading.Thread(target=guarded(writer(w))) for w in range(writers)]
    janitors = [threading.Thread(target=guarded(janitor(j))) for j in range(2)]
    for t in janitors + writer_threads:
        t.start()
    for t in writer_threads:
        t.join()
    done.set()
    for t in janitors:
        t.join()

    assert errors == []
    written = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
    assert written == {f"writer-{w}-{i}" for w in range(writers) for i in range(puts)}
