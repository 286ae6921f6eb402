"""RedisSaver: the synchronous driver of the saver core (redis-py's sync client)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from redis.exceptions import ResponseError

from redis_checkpoint.checkpoint.base import RedisSaverBase
from redis_checkpoint.checkpoint.core import Call, Command, Emit, IterOp, Op
from redis_checkpoint.checkpoint.routing import Send
from redis_checkpoint.checkpoint.scripts import SCRIPTS
from redis_checkpoint.client import _describe as describe_client
from redis_checkpoint.client import check_connection, create_client, is_unavailable_error
from redis_checkpoint.plans import drive, resume
from redis_checkpoint.settings import Settings

T = TypeVar("T")
SyncClient = redis.Redis | redis.cluster.RedisCluster


class RedisSaver(RedisSaverBase):
    """A LangGraph checkpoint saver on plain Redis (>= 6.2, Valkey, Cluster), synchronous.

    ``graph.compile(checkpointer=saver)``. Every operation on a thread is one round trip;
    see :class:`RedisSaverBase` for the options. The async methods run the sync ones in a worker
    thread; use :class:`AsyncRedisSaver` in async applications.
    """

    def __init__(self, client: SyncClient, *, url: str | None = None, **options: Any) -> None:
        super().__init__(url=url or describe_client(client), **options)
        self.client = client
        # A plain client's round trips go over one held connection (see _Link); a cluster
        # client routes each command itself.
        pool = getattr(client, "connection_pool", None)
        self._link = _Link(client, pool) if isinstance(client, redis.Redis) and pool else None
        self._batch_lock = threading.Lock()
        self._waiting: list[_Slot] = []
        self._sending = False

    @classmethod
    @contextmanager
    def from_conn_string(
        cls,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        require_redis: bool = True,
        **options: Any,
    ) -> Iterator[RedisSaver]:
        """Connect to ``url`` (or REDIS_URL), set up, and close the client at the end.

        An unreachable Redis raises RedisUnavailableError naming the URL (without password),
        unless ``require_redis=False``: the saver then starts on its in-memory tier and moves to
        Redis once Redis answers.
        """
        settings = settings or Settings.from_env(url=url)
        client = create_client(settings)
        try:
            if require_redis:
                check_connection(client, settings.url)
            saver = cls(client, url=settings.url, settings=settings, **options)
            saver.setup()
            yield saver
        finally:
            client.close()

    def setup(self) -> None:
        """Load the scripts and warn about an evicting maxmemory-policy. Safe to call again."""
        try:
            for script in SCRIPTS.values():
                self.client.script_load(script.source)
            # CONFIG may be disabled (managed Redis): nothing to check then.
            with contextlib.suppress(ResponseError):
                self._check_policy(self.client.config_get("maxmemory-policy"))
        except Exception as exc:
            if not (is_unavailable_error(exc) and self.memory is not None):
                raise
            self._router.failed(exc)

    # -- the driver: send what the router asks for ---------------------------------------------

    def _drive(self, gen: Generator[Send | Emit, Any, T]) -> Generator[CheckpointTuple, None, T]:
        done, item = resume(gen, None, None)
        while not done:
            if isinstance(item, Emit):
                yield from item.tuples
                done, item = resume(gen, None, None)
                continue
            try:
                reply, error = self._send(item.call), None
            except Exception as exc:
                reply, error = None, exc
            done, item = resume(gen, reply, error)
        return item  # type: ignore[no-any-return]

    def _run(self, name: str, op: Op[T]) -> T:
        return self._finish(name, self._router.run(name, op))

    def _finish(self, name: str, gen: Generator[Send | Emit, Any, T]) -> T:
        drive = self._drive(gen)
        try:
            next(drive)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        raise RuntimeError(f"{name} emitted results")

    def _iterate(self, name: str, op: IterOp) -> Iterator[CheckpointTuple]:
        yield from self._drive(self._router.run(name, op))

    def _send(self, call: Call) -> list[Any]:
        """Send a Call. Calls other threads make while a round trip is in flight go together in
        the next one (auto-pipelining); each caller still waits for its own replies."""
        slot = _Slot(call)
        with self._batch_lock:
            self._waiting.append(slot)
            leader = not self._sending
            self._sending = True
        if leader:
            while True:
                with self._batch_lock:
                    batch, self._waiting = self._waiting, []
                    if not batch:
                        self._sending = False
                        break
                try:
                    results = self._send_batch([waiting.call for waiting in batch])
                except Exception as exc:  # the connection failed: every Call of the batch did
                    results = [exc] * len(batch)
                except BaseException as exc:  # interrupted: release every waiting caller
                    with self._batch_lock:
                        batch += self._waiting
                        self._waiting, self._sending = [], False
                    for waiting in batch:
                        waiting.result = RuntimeError(f"the round trip was interrupted ({exc!r})")
                        waiting.done.set()
                    raise
                for waiting, result in zip(batch, results, strict=True):
                    waiting.result = result
                    waiting.done.set()
        slot.done.wait()
        if isinstance(slot.result, Exception):
            raise slot.result
        return slot.result

    def _send_batch(self, calls: list[Call]) -> list[list[Any] | Exception]:
        return drive(self._router.batch(calls), self._round_trip)

    def _round_trip(self, request: list[Command] | None) -> list[Any] | None:
        """One step of Router.batch: send the commands, or (None) load the scripts first."""
        if request is None:
            for script in SCRIPTS.values():
                self.client.script_load(script.source)
            return None
        if self._link is not None:
            return self._link.exchange(request)
        if len(request) == 1:
            try:
                return [self._command(self.client, request[0])]
            except ResponseError as exc:
                if is_unavailable_error(exc):
                    raise
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for command in request:
            self._command(pipe, command)
        return pipe.execute(raise_on_error=False)

    @staticmethod
    def _command(target: Any, command: Command) -> Any:
        if command.script:
            # execute_command, not evalsha(): redis-py's cluster pipeline refuses the latter.
            sha = SCRIPTS[command.name].sha
            return target.execute_command(
                "EVALSHA", sha, len(command.keys), *command.keys, *command.args
            )
        return target.execute_command(command.name, *command.keys, *command.args)

    # -- BaseCheckpointSaver -------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run("get_tuple", self.core.get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return self._iterate(
            "list", self.core.list_checkpoints(config, filter=filter, before=before, limit=limit)
        )

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run("put", self.core.put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._run("put_writes", self.core.put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run("delete_thread", self.core.delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run("delete_for_runs", self.core.delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run("copy_thread", self.core.copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._run("prune", self.core.prune(thread_ids, strategy))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self._run("delta_history", self.core.delta_history(config, channels))

    # -- operations ----------------------------------------------------------------------------

    def ping(self) -> bool:
        """Health check through this saver's client: an answer closes the breaker and writes
        back what the memory tier took during an outage (see :meth:`Router.probe`)."""
        return self._finish("ping", self._router.probe())

    def list_threads(self) -> Sequence[str]:
        """Every thread id the saver holds in Redis (sorted; needs Redis)."""
        return self._run("list_threads", self.core.list_threads())

    # -- thread TTLs ---------------------------------------------------------------------------

    def pin_thread(self, thread_id: str) -> None:
        """Exempt a thread from expiry until :meth:`unpin_thread`."""
        self._run("pin_thread", self.core.set_ttl(thread_id, "pin"))

    def unpin_thread(self, thread_id: str) -> float | None:
        """Give a pinned thread the saver's TTL again; returns its seconds left."""
        return self._run("unpin_thread", self.core.set_ttl(thread_id, "unpin"))

    def set_thread_ttl(self, thread_id: str, seconds: float) -> float | None:
        """Give one thread its own TTL (kept across writes, until unpinned)."""
        return self._run("set_thread_ttl", self.core.set_ttl(thread_id, "set", int(seconds * 1000)))

    def thread_ttl(self, thread_id: str) -> float | None:
        """Seconds before the thread expires; None when it never does."""
        return self._run("thread_ttl", self.core.set_ttl(thread_id, "get"))

    # -- async forms: the sync client in a worker thread ---------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(
            lambda: [*self.list(config, filter=filter, before=before, limit=limit)]
        )
        for tup in found:
            yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await asyncio.to_thread(
            lambda: self.get_delta_channel_history(config=config, channels=channels)
        )


