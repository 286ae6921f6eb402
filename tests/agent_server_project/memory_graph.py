"""Graphs for the Agent Server test: one writes a memory into the store, one finds it by
vector search, one takes its time (a run to roll back). The server gives them its checkpointer
and store."""

import asyncio
from typing import TypedDict

from langgraph.config import get_store
from langgraph.graph import StateGraph


class State(TypedDict, total=False):
    user: str
    text: str
    query: str
    found: list[str]


async def write_memory(state: State) -> State:
    store = get_store()
    await store.aput(("memories", state["user"]), state["text"][:20], {"text": state["text"]})
    return {}


async def search_memories(state: State) -> State:
    store = get_store()
    items = await store.asearch(("memories", state["user"]), query=state["query"], limit=1)
    return {"found": [item.value["text"] for item in items]}


remember = StateGraph(State).add_node(write_memory).set_entry_point("write_memory").compile()
recall = StateGraph(State).add_node(search_memories).set_entry_point("search_memories").compile()


async def note(state: State) -> State:
    return {"text": state["text"]}


async def pause(state: State) -> State:
    if state["text"] == "slow":
        await asyncio.sleep(30)  # cancelled by the rollback long before
    return {"found": [state["text"]]}


slow = (
    StateGraph(State)
    .add_node(note)
    .add_node(pause)
    .add_edge("note", "pause")
    .set_entry_point("note")
    .compile()
)
