"""LangChain's own standard suites (the ``langchain-tests`` package) on our LangChain faces.

``SyncCacheTestSuite`` and ``AsyncCacheTestSuite`` run on an ``LLMCache`` built with its default
options on a test-started redis-server, once with the suites' plain ``Generation`` sample and once
with a tool-calling ``ChatGeneration`` (what chat models actually store).
The same two suites run on a ``SemanticLLMCache`` with its defaults around langchain-core's
``DeterministicFakeEmbedding`` (a hit is counted, never marked on what it returns).
``EmbeddingsIntegrationTests`` runs on ``CachedEmbeddings`` around langchain-core's local
``DeterministicFakeEmbedding`` (nothing is downloaded), cold and warm.

Each test gets its own key prefix, so every cache starts empty as the suites require.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from cache_helpers import engine, private_metrics, unique
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_tests.integration_tests import (
    AsyncCacheTestSuite,
    EmbeddingsIntegrationTests,
    SyncCacheTestSuite,
)

from redis_checkpoint import CachedEmbeddings, LLMCache, SemanticLLMCache


def default_llm_cache(redis_url: str, name: str) -> LLMCache:
    """``LLMCache`` with every option at its default but a private prefix and registry."""
    return LLMCache(redis_url, prefix=unique(name), metrics=private_metrics())


def tool_calling_generation() -> ChatGeneration:
    message = AIMessage(
        content=[
            {"type": "text", "text": "Let me look that up."},
            {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "redis"}},
        ],
        tool_calls=[{"name": "search", "args": {"q": "redis", "limit": 3}, "id": "toolu_1"}],
        usage_metadata={"input_tokens": 21, "output_tokens": 9, "total_tokens": 30},
        response_metadata={"model_name": "standard-suite", "stop_reason": "tool_use"},
        id="msg-standard",
    )
    return ChatGeneration(message=message, generation_info={"finish_reason": "tool_use"})


class TestLLMCacheSyncSuite(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, redis_url: str) -> Iterator[LLMCache]:
        llm_cache = default_llm_cache(redis_url, "std-llm-sync")
        yield llm_cache
        llm_cache.close()


class TestLLMCacheSyncSuiteWithChatGenerations(TestLLMCacheSyncSuite):
    def get_sample_generation(self) -> Generation:
        return tool_calling_generation()


class TestLLMCacheAsyncSuite(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, redis_url: str) -> AsyncIterator[LLMCache]:
        llm_cache = default_llm_cache(redis_url, "std-llm-async")
        yield llm_cache
        await llm_cache.aclose()  # the lazily built async twin
        llm_cache.close()


class TestLLMCacheAsyncSuiteWithChatGenerations(TestLLMCacheAsyncSuite):
    def get_sample_generation(self) -> Generation:
        return tool_calling_generation()


def default_semantic_cache(redis_url: str, name: str) -> SemanticLLMCache:
    embeddings = DeterministicFakeEmbedding(size=32)
    return SemanticLLMCache(embeddings, redis_url, prefix=unique(name), metrics=private_metrics())


class TestSemanticLLMCacheSyncSuite(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, redis_url: str) -> Iterator[SemanticLLMCache]:
        semantic = default_semantic_cache(redis_url, "std-sem-sync")
        yield semantic
        semantic.close()


class TestSemanticLLMCacheSyncSuiteWithChatGenerations(TestSemanticLLMCacheSyncSuite):
    def get_sample_generation(self) -> Generation:
        return tool_calling_generation()


class TestSemanticLLMCacheAsyncSuite(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, redis_url: str) -> AsyncIterator[SemanticLLMCache]:
        semantic = default_semantic_cache(redis_url, "std-sem-async")
        yield semantic
        await semantic.aclose()
        semantic.close()


class TestSemanticLLMCacheAsyncSuiteWithChatGenerations(TestSemanticLLMCacheAsyncSuite):
    def get_sample_generation(self) -> Generation:
        return tool_calling_generation()


# -- embeddings -----------------------------------------------------------------------------

#: What the embeddings suite embeds (langchain-tests 1.1): the "warm" run caches these first.
SUITE_DOCUMENTS = ["foo", "bar", "baz"]
SUITE_QUERIES = ["foo", "bar"]


class OnlyFromCache(Embeddings):
    """Stands in for the model once the cache is warm: a call means the suite was not served
    from Redis (e.g. it now embeds other texts: update SUITE_DOCUMENTS / SUITE_QUERIES)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError(f"documents not served from the cache: {texts}")

    def embed_query(self, text: str) -> list[float]:
        raise AssertionError(f"query not served from the cache: {text!r}")


class TestCachedEmbeddingsSuite(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[CachedEmbeddings]:
        return CachedEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"underlying": DeterministicFakeEmbedding(size=16)}

    # The suite builds ``embeddings_class(**embedding_model_params)``; the Redis engine comes
    # from a fixture, so the model fixture adds it (and runs every test cold and warm).
    @pytest.fixture(params=["cold", "warm"])
    async def model(
        self, request: pytest.FixtureRequest, redis_url: str
    ) -> AsyncIterator[CachedEmbeddings]:
        with engine(redis_url, unique("std-emb")) as shared:
            embeddings = self.embeddings_class(**self.embedding_model_params, engine=shared)
            if request.param == "warm":
                embeddings.embed_documents(SUITE_DOCUMENTS)
                for text in SUITE_QUERIES:
                    embeddings.embed_query(text)
                embeddings.underlying = OnlyFromCache()
            yield embeddings
            await embeddings.aclose()
