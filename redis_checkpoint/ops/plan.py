"""The operations tools' driver: run a plan of ``steps.py`` steps on a sync or an asyncio client.

The operations tools (health checks, keyspace sampling, the CLI, the management API) are
written once as plans yielding :class:`~redis_checkpoint.steps.Send`,
:class:`~redis_checkpoint.steps.Primaries` and :class:`~redis_checkpoint.steps.SendToNode`;
any other step goes to the caller's own handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from redis_checkpoint.client import is_cluster
from redis_checkpoint.steps import Primaries, Send, SendToNode, adrive, asend, drive, send

__all__ = ["run_async", "run_sync"]

T = TypeVar("T")


def run_sync(
    client: Any, plan: Generator[Any, Any, T], other: Callable[[Any], Any] | None = None
) -> T:
    """Drive ``plan`` on ``client``; a step of another kind goes to ``other(step)``."""

    def handle(step: Any) -> Any:
        if isinstance(step, Send):
            return send(client, step.commands)
        if isinstance(step, Primaries):
            return client.get_primaries() if is_cluster(client) else [None]
        if isinstance(step, SendToNode):
            if step.node is None:
                return client.execute_command(*step.command)
            return client.execute_command(*step.command, target_nodes=step.node)
        return _other(other, step)

    return drive(plan, handle)


async def run_async(
    client: Any,
    plan: Generator[Any, Any, T],
    other: Callable[[Any], Awaitable[Any]] | None = None,
) -> T:
    """:func:`run_sync` on an asyncio client, with an async ``other``."""

    async def handle(step: Any) -> Any:
        if isinstance(step, Send):
            return await asend(client, step.commands)
        if isinstance(step, Primaries):
            if not is_cluster(client):
                return [None]
            await client.initialize()
            return client.get_primaries()
        if isinstance(step, SendToNode):
            if step.node is None:
                return await client.execute_command(*step.command)
            return await client.execute_command(*step.command, target_nodes=step.node)
        return await _other(other, step)

    return await adrive(plan, handle)


def _other(handler: Callable[[Any], Any] | None, step: Any) -> Any:
    if handler is None:
        raise TypeError(f"the plan asked for {step!r} and no handler was given")
    return handler(step)
