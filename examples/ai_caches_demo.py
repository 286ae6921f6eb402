#!/usr/bin/env python
"""The LLM cache, the semantic LLM cache, the embedding cache and an agent's caching middleware
at work (hits, misses and time saved), and the long-term memory store (vector search on plain
Redis).

    python examples/ai_caches_demo.py

Uses Redis at REDIS_URL (default redis://127.0.0.1:6379/0) under its own key prefix; when Redis
cannot be reached, the same code runs on the cache's in-memory tier. The LLM and the embedding
model are simulated (fixed sleeps), so the demo needs no API key. The store connects when it
opens, so that part runs only when Redis answers.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from demo_keys import remove_demo_keys
from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.store.base import IndexConfig

from redis_checkpoint import (
    CachedEmbeddings,
    CacheEngine,
    LLMCache,
    ModelCacheMiddleware,
    RedisStore,
    SemanticLLMCache,
    Settings,
    ToolCacheMiddleware,
)
from redis_checkpoint.client import check_connection
from redis_checkpoint.errors import RedisUnavailableError

PREFIX = "rc-demo:cache"
STORE_PREFIX = "rc-demo:memory"

LLM_SECONDS = 0.3
EMBED_SECONDS_PER_TEXT = 0.001


class SimulatedChat(BaseChatModel):
    """Answers after LLM_SECONDS, like a remote model would."""

    @property
    def _llm_type(self) -> str:
        return "simulated-chat"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        time.sleep(LLM_SECONDS)
        message = AIMessage(f"(simulated) an answer to: {messages[-1].content}")
        return ChatResult(generations=[ChatGeneration(message=message)])


class SimulatedEmbeddings(Embeddings):
    """Deterministic 384-dim vectors, EMBED_SECONDS_PER_TEXT per text."""

    model = "simulated-384"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        time.sleep(EMBED_SECONDS_PER_TEXT * len(texts))
        return [self.embed_one(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    @staticmethod
    def embed_one(text: str) -> list[float]:
        raw = hashlib.blake2b(text.encode(), digest_size=64).digest() * 6
        return [b / 255 for b in raw]


class WordEmbeddings(Embeddings):
    """A bag of words hashed into 64 dims: texts sharing words are near (a stand-in for a
    real model, which would also find synonyms)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        vector = [0.0] * 64
        for word in text.lower().replace("?", " ").split():
            vector[hashlib.blake2b(word.encode(), digest_size=2).digest()[0] % 64] += 1.0
        return vector


def store_demo(settings: Settings) -> None:
    """Memories that outlive a thread: put, vector search, a filter, the namespaces."""
    index: IndexConfig = {"dims": 64, "embed": WordEmbeddings(), "fields": ["text"]}
    with RedisStore.from_conn_string(settings=settings, prefix=STORE_PREFIX, index=index) as store:
        alice = ("users", "alice", "memories")
        store.put(alice, "drink", {"text": "alice drinks green tea every morning", "kind": "taste"})
        store.put(alice, "city", {"text": "alice lives in lyon near the river", "kind": "fact"})
        store.put(alice, "pet", {"text": "alice has a cat named miso", "kind": "fact"})
        store.put(
            ("users", "bob", "memories"), "drink", {"text": "bob drinks coffee", "kind": "taste"}
        )
        print(f"\n{'store query (namespace users/alice)':<44} {'best match':<38} {'score':>6}")
        for query in (
            "what drinks does alice like?",
            "where does alice live?",
            "does alice have a cat?",
        ):
            [best] = store.search(("users", "alice"), query=query, limit=1)
            print(f"{query:<44} {best.value['text'][:38]:<38} {best.score or 0:>6.2f}")
        facts = [item.key for item in store.search(("users", "alice"), filter={"kind": "fact"})]
        print(f"filter kind=fact: {facts}; namespaces: {store.list_namespaces(prefix=('users',))}")
        remove_demo_keys(store.client, STORE_PREFIX)


def semantic_demo(engine: CacheEngine) -> None:
    """Rephrased questions answered from the cache, another question asked of the model."""
    cache = SemanticLLMCache(WordEmbeddings(), engine=engine, namespace="semantic-demo")
    cache.clear()
    model = SimulatedChat(cache=cache)
    llm_string = model._get_llm_string()
    head = f"{'semantic LLM cache: question':<44} {'nearest':>7} {'guard':<6} {'cache':<9}"
    print(f"\n{head} {'ms':>6}  answer")
    for question in (
        "What is the capital of France?",
        "what is the capital of France",  # the same words: a semantic hit
        "How long is the flight from Paris to Rome?",
        "How long is the flight from Rome to Paris?",  # the guard: the other direction
        "What is 2 plus 2?",
        "What is 2 plus 3?",  # the guard: other numbers are another question
    ):
        # The nearest stored question (before the call), as the lookup will weigh it.
        neighbours = cache.neighbours(dumps([HumanMessage(question)]), llm_string)
        near = neighbours[0] if neighbours else None
        similarity = f"{near.similarity:.2f}" if near else "-"
        guard = "stops" if near and near.guarded else ""
        before = engine.stats()[cache.namespace]
        hits, semantic = before.hits, before.semantic_hits
        answer, seconds = timed(lambda q=question: model.invoke(q))
        after = engine.stats()[cache.namespace]
        outcome = "miss"
        if after.semantic_hits > semantic:
            outcome = "semantic"
        elif after.hits > hits:
            outcome = "hit"
        print(
            f"{question:<44} {similarity:>7} {guard:<6} {outcome:<9} {seconds * 1000:>6.1f}  "
            f"{str(answer.content).removeprefix('(simulated) ')[:34]}"
        )


