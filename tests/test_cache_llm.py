"""LLMCache with LangChain chat models, and cached_llm_call around a plain SDK-style function."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from cache_helpers import engine, unique
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult, Generation

from redis_checkpoint import CacheEngine, LLMCache, cached_llm_call


class CountingChat(BaseChatModel):
    """A chat model that answers with a tool call and counts how often it really ran."""

    model_name: str = "counting-1"
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "counting-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls += 1
        message = AIMessage(
            content=[
                {"type": "text", "text": f"{self.model_name} on {messages[-1].content}"},
                {"type": "text", "text": "calling a tool"},
            ],
            tool_calls=[{"name": "lookup", "args": {"q": "weather", "n": 2}, "id": "call-1"}],
            usage_metadata={"input_tokens": 12, "output_tokens": 7, "total_tokens": 19},
            response_metadata={"model_name": self.model_name, "finish_reason": "tool_calls"},
            id="run-1",
        )
        return ChatResult(
            generations=[ChatGeneration(message=message, generation_info={"logprobs": None})]
        )


@pytest.fixture
def llm_cache(redis_url: str) -> Iterator[LLMCache]:
    with engine(redis_url, unique("llm")) as cache:
        yield LLMCache(engine=cache)


def test_two_identical_invocations_call_the_model_once(llm_cache: LLMCache) -> None:
    model = CountingChat(cache=llm_cache)
    first = model.invoke([HumanMessage("what is the weather?")])
    second = model.invoke([HumanMessage("what is the weather?")])
    assert model.calls == 1
    assert second.content == first.content and second.tool_calls == first.tool_calls
    # By default a hit is what was stored (the BaseCache contract); the counters tell hits apart.
    assert second.response_metadata == first.response_metadata
    assert llm_cache.engine.stats()[llm_cache.namespace].hits == 1
    assert second.usage_metadata is not None and second.usage_metadata["total_tokens"] == 19
    model.invoke([HumanMessage("another question")])
    assert model.calls == 2


def test_mark_hits_opt_in_marks_what_a_hit_returns_not_the_entry(llm_cache: LLMCache) -> None:
    marking = LLMCache(engine=llm_cache.engine, mark_hits=True)
    model = CountingChat(cache=marking, model_name="marked")
    first = model.invoke([HumanMessage("what is the weather?")])
    second = model.invoke([HumanMessage("what is the weather?")])
    assert model.calls == 1
    assert second.response_metadata["cache_hit"] is True
    assert "cache_hit" not in first.response_metadata
    unmarked = CountingChat(cache=llm_cache, model_name="marked")
    third = unmarked.invoke([HumanMessage("what is the weather?")])
    assert unmarked.calls == 0  # a hit on the same entry...
    assert "cache_hit" not in third.response_metadata  # ...which holds no marker


async def test_async_invocations_use_the_native_async_path(llm_cache: LLMCache) -> None:
    model = CountingChat(cache=llm_cache, model_name="async-model")
    first = await model.ainvoke([HumanMessage("hello")])
    second = await model.ainvoke([HumanMessage("hello")])
    assert model.calls == 1 and second.content == first.content
    assert llm_cache.engine.stats()[llm_cache.namespace].hits == 1
    assert llm_cache.async_engine.round_trips >= 2  # the async driver did the work
    await llm_cache.aclear()
    await model.ainvoke([HumanMessage("hello")])
    assert model.calls == 2
    await llm_cache.aclose()


def test_fake_chat_model_is_called_once(llm_cache: LLMCache) -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage("only answer")]), cache=llm_cache)
    assert model.invoke("hi").content == "only answer"
    assert model.invoke("hi").content == "only answer"  # a second real call would raise


def test_tool_calling_generation_round_trips_exactly(llm_cache: LLMCache) -> None:
    exact = llm_cache  # the default: a hit is exactly what was stored
    marking = LLMCache(engine=llm_cache.engine, mark_hits=True)
    message = AIMessage(
        content=[
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "x"}},
        ],
        tool_calls=[{"name": "search", "args": {"q": "x", "deep": True}, "id": "toolu_1"}],
        usage_metadata={
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_token_details": {"cache_read": 3},
        },
        response_metadata={"model_name": "m", "stop_reason": "tool_use", "scores": [0.5, 1e-9]},
        additional_kwargs={"refusal": None},
        id="msg-1",
    )
    stored = [ChatGeneration(message=message, generation_info={"finish_reason": "tool_use"})]
    exact.update("prompt", "llm-string", stored)
    found = exact.lookup("prompt", "llm-string")
    assert found == stored
    assert found is not None and isinstance(found[0], ChatGeneration)
    assert found[0].message.tool_calls == message.tool_calls
    plain = [Generation(text="completion", generation_info={"n": 1})]
    exact.update("p2", "llm-string", plain)
    assert exact.lookup("p2", "llm-string") == plain
    marked = marking.lookup("prompt", "llm-string")
    assert marked is not None and marked[0].generation_info == {
        "finish_reason": "tool_use",
        "cache_hit": True,
    }


def test_models_do_not_share_entries(llm_cache: LLMCache) -> None:
    small = CountingChat(cache=llm_cache, model_name="small")
    large = CountingChat(cache=llm_cache, model_name="large")
    for _ in range(2):
        assert "small on" in str(small.invoke("same prompt").content)
        assert "large on" in str(large.invoke("same prompt").content)
    assert (small.calls, large.calls) == (1, 1)
    small.invoke("same prompt", temperature=0.9)
    assert small.calls == 2  # other invocation parameters, other entry


def test_clear_removes_only_this_cache(redis_url: str) -> None:
    with engine(redis_url, unique("llmclear")) as shared:
        mine = LLMCache(engine=shared, namespace="llm-a")
        theirs = LLMCache(engine=shared, namespace="llm-b")
        generations = [Generation(text="x")]
        mine.update("p", "m", generations)
        theirs.update("p", "m", generations)
        mine.clear()
        assert mine.lookup("p", "m") is None and theirs.lookup("p", "m") is not None
        mine.update("empty", "m", [])
        assert mine.lookup("empty", "m") is None  # never a hit with no generations
        mine.close()  # the engine was passed in: it stays open for the other face
        assert theirs.lookup("p", "m") is not None


def test_corrupt_or_foreign_llm_entries_are_misses(llm_cache: LLMCache) -> None:
    engine = llm_cache.engine
    key = LLMCache.key("p", "m")
    foreign = [
        {"not": "generations"},
        [{"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {}}],
        [{"class": "ChatGeneration", "message_class": "SystemMessage", "message": {}}],
        [{"class": "ChatGeneration", "message_class": "AIMessage", "message": {"content": 5}}],
    ]
    for value in foreign:
        engine.set(llm_cache.namespace, key, value)
        assert llm_cache.lookup("p", "m") is None
    assert engine.stats()[llm_cache.namespace].errors == len(foreign)


def test_a_response_the_cache_cannot_store_is_returned_not_raised(llm_cache: LLMCache) -> None:
    class Opaque:
        pass

    class OddChat(CountingChat):
        def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
            result = super()._generate(*args, **kwargs)
            result.generations[0].message.additional_kwargs["parsed"] = Opaque()
            return result

    model = OddChat(cache=llm_cache, model_name="odd")
    assert model.invoke("q").additional_kwargs["parsed"] is not None
    assert model.invoke("q") is not None and model.calls == 2  # answered, just not cached
    assert llm_cache.engine.stats()[llm_cache.namespace].errors == 2


def test_sdk_call_decorator_with_policy(redis_url: str) -> None:
    calls: list[dict[str, Any]] = []
    with engine(redis_url, unique("sdk")) as cache:

        @cached_llm_call(cache)
        def create(*, model: str, messages: list[dict[str, str]], **options: Any) -> dict[str, Any]:
            calls.append(options)
            return {"model": model, "text": f"answer {len(calls)}"}

        messages = [{"role": "user", "content": "hi"}]
        first = create(model="m", messages=messages, temperature=0, api_key="sk-1")
        again = create(model="m", messages=messages, temperature=0, api_key="sk-2")
        assert first == again and len(calls) == 1  # the API key is not part of the key
        create(model="other", messages=messages, temperature=0)
        assert len(calls) == 2
        create(model="m", messages=messages, temperature=0.7)
        create(model="m", messages=messages, temperature=0.7)
        assert len(calls) == 4  # sampling calls bypass the cache
        stored = cache.stats()["llm-calls"].sets
        assert stored == 2


async def test_async_sdk_call_decorator_single_flight(redis_url: str) -> None:
    with engine(redis_url, unique("asdk")) as cache:
        twin = cache.async_twin()
        runs: list[int] = []
        try:

            @cached_llm_call(twin, should_cache=lambda args, kwargs: True)
            async def complete(prompt: str) -> str:
                runs.append(1)
                await asyncio.sleep(0.05)
                return prompt.upper()

            assert await asyncio.gather(*(complete("hey") for _ in range(5))) == ["HEY"] * 5
            assert len(runs) == 1
        finally:
            await twin.aclose()

    with pytest.raises(TypeError, match="AsyncCacheEngine"):

        @cached_llm_call(CacheEngine.__new__(CacheEngine))
        async def wrong(prompt: str) -> str:
            return prompt


def test_global_llm_cache(llm_cache: LLMCache) -> None:
    from langchain_core.globals import get_llm_cache, set_llm_cache

    previous = get_llm_cache()
    set_llm_cache(llm_cache)
    try:
        model = CountingChat(model_name="global")
        first = model.invoke("q")
        assert model.invoke("q").response_metadata == first.response_metadata
        assert model.calls == 1
        assert llm_cache.engine.stats()[llm_cache.namespace].hits == 1
    finally:
        set_llm_cache(previous)
