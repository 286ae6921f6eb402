"""A one-node LangGraph graph whose node is cached (CachePolicy), shared by the node cache tests."""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy


class State(TypedDict):
    question: str
    answer: str


def build(runs: list[str]) -> StateGraph[State, Any, State, State]:
    def expensive(state: State) -> dict[str, str]:
        runs.append(state["question"])
        return {"answer": state["question"].upper()}

    builder = StateGraph(State)
    builder.add_node("expensive", expensive, cache_policy=CachePolicy(ttl=60))
    builder.add_edge(START, "expensive")
    builder.add_edge("expensive", END)
    return builder
