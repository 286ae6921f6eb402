"""Run a plan of Redis round trips on a sync or an asyncio client (the ops modules' one driver).

A plan is a generator that yields the commands of one round trip (a tuple of command tuples) and
gets back their replies, or the error thrown in; it returns its result. The operations tools
(health checks, keyspace sampling, the CLI) are written once as plans and run by either driver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from redis_checkpoint.client import is_cluster
from redis_checkpoint.plans import adrive, asend, drive, send

__all__ = [
    "PRIMARIES",
    "Commands",
    "OnNode",
    "Plan",
    "run_async",
    "run_sync",
    "send_async",
    "send_sync",
]

T = TypeVar("T")
Commands = tuple[Any, ...]  # command tuples, or one OnNode
Plan = Generator[Any, Any, T]


@dataclass(frozen=True)
class OnNode:
    """A command for one node of a cluster (keyless commands such as SCAN); ``node`` None is
    the client's only server."""

    node: Any
    command: tuple[Any, ...]


class _Primaries:
    def __repr__(self) -> str:
        return "PRIMARIES"


#: A step asking for the nodes to run per-node commands on: a cluster's primaries, or [None].
PRIMARIES: Any = _Primaries()


def send_sync(client: Any, commands: Commands) -> Any:
    """One round trip: a lone command directly, several in one pipeline."""
    if commands is PRIMARIES:
        return client.get_primaries() if is_cluster(client) else [None]
    if len(commands) == 1 and isinstance(commands[0], OnNode):
        return [_on_node(client, commands[0])]
    return send(client, commands)


async def send_async(client: Any, commands: Commands) -> Any:
    if commands is PRIMARIES:
        if not is_cluster(client):
            return [None]
        await client.initialize()
        return client.get_primaries()
    if len(commands) == 1 and isinstance(commands[0], OnNode):
        return [await _on_node(client, commands[0])]
    return await asend(client, commands)


def _on_node(client: Any, step: OnNode) -> Any:
    if step.node is None:
        return client.execute_command(*step.command)
    return client.execute_command(*step.command, target_nodes=step.node)


def run_sync(
    client: Any, plan: Generator[Any, Any, T], other: Callable[[Any], Any] | None = None
) -> T:
    """Drive ``plan``; a step that is not a tuple of commands goes to ``other(step)``."""

    def handle(step: Any) -> Any:
        if isinstance(step, tuple) or step is PRIMARIES:
            return send_sync(client, step)
        return _other(other, step)

    return drive(plan, handle)


async def run_async(
    client: Any,
    plan: Generator[Any, Any, T],
    other: Callable[[Any], Awaitable[Any]] | None = None,
) -> T:
    async def handle(step: Any) -> Any:
        if isinstance(step, tuple) or step is PRIMARIES:
            return await send_async(client, step)
        return await _other(other, step)

    return await adrive(plan, handle)


def _other(handler: Callable[[Any], Any] | None, step: Any) -> Any:
    if handler is None:
        raise TypeError(f"the plan asked for {step!r} and no handler was given")
    return handler(step)
