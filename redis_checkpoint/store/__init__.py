"""LangGraph long-term memory on plain Redis: ``RedisStore`` and ``AsyncRedisStore``."""

from redis_checkpoint.store.store import AsyncRedisStore, RedisStore, StoreOptions

__all__ = ["AsyncRedisStore", "RedisStore", "StoreOptions"]
