"""The saver's wire: one held connection per shard, and what a round trip's commands look like.

Both drivers (``saver.py`` and ``aio.py``) send every batch of :meth:`Router.batch` through a
:class:`Link` or :class:`AsyncLink`: the commands as words (a script by EVALSHA), the replies as
redis-py's client would hand them back, a dropped connection reopened once, and the scripts
loaded on the same connection when the router asks for it (:class:`LoadScripts`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.exceptions import ResponseError

from redis_checkpoint.checkpoint.scripts import SCRIPTS
from redis_checkpoint.failures import is_unavailable_error
from redis_checkpoint.steps import Command, LoadScripts

# redis-py packs each word through its encoder in Python, even when hiredis is installed;
# our words are bytes, str and int already, which hiredis packs in C.
hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as hiredis_pack
except ImportError:  # hiredis is an optional extra
    hiredis_pack = None

if sys.version_info >= (3, 11):
    from asyncio import timeout as batch_timeout
else:  # redis-py depends on async-timeout there
    from async_timeout import timeout as batch_timeout

#: What a driver sends on a held connection: the router's commands, or its LoadScripts step.
Request = Sequence[Command] | LoadScripts


class _Held:
    """One connection of a client's pool, held by a shard's sender.

    Only one batch per shard is in flight at a time (the drivers' queues see to it), so the
    sender keeps one connection instead of checking one out of the pool, and wrapping it in
    redis-py's retry, for every round trip: that bookkeeping cost more CPU than the rest of a
    small call. A dropped connection is reopened once, as redis-py's own retry would (the scripts
    are idempotent), when ``may_reopen`` (the router's word, asked only then) allows it. WAIT
    counts this connection's writes, so it rides on the same one.
    """

    def __init__(self, client: Any, may_reopen: Callable[[], bool]) -> None:
        self.client = client  # its response callbacks shape the replies (see as_reply)
        self.pool: Any = client.connection_pool
        self.connection: Any = None
        self.may_reopen = may_reopen


class Link(_Held):
    """A held connection of redis-py's sync client."""

    def exchange(self, request: Request) -> list[Any]:
        """Send the commands in one round trip and read their replies (see :func:`as_reply`)."""
        sent = script_loads(request) if isinstance(request, LoadScripts) else request
        commands = [words(command) for command in sent]
        for attempt in (0, 1):
            reused = self.connection is not None
            if not reused:
                self.connection = self.pool.get_connection()
            connection = self.connection
            try:
                connection.send_packed_command(packed(connection, commands))
                return [self._reply(connection, command) for command in sent]
            except BaseException as exc:
                self._drop()
                if not (reopen_after(exc, attempt, reused) and self.may_reopen()):
                    raise
        raise AssertionError("unreachable")

    def _reply(self, connection: Any, command: Command) -> Any:
        try:
            response = connection.read_response()
        except ResponseError as exc:
            response = exc
        return as_reply(self.client, command, response)

    def _drop(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.disconnect()
            self.pool.release(connection)

    def close(self) -> None:
        self._drop()


class AsyncLink(_Held):
    """A held connection of redis.asyncio's client.

    Its replies are read under one timeout for the whole batch: redis-py's per-reply timeout
    schedules and cancels a timer for every reply, which cost more than parsing it.
    """

    async def exchange(self, request: Request) -> list[Any]:
        """:meth:`Link.exchange` on redis.asyncio."""
        sent = script_loads(request) if isinstance(request, LoadScripts) else request
        commands = [words(command) for command in sent]
        for attempt in (0, 1):
            reused = self.connection is not None
            if not reused:
                self.connection = await self.pool.get_connection()
            connection = self.connection
            try:
                await connection.send_packed_command(packed(connection, commands))
                async with batch_timeout(connection.socket_timeout):
                    return [await self._reply(connection, command) for command in sent]
            except BaseException as exc:
                await self._drop()
                if not (reopen_after(exc, attempt, reused) and self.may_reopen()):
                    raise
        raise AssertionError("unreachable")

    async def _reply(self, connection: Any, command: Command) -> Any:
        try:
            response = await connection.read_response(timeout=math.inf)
        except ResponseError as exc:
            response = exc
        return as_reply(self.client, command, response)

    async def _drop(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.disconnect()
            await self.pool.release(connection)

    async def close(self) -> None:
        await self._drop()


def reopen_after(error: BaseException, attempt: int, reused: bool) -> bool:
    """After an exchange failed (its connection is then dropped: its state is unknown), send
    again on a new connection? Once, when a held connection was found closed (the server dropped
    it while it was idle, or restarted); the scripts are idempotent. Not after a timeout: a slow
    server would then cost every call two timeouts before the breaker opens."""
    return isinstance(error, redis.ConnectionError) and reused and attempt == 0


def as_reply(client: Any, command: Command, response: Any) -> Any:
    """A reply as redis-py's client would hand it back (its response callback applied); a
    script's error is the reply, an unavailable server raises."""
    if isinstance(response, ResponseError):
        if is_unavailable_error(response):
            raise response
        return response
    if command.script:
        return response
    callbacks: Mapping[str, Any] = client.response_callbacks
    callback = callbacks.get(command.name)
    return callback(response) if callback else response


def script_loads(step: LoadScripts) -> list[Command]:
    """What a :class:`LoadScripts` step (the server answered NOSCRIPT) sends: the scripts,
    loaded on the connection that got the NOSCRIPT."""
    return [Command("SCRIPT", (), ("LOAD", script.source), False) for script in step.scripts]


def packed(connection: Any, commands: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """The commands in Redis's protocol, by hiredis when it is there, else by the connection;
    one buffer for a batch, so the sync socket sends it in one call."""
    if hiredis_pack is None:
        return connection.pack_commands(commands)  # type: ignore[no-any-return]
    if len(commands) == 1:
        return [hiredis_pack(commands[0])]
    return [b"".join([hiredis_pack(command) for command in commands])]


def words(command: Command) -> tuple[Any, ...]:
    if command.script:
        sha = SCRIPTS[command.name].sha
        return ("EVALSHA", sha, len(command.keys), *command.keys, *command.args)
    return (command.name, *command.keys, *command.args)
