"""redis_checkpoint: an AI application's caching stack on plain Redis.

The LangGraph checkpoint saver (sync and async) with an in-memory fallback tier, and one cache
engine with its AI faces (LLM responses, embeddings, LangGraph nodes), on foundations every face of
the package shares: settings, one client factory, a circuit breaker and one metrics module.
"""

from typing import Any

from redis_checkpoint.breaker import CircuitBreaker
from redis_checkpoint.cache import (
    DEFAULT_TTLS,
    AsyncCacheEngine,
    CachedEmbeddings,
    CacheEngine,
    LLMCache,
    NodeCache,
    cached_llm_call,
)
from redis_checkpoint.checkpoint import AsyncRedisSaver, MissingThreadIdError, RedisSaver
from redis_checkpoint.client import create_async_client, create_client
from redis_checkpoint.errors import (
    ConfigurationError,
    CorruptEntryError,
    RedisCheckpointError,
    RedisUnavailableError,
)
from redis_checkpoint.metrics import Metrics, get_metrics
from redis_checkpoint.ops import HealthMonitor, HealthReport
from redis_checkpoint.settings import Settings

__all__ = [
    "DEFAULT_TTLS",
    "AsyncCacheEngine",
    "AsyncRedisSaver",
    "CacheEngine",
    "CachedEmbeddings",
    "CircuitBreaker",
    "ConfigurationError",
    "CorruptEntryError",
    "LLMCache",
    "Metrics",
    "MissingThreadIdError",
    "NodeCache",
    "RedisCheckpointError",
    "RedisSaver",
    "RedisUnavailableError",
    "Settings",
    "cached_llm_call",
    "create_async_client",
    "create_client",
    "get_metrics",
]
__all__ += ["HealthMonitor", "HealthReport", "create_management_app", "create_management_router"]


def __getattr__(name: str) -> Any:
    # The management API needs Starlette (the asgi extra): imported on first use only.
    if name in ("create_management_app", "create_management_router"):
        from redis_checkpoint.ops import management

        return getattr(management, name)
    raise AttributeError(f"module 'redis_checkpoint' has no attribute {name!r}")
__version__ = "0.1.0"

# The web-facing caches (issue 4): the DB-query cache and the ASGI response cache.
from redis_checkpoint.cache.query import QueryCache
from redis_checkpoint.cache.query_decorators import cached_query, set_query_cache
from redis_checkpoint.web import CacheMiddleware, CacheRule

__all__ += ["CacheMiddleware", "CacheRule", "QueryCache", "cached_query", "set_query_cache"]