class WeatherModel(BaseChatModel):
    """An agent's model: asks the weather tool, then answers (LLM_SECONDS per call)."""

    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "simulated-weather"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls += 1
        time.sleep(LLM_SECONDS)
        last = messages[-1]
        if isinstance(last, ToolMessage):
            reply = AIMessage(f"It is {last.content}.")
        else:
            call = {"name": "weather", "args": {"city": last.text}, "id": f"call_{self.calls}"}
            reply = AIMessage("", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools: Any, **kwargs: Any) -> WeatherModel:
        return self


def agent_demo(engine: CacheEngine) -> None:
    """An agent run twice for one user and once for another: the repeat calls neither the
    model nor the tool; the other user's run calls both."""
    tool_runs: list[str] = []

    @tool
    def weather(city: str) -> str:
        """Today's weather in a city."""
        time.sleep(LLM_SECONDS)
        tool_runs.append(city)
        return f"sunny in {city}"

    def user_of(request: Any) -> str:
        return str(request.runtime.context["user"])

    model = WeatherModel()
    tools = ToolCacheMiddleware(engine, tools={"weather": 600}, scope=user_of)
    model_answers = LLMCache(engine=engine, namespace="agent-demo")
    model_answers.clear()  # a fresh start, as for the other caches
    tools.invalidate("weather")
    answers = ModelCacheMiddleware(model_answers, scope=user_of)
    agent = create_agent(model, tools=[weather], middleware=[tools, answers])
    title = "agent run (create_agent + caching middleware)"
    print(f"\n{title:<46} {'model':>5} {'tool':>5} {'ms':>7}")
    for user in ("alice", "alice", "bob"):
        calls, runs = model.calls, len(tool_runs)
        _, seconds = timed(
            lambda u=user: agent.invoke({"messages": [HumanMessage("Lyon")]}, context={"user": u})
        )
        label = f"user {user}: weather in Lyon?"
        print(
            f"{label:<46} {model.calls - calls:>5} {len(tool_runs) - runs:>5} "
            f"{seconds * 1000:>7.1f}"
        )


def timed(call: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def main() -> None:
    settings = Settings.from_env(socket_connect_timeout=0.2, retries=0)
    engine = CacheEngine(settings, prefix=PREFIX)
    try:
        check_connection(engine.client)
        where = f"Redis at {settings.redacted_url()}"
        on_redis = True
    except RedisUnavailableError:
        where = "the in-memory tier (Redis unreachable)"
        on_redis = False
    print(f"Caching on {where}\n")

    llm_cache = LLMCache(engine=engine)
    embeddings = CachedEmbeddings(SimulatedEmbeddings(), engine=engine)
    llm_cache.clear()  # a fresh start for the demo: one INCR, nothing scanned
    embeddings.clear()
    model = SimulatedChat(cache=llm_cache)

    rows: list[tuple[str, str, float]] = []
    for question in ["What is Redis?", "What is LangGraph?", "What is Redis?", "What is Redis?"]:
        hits = llm_cache.engine.stats()[llm_cache.namespace].hits
        _, seconds = timed(lambda q=question: model.invoke(q))
        # A hit returns exactly what was stored (LangChain's contract); the stats count it.
        hit = llm_cache.engine.stats()[llm_cache.namespace].hits > hits
        rows.append((f"LLM: {question}", "hit" if hit else "miss", seconds))
    texts = [f"document {i}" for i in range(300)]
    for run in ("cold", "warm"):
        _, seconds = timed(lambda: embeddings.embed_documents(texts))
        outcome = "hits" if run == "warm" else "misses"
        rows.append((f"embed 300 documents ({run})", outcome, seconds))

    print(f"{'call':<40} {'cache':<7} {'ms':>9}")
    for name, outcome, seconds in rows:
        print(f"{name:<40} {outcome:<7} {seconds * 1000:>9.1f}")

    llm_saved = sum(LLM_SECONDS for _, outcome, _ in rows[:4] if outcome == "hit")
    embed_saved = rows[4][2] - rows[5][2]
    print(f"\ntime saved: LLM {llm_saved:.1f} s, embeddings {embed_saved:.2f} s")
    semantic_demo(engine)
    agent_demo(engine)
    print(f"\n{'namespace':<52} {'hits':>5} {'misses':>6} {'sets':>5} {'hit ratio':>9}")
    for namespace, stats in engine.stats().items():
        print(
            f"{namespace[:52]:<52} {stats.hits:>5} {stats.misses:>6} {stats.sets:>5} "
            f"{stats.hit_ratio:>9.0%}"
        )
    if on_redis:
        print()
        remove_demo_keys(engine.client, PREFIX)
        store_demo(settings)
    else:
        print("\nthe long-term memory store connects to Redis when it opens: skipped")
    engine.close()


if __name__ == "__main__":
    main()
