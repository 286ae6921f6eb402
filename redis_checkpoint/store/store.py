"""RedisStore and AsyncRedisStore: the two drivers of the store's core (``core.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict, get_args

from langchain_core.embeddings import Embeddings
from langgraph.store.base import BaseStore, IndexConfig, Op, Result, TTLConfig

from redis_checkpoint.checkpoint.base import check_client
from redis_checkpoint.client import (
    AsyncRedisClient,
    SyncRedisClient,
    aconnected,
    connected,
    describe_client,
    is_cluster,
)
from redis_checkpoint.errors import RedisUnavailableError
from redis_checkpoint.failures import access_error, is_unavailable_error
from redis_checkpoint.metrics import Metrics
from redis_checkpoint.settings import Settings
from redis_checkpoint.steps import acarry_out, adrive, carry_out, drive
from redis_checkpoint.store.core import StoreCore, VectorSearch
from redis_checkpoint.store.search import StoreIndexConfig

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncRedisStore", "RedisStore", "StoreIndexConfig", "StoreOptions", "VectorSearch"]


class StoreOptions(TypedDict, total=False):
    """The keywords both stores take (a misspelt one is a type error under ``mypy --strict``).

    ``index``: embed these fields at ``put`` and make ``search(query=...)`` a vector search;
    ``ttl``: lifetimes in minutes (``default_ttl``, ``refresh_on_read``); ``prefix``: the first
    part of every key ("rc"; ``from_conn_string``: the settings' ``key_prefix``); ``metrics``:
    where the ``store_*`` families count (default ``get_metrics()``); ``fallback``: while Redis
    is away answer from memory and owe the writes (default True), else raise;
    ``vector_search``: ``"auto"`` (default) ranks on the server when ``setup`` finds a search
    module (RediSearch, valkey-search; not on a cluster) and exactly in the process otherwise,
    ``"exact"`` always in the process, ``"module"`` requires the module (``setup`` raises
    ``ConfigurationError`` without one). Give every process of one store the same setting:
    only a store that found the module keeps the vector hashes its index reads;
    ``fallback_journal``: a directory where the writes owed during an outage are also
    journaled (on disk before the call returns), so a process that dies during an outage
    loses none: the next store opened on the directory with the same prefix writes them back.
    """

    index: IndexConfig | StoreIndexConfig | None
    ttl: TTLConfig | None
    prefix: str
    metrics: Metrics | None
    fallback: bool
    vector_search: VectorSearch
    fallback_journal: str | os.PathLike[str] | None


class _AsyncEmbeddings:
    """The async twins of an ``Embeddings``' methods under the sync names, so the one plan's
    :class:`Invoke` steps serve the async driver too."""

    def __init__(self, embeddings: Embeddings) -> None:
        self.embed_documents = embeddings.aembed_documents
        self.embed_query = embeddings.aembed_query


class _RedisStoreBase(BaseStore):
    """What both drivers hold: the client, the core, and the config ``BaseStore`` reads."""

    supports_ttl = True

    def _wire(self, client: Any, options: StoreOptions) -> None:
        self.client = client
        self.core = StoreCore(**options)
        self.index_config = options.get("index")
        self.ttl_config = options.get("ttl")

    @property
    def search_module(self) -> bool:
        """Whether vector search runs on the server's search module (known after setup)."""
        return self.core.knn is not None


class RedisStore(_RedisStoreBase):
    """LangGraph long-term memory on plain Redis (>= 6.2, Valkey, Cluster; no modules).

    ``graph.compile(store=store)``. Items live under their namespace's hash tag; see
    :class:`StoreOptions` for the keywords (an index makes ``search(query=...)`` an exact
    cosine-similarity search; a TTL config gives items lifetimes in minutes).
    """

    client: SyncRedisClient

    def __init__(self, client: SyncRedisClient, **options: Unpack[StoreOptions]) -> None:
        check_client(client, get_args(SyncRedisClient), "RedisStore")
        self._wire(client, options)

    @classmethod
    @contextmanager
    def from_conn_string(
        cls,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        **options: Unpack[StoreOptions],
    ) -> Iterator[RedisStore]:
        """Connect to ``url`` (or REDIS_URL), set up, and at the end write back what is owed
        and close the client."""
        with connected(url, settings) as (client, settings):
            options.setdefault("prefix", settings.key_prefix)
            store = cls(client, **options)
            store.setup()
            try:
                yield store
            finally:
                store.close()

    def setup(self) -> None:
        """Load the scripts (they are loaded again after a restart anyway) and look for a
        search module (see :class:`StoreOptions`). Safe to repeat."""
        drive(self.core.setup(is_cluster(self.client)), self._step)

    def ping(self) -> bool:
        """Health check through the store's client: see :meth:`StoreCore.probe`."""
        return drive(self.core.probe(), self._step)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Write back what an outage left owed, if Redis answers (what cannot be is logged at
        ERROR, and kept in the journal if there is one). The client is the caller's
        (``from_conn_string`` closes its own)."""
        drive(self.core.flush(), self._step)
        self.core.close()

    def _step(self, step: Any) -> Any:
        return carry_out(step, self.client, self.core.embeddings)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        try:
            return drive(self.core.batch(ops), self._step)  # type: ignore[no-any-return]
        except Exception as exc:
            _reraise(exc, self.client)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """The sync client in a worker thread; use :class:`AsyncRedisStore` in async code."""
        return await asyncio.to_thread(self.batch, list(ops))


class AsyncRedisStore(_RedisStoreBase):
    """:class:`RedisStore` on redis.asyncio. Its sync methods may be called from another thread
    than the event loop's (they run on the loop); from the loop's own thread they raise."""

    client: AsyncRedisClient

    def __init__(self, client: AsyncRedisClient, **options: Unpack[StoreOptions]) -> None:
        check_client(client, get_args(AsyncRedisClient), "AsyncRedisStore")
        self._wire(client, options)
        embeddings = self.core.embeddings
        self._embeddings = _AsyncEmbeddings(embeddings) if embeddings is not None else None
        #: The loop the sync methods run on: the one this store was made or first used on.
        self.loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):  # no loop runs: the first async call sets it
            self.loop = asyncio.get_running_loop()

    @classmethod
    @asynccontextmanager
    async def from_conn_string(
        cls,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        **options: Unpack[StoreOptions],
    ) -> AsyncIterator[AsyncRedisStore]:
        """Connect to ``url`` (or REDIS_URL), set up, and at the end write back what is owed
        and close the client."""
        async with aconnected(url, settings) as (client, settings):
            options.setdefault("prefix", settings.key_prefix)
            store = cls(client, **options)
            await store.asetup()
            try:
                yield store
            finally:
                await store.aclose()

    async def asetup(self) -> None:
        """:meth:`RedisStore.setup` on the event loop."""
        self.loop = asyncio.get_running_loop()
        await adrive(self.core.setup(is_cluster(self.client)), self._step)

    async def ping(self) -> bool:
        """Health check through the store's client: see :meth:`StoreCore.probe`."""
        return await adrive(self.core.probe(), self._step)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """:meth:`RedisStore.close` on the event loop."""
        await adrive(self.core.flush(), self._step)
        self.core.close()

    async def _step(self, step: Any) -> Any:
        return await acarry_out(step, self.client, self._embeddings)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        try:
            return await adrive(self.core.batch(ops), self._step)  # type: ignore[no-any-return]
        except Exception as exc:
            _reraise(exc, self.client)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        loop = self.loop
        if loop is None or not loop.is_running():
            raise RuntimeError(
                "AsyncRedisStore's sync methods run on its event loop: await the async ones "
                "(aget, aput, asearch...), or call these from another thread while it runs"
            )
        if threading.get_ident() == getattr(loop, "_thread_id", None):
            raise RuntimeError(
                "AsyncRedisStore: a sync method was called on the event loop's own thread, "
                "where it would block the loop; await the async one (aget, aput, asearch...)"
            )
        return asyncio.run_coroutine_threadsafe(self.abatch(list(ops)), loop).result()


def _reraise(exc: Exception, client: object) -> NoReturn:
    """Raise what a failed batch means: a refused password or ACL as RedisAuthError, Redis away
    (with ``fallback=False``) as RedisUnavailableError naming it, anything else as it is."""
    where = describe_client(client)
    denied = access_error(exc, where)
    if denied is not None:
        raise denied from exc
    if is_unavailable_error(exc):
        raise RedisUnavailableError(f"Redis at {where} is unavailable: the store needs it") from exc
    raise exc
