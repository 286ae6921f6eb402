"""The one step vocabulary: what a plan yields, and the loop that drives a plan.

Every operation of the package (the saver's, the cache engine's, the query cache's, the
operations tools') is written once as a *plan*: a generator that yields steps and is sent back
each step's result, or thrown the error the step raised. A plan does no I/O. A sync driver and an
async driver carry out the steps (:func:`drive` and :func:`adrive` are the loop both run), so the
sync and async faces share every line of logic; :func:`iterate` and :func:`aiterate` also hand
out what a plan emits as it goes (:class:`Emit`, the saver's ``list``). The steps, by who yields
them:

* any plan: :class:`Send` (one round trip of commands), :class:`LoadScripts` (after NOSCRIPT),
  :class:`Sleep`, :class:`Compute` (run the caller's function);
* the operations tools: :class:`Primaries` and :class:`SendToNode` (per-node commands on a cluster);
* plans over an object whose sync and asyncio classes share method names (a connection's
  handshake, the query cache over its engine): :class:`Invoke`;
* the saver: its core yields :class:`Call` (the commands of one thread's round trip) and
  :class:`Emit`; its router turns Calls into :class:`Dispatch`, :class:`Refresh`,
  :class:`AwaitWriteBack` and :class:`SyncJournal` for the saver's drivers.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from redis_checkpoint.checkpoint.journal import Journal
    from redis_checkpoint.checkpoint.routing import Shard

__all__ = [
    "AwaitWriteBack",
    "Call",
    "Command",
    "Compute",
    "Dispatch",
    "Emit",
    "Invoke",
    "Kind",
    "LoadScripts",
    "Plan",
    "Primaries",
    "Refresh",
    "Script",
    "Send",
    "SendToNode",
    "Sleep",
    "SyncJournal",
    "adrive",
    "aiterate",
    "asend",
    "drive",
    "iterate",
    "resume",
    "send",
    "send_with_scripts",
]

T = TypeVar("T")
#: A plan: yields steps, is sent their results, returns its own.
Plan = Generator[Any, Any, T]


# -- scripts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Script:
    """A Lua script called by its SHA1 (EVALSHA)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        # EVALSHA names the script by this digest; computed once, not per call.
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# -- steps of any plan -------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send these commands in one round trip (a pipeline when there are several); the result
    is the list of their replies."""

    commands: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class LoadScripts:
    """Load these scripts (the server answered NOSCRIPT: it restarted or failed over)."""

    scripts: tuple[Script, ...]


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds (a waiter polling for another's result, a back-off)."""

    seconds: float


@dataclass(frozen=True)
class Compute:
    """Run the caller's computation; the result is its return value (or its error)."""


def send_with_scripts(
    commands: tuple[tuple[Any, ...], ...], scripts: Sequence[Script]
) -> Generator[Send | LoadScripts, Any, list[Any]]:
    """:class:`Send` for commands that call scripts by SHA: after NOSCRIPT the scripts are
    loaded and the round trip is sent once more (the scripts are idempotent)."""
    try:
        replies: list[Any] = yield Send(commands)
    except NoScriptError:
        yield LoadScripts(tuple(scripts))
        replies = yield Send(commands)
    return replies


# -- steps of the operations tools -------------------------------------------------------------


@dataclass(frozen=True)
class Primaries:
    """The nodes to run per-node commands on: a cluster's primaries, or ``[None]`` for the
    client's only server."""


@dataclass(frozen=True)
class SendToNode:
    """One keyless command (SCAN, INFO) on one node; ``node`` None is the only server."""

    node: Any
    command: tuple[Any, ...]


# -- calling a method of the driver's object --------------------------------------------------


