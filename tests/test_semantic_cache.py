"""SemanticLLMCache on real servers: an exact repeat hits without an embedding, a rephrasing hits
the answer of the prompt it means, another meaning misses, and nothing crosses an llm_string.
The embedding is a bag of words (rephrasings that keep the words embed alike), so every number
here follows from the texts."""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cache_helpers import private_metrics, unique
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import Generation

from redis_checkpoint import SemanticLLMCache, Settings
from redis_checkpoint.cache.guard import guard_conflict, guard_features
from redis_checkpoint.cache.semantic import question_of
from redis_checkpoint.testing import RedisServer

LLM = "model=fake-1,temperature=0"
Chat = list[dict[str, str]]
CAPITAL = "What is the capital of France?"


class Words(Embeddings):
    """Counts each word (lowercased, punctuation dropped) in one of 64 dims."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    @staticmethod
    def vector(text: str) -> list[float]:
        vector = [0.0] * 64
        for word in re.findall(r"[a-z0-9']+", text.lower()):
            vector[hashlib.sha256(word.encode()).digest()[0] % 64] += 1.0
        return vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        if self.fail:
            raise ConnectionError("the embeddings API is down")
        self.calls += 1
        return self.vector(text)


def cosine(a: str, b: str) -> float:
    x, y = Words.vector(a), Words.vector(b)
    dot = sum(p * q for p, q in zip(x, y, strict=True))
    return dot / math.sqrt(sum(p * p for p in x) * sum(q * q for q in y))


def refused(stored: str, asked: str) -> bool:
    return guard_conflict(guard_features(stored), guard_features(asked))


def answer(text: str) -> list[Generation]:
    return [Generation(text=text)]


def texts(found: Any) -> list[str] | None:
    return None if found is None else [generation.text for generation in found]


@pytest.fixture
def words() -> Words:
    return Words()


@pytest.fixture
def cache(redis_url: str, words: Words) -> Iterator[SemanticLLMCache]:
    semantic = SemanticLLMCache(words, redis_url, prefix=unique("sem"), metrics=private_metrics())
    yield semantic
    semantic.close()


def test_an_exact_repeat_hits_without_an_embedding(cache: SemanticLLMCache, words: Words) -> None:
    cache.update(CAPITAL, LLM, answer("Paris"))
    assert words.calls == 1  # the stored prompt's vector
    assert texts(cache.lookup(CAPITAL, LLM)) == ["Paris"]
    assert words.calls == 1
    stats = cache.engine.stats()[cache.namespace]
    assert (stats.hits, stats.misses, stats.semantic_hits) == (1, 0, 0)


def test_a_rephrasing_hits_and_another_meaning_misses(cache: SemanticLLMCache) -> None:
    rephrased, other = "what is the capital of france", "What is the capital of Spain?"
    assert cosine(CAPITAL, rephrased) == pytest.approx(1.0)
    assert cosine(CAPITAL, other) < cache.threshold
    cache.update(CAPITAL, LLM, answer("Paris"))
    assert texts(cache.lookup(rephrased, LLM)) == ["Paris"]
    assert cache.lookup(other, LLM) is None
    stats = cache.engine.stats()[cache.namespace]
    assert (stats.hits, stats.misses, stats.semantic_hits) == (1, 1, 1)
    metrics = cache.engine.core.metrics
    name = metrics.name("cache_semantic_hits_total")
    assert metrics.registry.get_sample_value(name, {"cache_type": "llm"}) == 1
    match = cache.nearest(other, LLM)
    assert match is not None and match.key == cache.key(CAPITAL, LLM)
    assert match.similarity == pytest.approx(cosine(CAPITAL, other), abs=1e-6)


def test_nothing_crosses_an_llm_string(cache: SemanticLLMCache) -> None:
    cache.update(CAPITAL, LLM, answer("Paris"))
    assert cache.lookup(CAPITAL, "model=fake-1,temperature=0.7") is None
    assert cache.lookup("what is the capital of france", "model=fake-2,temperature=0") is None
    assert cache.nearest(CAPITAL, "model=fake-2,temperature=0") is None


def test_the_guard_refuses_other_numbers_and_negations(
    redis_url: str, cache: SemanticLLMCache
) -> None:
    sum_of = "What is 2 plus 2?"
    cache.update(sum_of, LLM, answer("4"))
    safe = "Is it safe to eat raw eggs?"
    cache.update(safe, LLM, answer("Mostly, with care."))
    for asked in (
        "What is 2 plus 3?",
        "Is it not safe to eat raw eggs?",
        "Isn't it safe to eat raw eggs?",
    ):
        match = cache.nearest(asked, LLM)
        assert match is not None and match.guarded
        assert match.similarity >= 0.7  # close in words, another question
        assert cache.lookup(asked, LLM) is None
    assert texts(cache.lookup("what is 2 plus 2", LLM)) == ["4"]
    assert not refused(sum_of, "what is two plus 2")  # number words
    assert not refused("It has 1,000 rooms", "it has 1000 rooms")
    unguarded = SemanticLLMCache(
        Words(), redis_url, prefix=unique("sem-unguarded"), guard=False, threshold=0.7
    )
    unguarded.update(sum_of, LLM, answer("4"))
    assert texts(unguarded.lookup("What is 2 plus 3?", LLM)) == ["4"]  # the false hit it stops
    unguarded.close()


async def test_the_async_twin(cache: SemanticLLMCache) -> None:
    await cache.aupdate(CAPITAL, LLM, answer("Paris"))
    assert texts(await cache.alookup("WHAT is the capital of France", LLM)) == ["Paris"]
    assert await cache.alookup("Who painted the Mona Lisa?", LLM) is None
    assert texts(cache.lookup(CAPITAL, LLM)) == ["Paris"]  # sync and async share the entries
    await cache.aclose()


def test_ttl_clear_tags_and_bypass(redis_url: str, words: Words) -> None:
    cache = SemanticLLMCache(words, redis_url, prefix=unique("sem-ttl"), ttl=1, tags=["v1"])
    cache.update(CAPITAL, LLM, answer("Paris"))
    with cache.bypass():
        assert cache.lookup(CAPITAL, LLM) is None
        cache.update("Who wrote Hamlet?", LLM, answer("Shakespeare"))
    assert cache.lookup("Who wrote Hamlet?", LLM) is None  # the bypassed update stored nothing
    with cache.bypass(semantic_only=True):
        assert texts(cache.lookup(CAPITAL, LLM)) == ["Paris"]
        assert cache.lookup("what is the capital of france", LLM) is None
    assert cache.invalidate_tags("v1") >= 1
    assert cache.lookup("what is the capital of france", LLM) is None  # its answer is gone
    cache.update(CAPITAL, LLM, answer("Paris"))
    cache.clear()
    assert cache.lookup(CAPITAL, LLM) is None
    cache.update(CAPITAL, LLM, answer("Paris"))
    time.sleep(1.2)
    assert cache.lookup("what is the capital of france", LLM) is None
    cache.close()


def test_prompts_are_stored_only_when_asked(
    redis_url: str, redis_server: RedisServer, words: Words
) -> None:
    for store_prompts in (False, True):
        prefix = unique("sem-clear")
        cache = SemanticLLMCache(words, redis_url, prefix=prefix, store_prompts=store_prompts)
        secret = "My account number is 12345, what is my balance?"
        cache.update(secret, LLM, answer("42"))
        with redis_server.client() as client:
            everything = b"".join(
                key + repr(client.dump(key)).encode() for key in client.scan_iter(f"{prefix}*")
            )
        assert (b"12345" in everything) is store_prompts
        match = cache.nearest("my account number is 12345 what is my balance", LLM)
        assert match is not None
        assert match.prompt == (secret if store_prompts else None)
        cache.close()


def test_failing_embeddings_or_redis_are_misses_not_errors(
    cache: SemanticLLMCache, words: Words, dead_url: str
) -> None:
    cache.update(CAPITAL, LLM, answer("Paris"))
    words.fail = True
    assert texts(cache.lookup(CAPITAL, LLM)) == ["Paris"]  # exact: no embedding needed
    assert cache.lookup("what is the capital of france", LLM) is None
    cache.update("Who wrote Hamlet?", LLM, answer("Shakespeare"))  # stored, not indexed
    assert texts(cache.lookup("Who wrote Hamlet?", LLM)) == ["Shakespeare"]
    assert cache.engine.stats()[cache.namespace].errors >= 2
    settings = Settings(url=dead_url, socket_timeout=0.2, retries=0)
    away = SemanticLLMCache(Words(), settings, prefix=unique("sem-away"))
    for _ in range(3):  # misses, while the breakers open (the engine's empties its memory tier)
        assert away.lookup("Who wrote Hamlet?", LLM) is None
    away.update(CAPITAL, LLM, answer("Paris"))  # into the memory tiers
    assert texts(away.lookup(CAPITAL, LLM)) == ["Paris"]
    # The store answers from what this process holds: the namespace it wrote to.
    assert texts(away.lookup("what is the capital of france", LLM)) == ["Paris"]
    assert away.lookup("What is the capital of Spain?", LLM) is None
    away.close()


def test_a_chat_model_reuses_the_answer_of_a_rephrased_question(cache: SemanticLLMCache) -> None:
    model = FakeListChatModel(responses=["Paris.", "Madrid."], cache=cache)
    assert model.invoke(CAPITAL).content == "Paris."
    assert model.invoke("what is the capital of france").content == "Paris."  # not asked
    assert model.invoke("What is the capital of Spain?").content == "Madrid."


def test_marked_hits_carry_the_similarity(redis_url: str, words: Words) -> None:
    cache = SemanticLLMCache(words, redis_url, prefix=unique("sem-mark"), mark_hits=True)
    cache.update(CAPITAL, LLM, answer("Paris"))
    [exact] = cache.lookup(CAPITAL, LLM) or []
    assert exact.generation_info == {"cache_hit": True, "cache_similarity": 1.0}
    [similar] = cache.lookup("the capital of France, what is it?", LLM) or []
    assert similar.generation_info is not None
    assert similar.generation_info["cache_similarity"] == pytest.approx(
        cosine(CAPITAL, "the capital of France, what is it?"), abs=1e-6
    )
    cache.close()


def test_on_the_search_module_the_server_finds_the_neighbours(
    search_server: RedisServer, words: Words
) -> None:
    cache = SemanticLLMCache(
        words, search_server.url, prefix=unique("sem-module"), vector_search="module"
    )
    cache.update(CAPITAL, LLM, answer("Paris"))
    assert texts(cache.lookup("what is the capital of france", LLM)) == ["Paris"]
    assert cache.lookup("What is the capital of Spain?", LLM) is None
    store = cache._store
    assert store is not None and store.knn is not None
    cache.close()


def test_a_threshold_outside_zero_to_one_is_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="threshold"):
        SemanticLLMCache(Words(), redis_url, threshold=1.5)


def test_a_chat_prompt_matches_on_its_question_in_the_same_context(
    cache: SemanticLLMCache,
) -> None:
    rules = "You are a helpful travel agent. " * 30  # long: it must not make prompts alike
    asked = [SystemMessage(rules), HumanMessage("What is the capital of France?")]
    cache.update(dumps(asked), LLM, answer("Paris"))
    rephrased = [SystemMessage(rules), HumanMessage("what is the capital of france")]
    assert texts(cache.lookup(dumps(rephrased), LLM)) == ["Paris"]
    other = [SystemMessage(rules), HumanMessage("How do I renew my passport?")]
    assert cache.lookup(dumps(other), LLM) is None
    elsewhere = [SystemMessage("You are a pirate."), HumanMessage(CAPITAL)]
    assert cache.lookup(dumps(elsewhere), LLM) is None  # another context
    after_a_tool = [*asked, AIMessage("", tool_calls=[]), ToolMessage("42", tool_call_id="1")]
    cache.update(dumps(after_a_tool), LLM, answer("done"))
    assert texts(cache.lookup(dumps(after_a_tool), LLM)) == ["done"]  # exact repeats only
    assert question_of(dumps(after_a_tool)) is None
    blocks = [HumanMessage(content=[{"type": "text", "text": "hi there"}])]
    assert question_of(dumps(blocks)) == ("[]", "hi there")
    assert question_of('[{"not": "a message"}]') == ("[]", '[{"not": "a message"}]')


def test_any_sdk_call_reuses_a_similar_calls_result(cache: SemanticLLMCache) -> None:
    calls: list[str] = []

    @cache.cached_llm_call()
    def complete(
        *, model: str, messages: list[dict[str, str]], api_key: str = ""
    ) -> dict[str, Any]:
        calls.append(messages[-1]["content"])
        return {"choices": [{"message": {"role": "assistant", "content": f"#{len(calls)}"}}]}

    system = {"role": "system", "content": "Answer briefly."}
    first = complete(model="m", messages=[system, {"role": "user", "content": CAPITAL}])
    again = complete(
        model="m",
        messages=[system, {"role": "user", "content": "what is the capital of france"}],
        api_key="another caller's key",  # credentials are not part of the key
    )
    assert again == first and calls == [CAPITAL]
    complete(model="m", messages=[system, {"role": "user", "content": "Capital of Spain?"}])
    complete(model="other", messages=[system, {"role": "user", "content": CAPITAL}])
    assert len(calls) == 3  # another question; another model
    with pytest.raises(TypeError, match="messages, input, prompt"):
        cached = cache.cached_llm_call()(lambda question: question)
        cached("no keyword")
    stats = cache.engine.stats()[cache.namespace]
    assert (stats.hits, stats.semantic_hits, stats.misses) == (1, 1, 3)


def test_concurrent_identical_sdk_calls_run_once(cache: SemanticLLMCache) -> None:
    calls: list[int] = []
    started = threading.Event()

    @cache.cached_llm_call()
    def slow(*, prompt: str) -> str:
        calls.append(1)
        started.set()
        time.sleep(0.3)
        return prompt.upper()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: slow(prompt="same question"), range(4)))
    assert results == ["SAME QUESTION"] * 4 and calls == [1]


async def test_an_async_sdk_call(cache: SemanticLLMCache) -> None:
    calls: list[str] = []

    @cache.cached_llm_call()
    async def respond(*, model: str, input: str, temperature: float = 0.0) -> str:
        calls.append(input)
        return f"answer to {input}"

    assert await respond(model="m", input=CAPITAL) == f"answer to {CAPITAL}"
    assert await respond(model="m", input="what is the capital of france") == f"answer to {CAPITAL}"
    assert await respond(model="m", input="What is 2 plus 2?") == "answer to What is 2 plus 2?"
    assert calls == [CAPITAL, "What is 2 plus 2?"]
    sampled = await respond(model="m", input=CAPITAL, temperature=0.9)
    assert sampled == f"answer to {CAPITAL}" and len(calls) == 3  # sampling: never cached
    await cache.aclose()


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("How long is the flight from London to New York?", "Flight from New York to London?"),
        ("How do I convert a list to a set?", "How do I convert a set to a list?"),
        ("What is the largest planet?", "What is the smallest planet?"),
        ("What is the cheapest plan?", "What is the most expensive plan?"),
        ("How do I enable dark mode?", "How do I disable dark mode?"),
        ("Is the Louvre open on Tuesdays?", "Is the Louvre open on Mondays?"),
        ("What should I eat before a marathon?", "What should I eat after a marathon?"),
        ("What fruits are in season in October?", "What fruits are in season?"),
        ("Is it safe to eat raw eggs?", "Isn't it safe to eat raw eggs?"),
    ],
)
def test_the_guard_refuses_what_flips_the_answer(stored: str, asked: str) -> None:
    assert refused(stored, asked) and refused(asked, stored)


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("How long is the flight from London to New York?", "London to New York: flight time?"),
        ("What is the largest planet?", "Which planet is the biggest?"),
        ("How do I reverse a list in Python?", "What's the best way to reverse a Python list?"),
        ("What fruits are in season in October?", "which fruits are in season in october"),
        ("What is 15 percent of 80?", "what's 15% of 80"),
    ],
)
def test_the_guard_lets_rephrasings_through(stored: str, asked: str) -> None:
    assert not refused(stored, asked) and not refused(asked, stored)


def test_stored_features_that_are_not_the_guards_are_refused() -> None:
    asked = guard_features("What is the capital of France?")
    for foreign in (None, "a string", {"fixed": asked["fixed"]}, {"sides": "x"}):
        assert guard_conflict(foreign, asked)
