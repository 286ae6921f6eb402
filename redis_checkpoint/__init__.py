"""redis_checkpoint: an AI application's caching stack on plain Redis.

The LangGraph checkpoint saver (sync and async) with an in-memory fallback tier; one cache engine
with its faces (LLM responses, embeddings, LangGraph nodes, DB queries, HTTP responses); and the
operations around them (metrics, a health monitor, a management API, a CLI). All stand on the
same foundations: settings, one client factory, a circuit breaker and one metrics module.
"""

from typing import TYPE_CHECKING, Any

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
from redis_checkpoint.cache.query import QueryCache, cached_query, set_query_cache
from redis_checkpoint.cache.semantic import SemanticLLMCache
from redis_checkpoint.cache.tokens import TokenCache
from redis_checkpoint.checkpoint import AsyncRedisSaver, RedisSaver
from redis_checkpoint.client import create_async_client, create_client
from redis_checkpoint.errors import (
    ConfigurationError,
    CorruptEntryError,
    FallbackJournalError,
    MissingThreadIdError,
    RedisAuthError,
    RedisCheckpointError,
    RedisUnavailableError,
)
from redis_checkpoint.metrics import Metrics, get_metrics
from redis_checkpoint.ops import HealthMonitor, HealthReport
from redis_checkpoint.settings import Settings
from redis_checkpoint.store import AsyncRedisStore, RedisStore, StoreIndexConfig
from redis_checkpoint.web import (
    CacheMiddleware,
    CacheRule,
    SessionMiddleware,
    SessionStore,
    TrustedForwarding,
    invalidate_user_sessions,
    regenerate_session,
)

__all__ = [
    "DEFAULT_TTLS",
    "AgentCacheStats",
    "AsyncCacheEngine",
    "AsyncRedisSaver",
    "AsyncRedisStore",
    "CacheEngine",
    "CacheMiddleware",
    "CacheRule",
    "CachedEmbeddings",
    "CircuitBreaker",
    "ConfigurationError",
    "CorruptEntryError",
    "FallbackJournalError",
    "HealthMonitor",
    "HealthReport",
    "LLMCache",
    "Metrics",
    "MissingThreadIdError",
    "ModelCacheMiddleware",
    "NodeCache",
    "QueryCache",
    "RedisAuthError",
    "RedisCheckpointError",
    "RedisSaver",
    "RedisStore",
    "RedisUnavailableError",
    "SemanticLLMCache",
    "SessionMiddleware",
    "SessionStore",
    "Settings",
    "StoreIndexConfig",
    "TokenCache",
    "ToolCacheMiddleware",
    "TrustedForwarding",
    "cached_llm_call",
    "cached_query",
    "create_async_client",
    "create_client",
    "create_management_app",
    "create_management_router",
    "get_metrics",
    "invalidate_user_sessions",
    "regenerate_session",
    "set_query_cache",
]
__version__ = "0.1.0"

if TYPE_CHECKING:  # typed for users' mypy; imported on first use at run time (below)
    from redis_checkpoint.cache.agent import (
        AgentCacheStats,
        ModelCacheMiddleware,
        ToolCacheMiddleware,
    )
    from redis_checkpoint.ops.management import create_management_app, create_management_router

_AGENT_MIDDLEWARE = ("AgentCacheStats", "ModelCacheMiddleware", "ToolCacheMiddleware")


def __getattr__(name: str) -> Any:
    # The management API needs Starlette (the asgi extra): imported on first use only.
    if name in ("create_management_app", "create_management_router"):
        from redis_checkpoint.ops import management

        return getattr(management, name)
    # The agent middleware needs langchain (the langchain extra).
    if name in _AGENT_MIDDLEWARE:
        from redis_checkpoint.cache import agent

        return getattr(agent, name)
    raise AttributeError(f"module 'redis_checkpoint' has no attribute {name!r}")
