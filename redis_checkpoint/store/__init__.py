"""LangGraph long-term memory on plain Redis: ``RedisStore`` and ``AsyncRedisStore``."""

from redis_checkpoint.store.store import (
    AsyncRedisStore,
    RedisStore,
    StoreIndexConfig,
    StoreOptions,
    VectorSearch,
)

__all__ = ["AsyncRedisStore", "RedisStore", "StoreIndexConfig", "StoreOptions", "VectorSearch"]
