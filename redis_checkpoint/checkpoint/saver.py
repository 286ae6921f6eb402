"""RedisSaver: the synchronous driver of the saver core (redis-py's sync client).

Each public method hands the core's plan to the router (``routing.py``) and carries out the
steps it yields with :func:`~redis_checkpoint.steps.drive` (``list`` with
:func:`~redis_checkpoint.steps.iterate`): Dispatch puts each Call on its shard's queue, and one
caller at a time sends a queue's batch on the shard's held connection (``wire.py``). Whether a
Call goes to Redis or to the in-memory tier is the router's decision, never the driver's.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, get_args

import redis
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
from redis_checkpoint.checkpoint.routing import Shard, Step
from redis_checkpoint.checkpoint.wire import Link, Request
from redis_checkpoint.client import SyncRedisClient, connected, describe_client
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
    drive,
    iterate,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

T = TypeVar("T")


class RedisSaver(RedisSaverBase):
    """A LangGraph checkpoint saver on plain Redis (>= 6.2, Valkey, Cluster), synchronous.

    ``graph.compile(checkpointer=saver)``. Every operation on a thread is one round trip;
    see :class:`RedisSaverBase` for the options. The async methods run the sync ones in a worker
    thread; use :class:`AsyncRedisSaver` in async applications.
    """

    client: SyncRedisClient

    def __init__(
        self,
        client: SyncRedisClient,
        *,
        url: str | None = None,
        settings: Settings | None = None,
        **options: Unpack[SaverOptions],
    ) -> None:
        check_client(client, get_args(SyncRedisClient), "RedisSaver")
        self.client = client  # before the base's wiring: a cluster's router locates keys on it
        super().__init__(url=url or describe_client(client), settings=settings, **options)
        # One queue and one held connection per shard: the server, or each cluster primary.
        self._queues: dict[str, _Queue] = {}
        self._queues_lock = threading.Lock()

    @classmethod
    @contextmanager
    def from_conn_string(
        cls,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        require_redis: bool = True,
        **options: Unpack[SaverOptions],
    ) -> Iterator[RedisSaver]:
        """Connect to ``url`` (or REDIS_URL), set up, and close the client at the end.

        An unreachable Redis raises RedisUnavailableError naming the URL (without password),
        unless ``require_redis=False``: the saver then starts on its in-memory tier and moves to
        Redis once Redis answers.
        """
        with connected(url, settings, check=require_redis) as (client, settings):
            saver = cls(client, url=settings.url, settings=settings, **options)
            saver.setup()
            try:
                yield saver
            finally:
                saver.close()

    def setup(self) -> None:
        """Load the scripts and warn about an evicting maxmemory-policy; write back what an
        adopted journal owes. Safe to call again."""
        drive(self._setup_plan(), self._step)

    def close(self) -> None:
        """Write back what the in-memory tier still owes Redis (trying for up to
        ``close_timeout`` seconds), log at ERROR what it could not, and drop the held
        connections. The client itself is the caller's (``from_conn_string`` closes its own)."""
        report = drive(self._router.close(self.close_timeout), self._step)
        self._closed(report)
        with self._queues_lock:
            queues, self._queues = list(self._queues.values()), {}
        for queue in queues:
            if queue.link is not None:
                queue.link.close()

    def __enter__(self) -> RedisSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the driver: send what the router asks for ---------------------------------------------

    def _step(self, step: Step | Invoke | Emit) -> Any:
        if isinstance(step, Dispatch):
            return self._send_all(step.items)
        if isinstance(step, Refresh):
            self.client.nodes_manager.initialize()  # type: ignore[union-attr]
        elif isinstance(step, AwaitWriteBack):
            answered = threading.Event()
            if not self._router.when_written_back(step.thread_id, answered.set):
                return False
            answered.wait()
            return True
        elif isinstance(step, SyncJournal):
            step.run()  # concurrent threads share one fdatasync (Journal.sync)
        elif isinstance(step, Sleep):
            time.sleep(step.seconds)
        elif isinstance(step, Invoke):  # setup's calls on the client
            return step.on(self.client)
        else:  # an Emit: only list() hands out results as they come (see iterate)
            raise RuntimeError(f"unexpected step {step!r}")
        return None

    def _run(self, name: str, op: Op[T]) -> T:
        return drive(self._router.run(name, op), self._step)

    def _send_all(self, items: Sequence[tuple[Call, Shard]]) -> list[list[Any] | Exception]:
        """Send Calls, each on its shard's queue. Calls other threads make while a shard's round
        trip is in flight go together in its next one (auto-pipelining); each caller still waits
        for its own replies. A thread that finds a queue idle sends its batches itself."""
        slots = [_Slot(call) for call, _ in items]
        grouped: dict[str, tuple[_Queue, list[_Slot]]] = {}
        for slot, (_, shard) in zip(slots, items, strict=True):
            grouped.setdefault(shard.name, (self._queue(shard), []))[1].append(slot)
        lead = []
        for queue, queued in grouped.values():
            with queue.lock:
                queue.waiting += queued
                if not queue.sending:
                    queue.sending = True
                    lead.append(queue)
        for queue in lead:
            self._lead(queue)
        return [slot.wait() for slot in slots]

    def _queue(self, shard: Shard) -> _Queue:
        queue = self._queues.get(shard.name)
        if queue is None:
            with self._queues_lock:
                queue = self._queues.setdefault(shard.name, _Queue(shard))
        return queue

    def _lead(self, queue: _Queue) -> None:
        while True:
            with queue.lock:
                batch, queue.waiting = queue.waiting, []
                if not batch:
                    queue.sending = False
                    return
            try:
                results = drive(
                    self._router.batch([waiting.call for waiting in batch], queue.shard),
                    lambda request: self._round_trip(queue, request),
                )
            except Exception as exc:  # the connection failed: every Call of the batch did
                results = [exc] * len(batch)
            except BaseException as exc:  # interrupted: release every waiting caller
                with queue.lock:
                    batch += queue.waiting
                    queue.waiting, queue.sending = [], False
                for waiting in batch:
                    waiting.finish(RuntimeError(f"the round trip was interrupted ({exc!r})"))
                raise
            for waiting, result in zip(batch, results, strict=True):
                waiting.finish(result)

    def _round_trip(self, queue: _Queue, request: Request) -> list[Any]:
        """One step of Router.batch on the shard's held connection: send the commands, or
        load the scripts (LoadScripts, after a NOSCRIPT)."""
        if queue.link is None:
            may_reopen = functools.partial(self._router.may_reopen, queue.shard)
            queue.link = Link(self._shard_client(queue.shard.name), may_reopen)
        return queue.link.exchange(request)

    def _shard_client(self, name: str) -> redis.Redis:
        if not isinstance(self.client, redis.cluster.RedisCluster):
            return self.client
        return self.client.get_redis_connection(self._cluster_node(name))

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
        op = self.core.list_checkpoints(config, filter=filter, before=before, limit=limit)
        return iterate(self._router.run("list", op), self._step)

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
        """Health check through this saver's connections: an answer closes a breaker and
        writes back what the memory tier took during an outage (see :meth:`Router.probe`)."""
        return drive(self._router.probe(), self._step)

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

    def set_thread_max_history(self, thread_id: str, max_history: int | None) -> int:
        """Give one thread its own history limit (kept in Redis, for every process; 0 keeps
        all, None returns it to the saver's ``max_history``) and trim the thread to it now.
        Returns how many checkpoints went."""
        return self._run("set_thread_max_history", self.core.limit_history(thread_id, max_history))

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
    """A Call waiting for the thread that sends the next batch: ``done`` is held until its
    result is in (a bare lock: an Event's condition costs more than the rest of the slot)."""

    __slots__ = ("call", "done", "result")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.done = threading.Lock()
        self.done.acquire()
        self.result: list[Any] | Exception = []

    def finish(self, result: list[Any] | Exception) -> None:
        self.result = result
        self.done.release()

    def wait(self) -> list[Any] | Exception:
        self.done.acquire()
        return self.result


class _Queue:
    """The Calls waiting for a shard's next round trip, and its held connection."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.lock = threading.Lock()
        self.waiting: list[_Slot] = []
        self.sending = False
        self.link: Link | None = None