@dataclass(frozen=True)
class Invoke:
    """Call this method of the object the driver holds (a connection, a cache engine); the
    result is its return value. A sync class and its asyncio twin have the same method names,
    so one plan serves both (the async driver awaits the call)."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def on(self, target: Any) -> Any:
        """The call on ``target`` (a coroutine when ``target`` is an asyncio object)."""
        return getattr(target, self.method)(*self.args, **self.kwargs)


# -- steps of the saver ------------------------------------------------------------------------

Kind = Literal["read", "write", "admin"]


class Command(NamedTuple):
    """One Redis command of the saver: a script of ``checkpoint/scripts.py`` by name, or a
    plain command word."""

    name: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]
    script: bool = True


@dataclass
class Call:
    """The commands of one round trip on one thread's keys (or across threads: ``admin``).

    ``kind`` tells the fallback tier what it may do with it: reads and writes of a single thread
    can be served from memory while Redis is away; ``admin`` calls span threads and need Redis.
    """

    commands: list[Command]
    kind: Kind
    thread_id: str | None = None


@dataclass
class Emit:
    """Results an iterating operation (``list``) hands out before its next round trip."""

    items: list[Any]


@dataclass
class Dispatch:
    """Send each Call to its shard; the result is each one's replies or the error it raised."""

    items: list[tuple[Call, Shard]]


@dataclass
class Refresh:
    """Reread the cluster's slot map (a failover moves slots to the promoted replica)."""


@dataclass
class AwaitWriteBack:
    """Wait until another caller's write-back of this thread is answered. The result is True
    when the driver waited, False when no write-back of the thread was in flight."""

    thread_id: str


@dataclass
class SyncJournal:
    """Make the outage journal durable up to ``upto`` (fdatasync) before the write that
    appended to it is acknowledged. The sync driver runs :meth:`run` in place; the async one in
    a worker thread, so other coroutines go on meanwhile (and concurrent ones share an
    fdatasync)."""

    journal: Journal
    upto: int

    def run(self) -> None:
        self.journal.sync(self.upto)


# -- the loop ----------------------------------------------------------------------------------


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


def iterate(plan: Generator[Any, Any, T], handle: Callable[[Any], Any]) -> Generator[Any, None, T]:
    """:func:`drive` for a plan that also yields :class:`Emit`: each emitted item is handed to
    the caller, and the plan goes on when the caller asks for the next; returns the plan's
    value. (A plan that never emits is cheaper to run with :func:`drive`.)"""
    done, step = resume(plan, None, None)
    while not done:
        if isinstance(step, Emit):
            yield from step.items
            done, step = resume(plan, None, None)
            continue
        try:
            reply, error = handle(step), None
        except Exception as exc:
            reply, error = None, exc
        done, step = resume(plan, reply, error)
    return step  # type: ignore[no-any-return]


async def aiterate(
    plan: Generator[Any, Any, object], handle: Callable[[Any], Awaitable[Any]]
) -> AsyncIterator[Any]:
    """:func:`iterate` with an async ``handle``: the emitted items, as an async iterator (an
    async generator returns no value: the plan's own is dropped)."""
    done, step = resume(plan, None, None)
    while not done:
        if isinstance(step, Emit):
            for item in step.items:
                yield item
            done, step = resume(plan, None, None)
            continue
        try:
            reply, error = await handle(step), None
        except Exception as exc:
            reply, error = None, exc
        done, step = resume(plan, reply, error)


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


def carry_out(step: Any, client: Any, target: Any) -> Any:
    """The driver of a plan of :class:`Send`, :class:`LoadScripts` and :class:`Invoke` steps:
    Redis commands on ``client``, method calls on ``target``."""
    if isinstance(step, Send):
        return send(client, step.commands)
    if isinstance(step, LoadScripts):
        for script in step.scripts:
            client.script_load(script.source)
        return None
    if isinstance(step, Invoke):
        return step.on(target)
    raise RuntimeError(f"unexpected step {step!r}")


async def acarry_out(step: Any, client: Any, target: Any) -> Any:
    """:func:`carry_out` on an asyncio client and ``target``."""
    if isinstance(step, Send):
        return await asend(client, step.commands)
    if isinstance(step, LoadScripts):
        for script in step.scripts:
            await client.script_load(script.source)
        return None
    if isinstance(step, Invoke):
        return await step.on(target)
    raise RuntimeError(f"unexpected step {step!r}")
