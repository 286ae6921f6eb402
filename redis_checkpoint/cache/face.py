"""What every face (LLM, embeddings, node cache) needs: a sync engine and its async twin."""

from __future__ import annotations

from typing import Any

from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine, SyncClient
from redis_checkpoint.settings import Settings

__all__ = ["EngineFace", "EngineOwner"]


class EngineOwner:
    """Holds a face's engines: ``engine`` (sync) and ``async_engine``, built on first use from
    the sync engine's settings and sharing its core (stats, breaker, memory tier)."""

    def __init__(
        self,
        target: str | Settings | SyncClient | None,
        engine: CacheEngine | None,
        async_engine: AsyncCacheEngine | None,
        options: dict[str, Any],
    ) -> None:
        if engine is not None and (target is not None or options):
            raise TypeError("pass either engine= or a target and engine options, not both")
        # Close only what we built: an engine passed in may serve other faces too.
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else CacheEngine(target, **options)
        self._async_engine = async_engine
        self._owns_async_engine = False

    @property
    def async_engine(self) -> AsyncCacheEngine:
        if self._async_engine is None:
            self._async_engine = self.engine.async_twin()
            self._owns_async_engine = True
        return self._async_engine

    def close(self) -> None:
        """Close the sync engine's client if this face built it."""
        if self._owns_engine:
            self.engine.close()

    async def aclose(self) -> None:
        """Close the async engine's client if this face built it (e.g. the lazy twin)."""
        if self._async_engine is not None and self._owns_async_engine:
            await self._async_engine.aclose()
            self._async_engine = None


class EngineFace:
    """``engine``, ``async_engine``, ``close()`` and ``aclose()`` for a face that keeps its
    :class:`EngineOwner` in ``_engines``."""

    _engines: EngineOwner

    @property
    def engine(self) -> CacheEngine:
        return self._engines.engine

    @property
    def async_engine(self) -> AsyncCacheEngine:
        return self._engines.async_engine

    def close(self) -> None:
        """Close the clients this face created (not an engine passed in)."""
        self._engines.close()

    async def aclose(self) -> None:
        """Close the async client this face created (its lazy async twin included)."""
        await self._engines.aclose()
