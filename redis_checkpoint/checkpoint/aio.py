"""AsyncRedisSaver: the asyncio driver of the saver core (redis.asyncio).

The same path as :class:`RedisSaver`'s: each public method hands the core's plan to the router
and carries out the steps it yields with :func:`~redis_checkpoint.steps.adrive` (``alist`` with
:func:`~redis_checkpoint.steps.aiterate`); a shard's queue is sent by one task at a time on the
shard's held connection (``wire.py``). The in-memory tier is the router's business only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, get_args

import redis
import redis.asyncio
import redis.asyncio.cluster
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)

from redis_checkpoint.checkpoint.base import RedisSaverBase, SaverOptions, check_client
from redis_checkpoint.checkpoint.core import Op
from redis_checkpoint.checkpoint.journal import Journal
from redis_checkpoint.checkpoint.routing import Shard, Step
from redis_checkpoint.checkpoint.wire import AsyncLink, Request
from redis_checkpoint.client import AsyncRedisClient, aconnected, describe_client
from redis_checkpoint.errors import FallbackJournalError
from redis_checkpoint.settings import Settings
from redis_checkpoint.steps import (
    AwaitWriteBack,
    Call,
    Dispatch,
    Emit,
    Invoke,
    Refresh,
    Sleep,
    SyncJournal,
    adrive,
    aiterate,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

T = TypeVar("T")


class AsyncRedisSaver(RedisSaverBase):
    """A LangGraph checkpoint saver on plain Redis, on redis.asyncio.

    Same storage, options and behaviour as :class:`RedisSaver`. The sync methods may be called
    from another thread than the event loop's (as LangGraph does for sync graph calls).
    """

    client: AsyncRedisClient

    def __init__(
        self,
        client: AsyncRedisClient,
        *,
        url: str | None = None,
        settings: Settings | None = None,
        **options: Unpack[SaverOptions],
    ) -> None:
        check_client(client, get_args(AsyncRedisClient), "AsyncRedisSaver")
        self.client = client  # before the base's wiring: a cluster's router locates keys on it
        super().__init__(url=url or describe_client(client), settings=settings, **options)
        # As in RedisSaver: one queue and one held connection per shard.
        self._queues: dict[str, _AsyncQueue] = {}
        self._journal_syncs = _JournalSyncs()
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None

    @classmethod
    @asynccontextmanager
    async def from_conn_string(
        cls,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        require_redis: bool = True,
        **options: Unpack[SaverOptions],
    ) -> AsyncIterator[AsyncRedisSaver]:
        """Connect to ``url`` (or REDIS_URL), set up, and close the client at the end."""
        async with aconnected(url, settings, check=require_redis) as (client, settings):
            saver = cls(client, url=settings.url, settings=settings, **options)
            await saver.asetup()
            try:
                yield saver
            finally:
                await saver.aclose()

    async def asetup(self) -> None:
        """Load the scripts and warn about an evicting maxmemory-policy; write back what an
        adopted journal owes. Safe to call again."""
        self.loop = asyncio.get_running_loop()
        await adrive(self._setup_plan(), self._step)

    async def aclose(self) -> None:
        """Write back what the in-memory tier still owes Redis (trying for up to
        ``close_timeout`` seconds), log at ERROR what it could not, and drop the held
        connections. The client itself is the caller's (``from_conn_string`` closes its own)."""
        report = await adrive(self._router.close(self.close_timeout), self._step)
        self._closed(report)
        queues, self._queues = list(self._queues.values()), {}
        for queue in queues:
            await queue.close()

    async def __aenter__(self) -> AsyncRedisSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def setup(self) -> None:
        self._sync(self.asetup())

    # -- the driver: send what the router asks for ---------------------------------------------

    async def _step(self, step: Step | Invoke | Emit) -> Any:
        if isinstance(step, Dispatch):
            return await self._send_all(step.items)
        if isinstance(step, Refresh):
            await self.client.nodes_manager.initialize()  # type: ignore[union-attr]
        elif isinstance(step, AwaitWriteBack):
            loop = asyncio.get_running_loop()
            answered: asyncio.Future[None] = loop.create_future()

            def wake() -> None:  # from whichever thread answered the write-back
                loop.call_soon_threadsafe(_settle_if_pending, answered)

            if not self._router.when_written_back(step.thread_id, wake):
                return False
            await answered
            return True
        elif isinstance(step, SyncJournal):
            await self._journal_syncs.wait(step)
        elif isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, Invoke):  # asetup's calls on the client
            return await step.on(self.client)
        else:  # an Emit: only alist() hands out results as they come (see aiterate)
            raise RuntimeError(f"unexpected step {step!r}")
        return None

    async def _arun(self, name: str, op: Op[T]) -> T:
        return await adrive(self._router.run(name, op), self._step)

    async def _send_all(self, items: Sequence[tuple[Call, Shard]]) -> list[list[Any] | Exception]:
        """Send Calls, each on its shard's queue. Calls made while a shard's round trip is in
        flight go together in its next one (auto-pipelining): many concurrent conversations
        share round trips, each caller still waits for its own replies."""
        loop = asyncio.get_running_loop()
        futures = []
        for call, shard in items:
            queue = self._queues.get(shard.name)
            if queue is None:
                queue = self._queues[shard.name] = _AsyncQueue(shard)
            future: asyncio.Future[list[Any] | Exception] = loop.create_future()
            queue.waiting.append((call, future))
            if queue.sender is None or queue.sender.done():
                queue.sender = asyncio.ensure_future(self._send_waiting(queue))
            futures.append(future)
        return [await future for future in futures]

    async def _send_waiting(self, queue: _AsyncQueue) -> None:
        while queue.waiting:
            batch, queue.waiting = queue.waiting, []
            try:
                results = await adrive(
                    self._router.batch([call for call, _ in batch], queue.shard),
                    lambda request: self._round_trip(queue, request),
                )
            except Exception as exc:  # the connection failed: every Call of the batch did
                results = [exc] * len(batch)
            except BaseException as exc:  # cancelled: release every waiting caller
                for _, future in batch + queue.waiting:
                    if not future.done():
                        future.set_exception(
                            RuntimeError(f"the round trip was interrupted ({exc!r})")
                        )
                queue.waiting = []
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # else its caller was cancelled
                    future.set_result(result)

    async def _round_trip(self, queue: _AsyncQueue, request: Request) -> list[Any]:
        """One step of Router.batch on the shard's held connection: send the commands, or
        load the scripts (LoadScripts, after a NOSCRIPT)."""
        if queue.link is None:
            may_reopen = functools.partial(self._router.may_reopen, queue.shard)
            queue.link = AsyncLink(self._shard_client(queue), may_reopen)
        return await queue.link.exchange(request)

    def _shard_client(self, queue: _AsyncQueue) -> redis.asyncio.Redis:
        if not isinstance(self.client, redis.asyncio.cluster.RedisCluster):
            return self.client
        node = self._cluster_node(queue.shard.name)
        # A plain client of the node, for the held connection (the cluster client's own
        # connections are checked out per command).
        pool = redis.asyncio.ConnectionPool(
            connection_class=node.connection_class, max_connections=4, **node.connection_kwargs
        )
        queue.own_pool = pool
        return redis.asyncio.Redis(connection_pool=pool)

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the saver's loop from another thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self.loop is None or running is self.loop:
            coro.close()
            raise asyncio.InvalidStateError(
                "Synchronous calls to AsyncRedisSaver are only allowed from a thread other than "
                "the event loop's; in async code use the a-prefixed methods (aget_tuple, ...), "
                "or use RedisSaver"
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    # -- BaseCheckpointSaver (async) -----------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._arun("get_tuple", self.core.get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        op = self.core.list_checkpoints(config, filter=filter, before=before, limit=limit)
        async for tup in aiterate(self._router.run("list", op), self._step):
            yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._arun("put", self.core.put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._arun("put_writes", self.core.put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun("delete_thread", self.core.delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._arun("delete_for_runs", self.core.delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._arun("copy_thread", self.core.copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._arun("prune", self.core.prune(thread_ids, strategy))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await self._arun("delta_history", self.core.delta_history(config, channels))

    async def aping(self) -> bool:
        """Health check through this saver's connections: an answer closes a breaker and
        writes back what the memory tier took during an outage."""
        return bool(await adrive(self._router.probe(), self._step))

    async def alist_threads(self) -> Sequence[str]:
        """Every thread id the saver holds in Redis (sorted; needs Redis)."""
        return await self._arun("list_threads", self.core.list_threads())

    async def apin_thread(self, thread_id: str) -> None:
        await self._arun("pin_thread", self.core.set_ttl(thread_id, "pin"))

    async def aunpin_thread(self, thread_id: str) -> float | None:
        return await self._arun("unpin_thread", self.core.set_ttl(thread_id, "unpin"))

    async def aset_thread_ttl(self, thread_id: str, seconds: float) -> float | None:
        return await self._arun(
            "set_thread_ttl", self.core.set_ttl(thread_id, "set", int(seconds * 1000))
        )

    async def athread_ttl(self, thread_id: str) -> float | None:
        return await self._arun("thread_ttl", self.core.set_ttl(thread_id, "get"))

    async def aset_thread_max_history(self, thread_id: str, max_history: int | None) -> int:
        """As :meth:`RedisSaver.set_thread_max_history`."""
        return await self._arun(
            "set_thread_max_history", self.core.limit_history(thread_id, max_history)
        )

    # -- sync forms, from other threads --------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before, limit=limit)]

        yield from self._sync(collect())

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._sync(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._sync(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._sync(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._sync(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._sync(self.aprune(thread_ids, strategy=strategy))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self._sync(self.aget_delta_channel_history(config=config, channels=channels))


class _AsyncQueue:
    """The Calls waiting for a shard's next round trip, its sender and held connection."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.waiting: list[tuple[Call, asyncio.Future[list[Any] | Exception]]] = []
        self.sender: asyncio.Future[None] | None = None
        self.link: AsyncLink | None = None
        self.own_pool: redis.asyncio.ConnectionPool | None = None

    async def close(self) -> None:
        if self.link is not None:
            await self.link.close()
        if self.own_pool is not None:
            await self.own_pool.disconnect()


class _JournalSyncs:
    """How the async driver carries out :class:`SyncJournal`: the fdatasync runs in a worker
    thread while other coroutines go on, one at a time; the writes appended meanwhile wait for
    the next, which covers them all (group commit without a thread parked per write)."""

    def __init__(self) -> None:
        self.waiting: list[tuple[SyncJournal, asyncio.Future[None]]] = []
        self.running = False

    async def wait(self, step: SyncJournal) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.waiting.append((step, future))
        if not self.running:
            self._start(loop, step.journal)
        await future

    def _start(self, loop: asyncio.AbstractEventLoop, journal: Journal) -> None:
        self.running = True
        # After the callbacks already due: the writes they make share this fdatasync.
        loop.call_soon(self._begin, loop, journal)

    def _begin(self, loop: asyncio.AbstractEventLoop, journal: Journal) -> None:
        try:
            loop.run_in_executor(None, self._sync, loop, journal)
        except RuntimeError as exc:  # the loop's executor is shut down: nothing is synced
            self._synced(loop, exc)

    def _sync(self, loop: asyncio.AbstractEventLoop, journal: Journal) -> None:
        """In the worker thread: everything appended so far, then back to the loop."""
        error: Exception | None = None
        try:
            target = journal.appended
            journal.sync(target)
            if journal.unsynced(target):  # closed meanwhile: syncing again would not help
                raise FallbackJournalError(
                    f"the fallback journal {journal.path} was closed before a write was on disk"
                )
        except Exception as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(self._synced, loop, error)

    def _synced(self, loop: asyncio.AbstractEventLoop, error: Exception | None) -> None:
        self.running = False
        left = []
        for step, future in self.waiting:
            if future.done():  # its caller was cancelled
                continue
            if error is not None:
                future.set_exception(error)  # not durable: not acknowledged
            elif step.journal.unsynced(step.upto):
                left.append((step, future))  # appended after that fdatasync began
            else:
                future.set_result(None)
        self.waiting = left
        if left:
            self._start(loop, left[0][0].journal)


def _settle_if_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
