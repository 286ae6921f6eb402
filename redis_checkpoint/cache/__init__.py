"""One cache engine (namespaced key -> bytes with TTL, tags, stats, fallback) and its faces."""

from redis_checkpoint.cache.core import DEFAULT, DEFAULT_TTLS, MISSING, CacheCore
from redis_checkpoint.cache.embeddings import CachedEmbeddings
from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine
from redis_checkpoint.cache.llm import LLMCache, cached_llm_call, deterministic_only
from redis_checkpoint.cache.memory import MemoryTier
from redis_checkpoint.cache.node import NodeCache
from redis_checkpoint.cache.stats import NamespaceStats

__all__ = [
    "DEFAULT",
    "DEFAULT_TTLS",
    "MISSING",
    "AsyncCacheEngine",
    "CacheCore",
    "CacheEngine",
    "CachedEmbeddings",
    "LLMCache",
    "MemoryTier",
    "NamespaceStats",
    "NodeCache",
    "cached_llm_call",
    "deterministic_only",
]
