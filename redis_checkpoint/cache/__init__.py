"""One cache engine (namespaced key -> bytes with TTL, tags, stats, fallback) and its faces.

::

    from langchain_core.globals import set_llm_cache
    from redis_checkpoint import CacheEngine, CachedEmbeddings, LLMCache, NodeCache

    engine = CacheEngine("redis://localhost:6379/0")          # or REDIS_URL from the environment
    set_llm_cache(LLMCache(engine=engine))                      # every LangChain model, 1800 s TTL
    vectors = CachedEmbeddings(OpenAIEmbeddings(), engine=engine)  # 7 days, float32
    graph = builder.compile(cache=NodeCache(engine=engine))     # nodes with CachePolicy(ttl=...)
    answer = engine.get_or_compute("api", "rates:EUR", fetch_rates, ttl=600, tags=["rates"])
    engine.invalidate_tags("api", "rates")                     # in every process
    engine.stats()["llm"].hit_ratio

Layout, invalidation and fallback are explained in :mod:`redis_checkpoint.cache.core`.
"""

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
