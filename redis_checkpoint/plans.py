"""Driving a sans-IO plan: the one loop every sync driver and every async driver runs, and the one
way they send a round trip of commands.

A plan is a generator that yields steps (commands to send, a pause, a computation to run) and
is sent back each step's result, or thrown the error it raised. The caches, the query cache and
the operations module each say how to carry out their steps (``handle``); this loop, written once
per flavour, does the rest. (The checkpoint saver's drivers also pass emitted results through,
so they keep a loop of their own.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

__all__ = ["adrive", "asend", "drive", "send"]

T = TypeVar("T")


def drive(plan: Generator[Any, Any, T], handle: Callable[[Any], Any]) -> T:
    """Run ``plan`` to its end, carrying out each step with ``handle``."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            step = plan.throw(error) if error is not None else plan.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            reply = handle(step)
        except Exception as exc:  # the plan decides: retry, fall back, or let it raise
            error = exc


async def adrive(plan: Generator[Any, Any, T], handle: Callable[[Any], Awaitable[Any]]) -> T:
    """:func:`drive` with an async ``handle``."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            step = plan.throw(error) if error is not None else plan.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            reply = await handle(step)
        except Exception as exc:
            error = exc


def send(client: Any, commands: tuple[tuple[Any, ...], ...]) -> list[Any]:
    """One round trip: a lone command directly, several in one pipeline (no transaction)."""
    if len(commands) == 1:
        return [client.execute_command(*commands[0])]
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(pipe.execute())


async def asend(client: Any, commands: tuple[tuple[Any, ...], ...]) -> list[Any]:
    """:func:`send` on an asyncio client."""
    if len(commands) == 1:
        return [await client.execute_command(*commands[0])]
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(await pipe.execute())