class _Slot:
    """A Call waiting for the thread that sends the next batch."""

    __slots__ = ("call", "done", "result")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.done = threading.Event()
        self.result: list[Any] | Exception = []


class _Link:
    """One connection of the client's pool, held by the saver's sender.

    Only one batch is in flight at a time (see ``RedisSaver._send``), so the sender keeps one
    connection instead of checking one out of the pool, and wrapping it in redis-py's retry, for
    every round trip: that bookkeeping cost more CPU than the rest of a small call. A dropped
    connection is reopened once, as redis-py's own retry would (the scripts are idempotent).
    """

    def __init__(self, client: redis.Redis, pool: Any) -> None:
        self.client = client
        self.pool = pool
        self.connection: Any = None

    def exchange(self, request: Sequence[Command]) -> list[Any]:
        commands = [words(command) for command in request]
        for attempt in (0, 1):
            reused = self.connection is not None
            if not reused:
                self.connection = self.pool.get_connection()
            connection = self.connection
            try:
                connection.send_packed_command(connection.pack_commands(commands))
                return [self._reply(connection, command) for command in request]
            except BaseException as exc:
                self._drop()
                if not reopen_after(exc, attempt, reused):
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


def words(command: Command) -> tuple[Any, ...]:
    if command.script:
        sha = SCRIPTS[command.name].sha
        return ("EVALSHA", sha, len(command.keys), *command.keys, *command.args)
    return (command.name, *command.keys, *command.args)
