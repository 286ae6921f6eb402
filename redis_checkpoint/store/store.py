"""RedisStore and AsyncRedisStore: the two drivers of the store's core (``core.py``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NoReturn, get_args

from langchain_core.embeddings import Embeddings
from langgraph.store.base import BaseStore, IndexConfig, Op, Result, TTLConfig

from redis_checkpoint.checkpoint.base import check_client
from redis_checkpoint.client import (
    AsyncRedisClient,
    SyncRedisClient,
    acheck_connection,
    check_connection,
    create_async_client,
    create_client,
    describe_client,
)
from redis_checkpoint.errors import RedisUnavailableError
from redis_checkpoint.failures import access_error, is_unavailable_error
from redis_checkpoint.metrics import Metrics
from redis_checkpoint.settings import Settings
from redis_checkpoint.steps import Invoke, LoadScripts, Send, adrive, asend, drive, send
from redis_checkpoint.store.core import StoreCore
from redis_checkpoint.store.scripts import STORE_SCRIPTS

__all__ = ["AsyncRedisStore", "RedisStore"]


class _AsyncEmbeddings:
    """The async twins of an ``Embeddings``' methods under the sync names, so the one plan's
    :class:`Invoke` steps serve the async driver too."""

    def __init__(self, embeddings: Embeddings) -> None:
        self.embed_documents = embeddings.aembed_documents
        self.embed_query = embeddings.aembed_query


class RedisStore(BaseStore):
    """LangGraph long-term memory on plain Redis (>= 6.2, Valkey, Cluster; no modules).

    ``graph.compile(store=store)``. Items live under their namespace's hash tag; ``ttl`` (a
    ``TTLConfig``) gives them a lifetime in minutes; ``index`` (an ``IndexConfig``) embeds the
    given fields at ``put`` and makes ``search(query=...)`` an exact cosine-similarity search.
    ``metrics``: where it counts its operations (default: ``get_metrics()``, the ``store_*``
    families).
    """

    supports_ttl = True

    def __init__(
        self,
        client: SyncRedisClient,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        prefix: str = "rc",
        metrics: Metrics | None = None,
        fallback: bool = True,
    ) -> None:
        check_client(client, get_args(SyncRedisClient), "RedisStore")
        self.client = client
        self.core = StoreCore(
            index=index, ttl=ttl, prefix=prefix, metrics=metrics, fallback=fallback
        )
        self.index_config = index
        self.ttl_config = ttl

    @classmethod
    @contextmanager
    def from_conn_string(
        cls,
        url: str | None = None,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        prefix: str | None = None,
        settings: Settings | None = None,
        metrics: Metrics | None = None,
    ) -> Iterator[RedisStore]:
        """Connect to ``url`` (or REDIS_URL), set up, and close the client at the end. The keys
        start with ``prefix`` (default: the settings' ``key_prefix``, REDIS_KEY_PREFIX or "rc")."""
        settings = settings or Settings.from_env(url=url)
        client = create_client(settings)
        try:
            check_connection(client, settings.url)
            prefix = prefix or settings.key_prefix
            store = cls(client, index=index, ttl=ttl, prefix=prefix, metrics=metrics)
            store.setup()
            try:
                yield store
            finally:
                store.close()
        finally:
            client.close()

    def setup(self) -> None:
        """Load the scripts (they are loaded again after a restart anyway). Safe to repeat."""
        self._step(LoadScripts(STORE_SCRIPTS))

    def ping(self) -> bool:
        """Health check through the store's client: see :meth:`StoreCore.probe`."""
        return drive(self.core.probe(), self._step)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Write back what an outage left owed, if Redis answers (what cannot be is logged at
        ERROR). The client is the caller's (``from_conn_string`` closes its own)."""
        drive(self.core.flush(), self._step)

    def _step(self, step: Any) -> Any:
        if isinstance(step, Send):
            return send(self.client, step.commands)
        if isinstance(step, LoadScripts):
            for script in step.scripts:
                self.client.script_load(script.source)
            return None
        if isinstance(step, Invoke):
            return step.on(self.core.embeddings)
        raise RuntimeError(f"unexpected step {step!r}")

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        try:
            return drive(self.core.batch(ops), self._step)  # type: ignore[no-any-return]
        except Exception as exc:
            _reraise(exc, self.client)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """The sync client in a worker thread; use :class:`AsyncRedisStore` in async code."""
        return await asyncio.to_thread(self.batch, list(ops))


class AsyncRedisStore(BaseStore):
    """:class:`RedisStore` on redis.asyncio. Its sync methods may be called from another thread
    than the event loop's (they run on the loop); from the loop's own thread they raise."""

    supports_ttl = True

    def __init__(
        self,
        client: AsyncRedisClient,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        prefix: str = "rc",
        metrics: Metrics | None = None,
        fallback: bool = True,
    ) -> None:
        check_client(client, get_args(AsyncRedisClient), "AsyncRedisStore")
        self.client = client
        self.core = StoreCore(
            index=index, ttl=ttl, prefix=prefix, metrics=metrics, fallback=fallback
        )
        self.index_config = index
        self.ttl_config = ttl
        self._embeddings = (
            _AsyncEmbeddings(self.core.embeddings) if self.core.embeddings is not None else None
        )
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
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        prefix: str | None = None,
        settings: Settings | None = None,
        metrics: Metrics | None = None,
    ) -> AsyncIterator[AsyncRedisStore]:
        """Connect to ``url`` (or REDIS_URL), set up, and close the client at the end. The keys
        start with ``prefix`` (default: the settings' ``key_prefix``, REDIS_KEY_PREFIX or "rc")."""
        settings = settings or Settings.from_env(url=url)
        client = create_async_client(settings)
        try:
            await acheck_connection(client, settings.url)
            prefix = prefix or settings.key_prefix
            store = cls(client, index=index, ttl=ttl, prefix=prefix, metrics=metrics)
            await store.asetup()
            try:
                yield store
            finally:
                await store.aclose()
        finally:
            await client.aclose()

    async def ping(self) -> bool:
        """Health check through the store's client: see :meth:`StoreCore.probe`."""
        return await adrive(self.core.probe(), self._step)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """:meth:`RedisStore.close` on the event loop."""
        await adrive(self.core.flush(), self._step)

    async def asetup(self) -> None:
        """Load the scripts. Safe to repeat."""
        self.loop = asyncio.get_running_loop()
        await self._step(LoadScripts(STORE_SCRIPTS))

    async def _step(self, step: Any) -> Any:
        if isinstance(step, Send):
            return await asend(self.client, step.commands)
        if isinstance(step, LoadScripts):
            for script in step.scripts:
                await self.client.script_load(script.source)
            return None
        if isinstance(step, Invoke):
            return await step.on(self._embeddings)
        raise RuntimeError(f"unexpected step {step!r}")

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
    as RedisUnavailableError naming it (the store keeps no memory tier), anything else as is."""
    where = describe_client(client)
    denied = access_error(exc, where)
    if denied is not None:
        raise denied from exc
    if is_unavailable_error(exc):
        raise RedisUnavailableError(f"Redis at {where} is unavailable: the store needs it") from exc
    raise exc
