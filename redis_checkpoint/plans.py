"""Driving a sans-IO plan: the one loop every sync driver and every async driver runs, and the one
way they send a round trip of commands.

A plan is a generator that yields steps (commands to send, a pause, a computation to run) and
is sent back each step's result, or thrown the error it raised. The caches, the query cache and
the operations module each say how to carry out their steps (``handle``); this loop, written once
per flavour, does the rest. (The checkpoint saver's drivers also pass emitted results through,
so they keep a loop of their own around the same :func:`resume`.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

__all__ = ["adrive", "asend", "drive", "resume", "send"]

T = TypeVar("T")


def resume(plan: Generator[Any, Any, T], reply: Any, error: Exception | None) -> tuple[bool, Any]:
    """Send ``plan`` the result of its last step, or throw it the error the step raised:
    (True, its return value) when it has ended, else (False, its next step)."""
    try:
        return False, plan.throw(error) if error is not None else plan.send(reply)
    except StopIteration as stop:
        return True, stop.value


def drive(plan: Generator[Any, Any, T], handle: Callable[[Any], Any]) -> T:
    """Run ``plan`` to its end, carrying out each step with ``handle``."""
    done, step = resume(plan, None, None)
    while not done:
        try:
            reply, error = handle(step), None
        except Exception as exc:  # the plan decides: retry, fall back, or let it raise
            reply, error = None, exc
        done, step = resume(plan, reply, error)
    return step  # type: ignore[no-any-return]


async def adrive(plan: Generator[Any, Any, T], handle: Callable[[Any], Awaitable[Any]]) -> T:
    """:func:`drive` with an async ``handle``."""
    done, step = resume(plan, None, None)
    while not done:
        try:
            reply, error = await handle(step), None
        except Exception as exc:
            reply, error = None, exc
        done, step = resume(plan, reply, error)
    return step  # type: ignore[no-any-return]


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
