"""What every face (LLM, embeddings, node cache) needs: a sync engine and its async twin."""

from __future__ import annotations

from typing import Any

from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine, SyncClient
from redis_checkpoint.settings import Settings

__all__ = ["EngineOwner"]


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
        self.engine = engine if engine is not None else CacheEngine(target, **options)
        self._async_engine = async_engine

    @property
    def async_engine(self) -> AsyncCacheEngine:
        if self._async_engine is None:
            self._async_engine = self.engine.async_twin()
        return self._async_engine

    def close(self) -> None:
        self.engine.close()

    async def aclose(self) -> None:
        if self._async_engine is not None:
            await self._async_engine.aclose()
