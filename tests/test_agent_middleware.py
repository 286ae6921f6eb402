"""ModelCacheMiddleware and ToolCacheMiddleware in LangChain agents (create_agent) on a real
redis-server: a replayed run calls neither the model nor the tools and ends with the same
messages; scopes keep users apart; errors, Commands and what cannot round-trip are not cached;
a Redis outage or a failing cache only costs the hits."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from cache_helpers import engine, private_metrics, unique
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse
from langchain.agents.structured_output import ProviderStrategy, ToolStrategy
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache, InMemoryCache
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool, InjectedToolCallId, ToolException, tool
from langgraph.types import Command
from pydantic import BaseModel

from redis_checkpoint import AsyncCacheEngine, CacheEngine, LLMCache, SemanticLLMCache
from redis_checkpoint.cache.agent import (
    AgentCacheStats,
    ModelCacheMiddleware,
    ToolCacheMiddleware,
    _model_call_key,
)
from redis_checkpoint.metrics import Metrics

# -- a scripted model, counting tools ----------------------------------------------------------


class Forecast(BaseModel):
    city: str
    sky: str


class ScriptedChat(BaseChatModel):
    """Asks for the weather of the user's city, then answers from the tool's result (as text,
    as JSON for a provider response format, or as a call of ``answer_tool``). Makes up its
    tool-call ids, as providers do, and counts how often it really ran."""

    calls: int = 0
    json_answer: bool = False
    answer_tool: str | None = None

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls += 1
        last = messages[-1]
        if not isinstance(last, ToolMessage):
            city = str(last.content).split()[-1]
            call = {"name": "weather", "args": {"city": city, "units": "C"}, "id": _call_id()}
            message = AIMessage(content="", tool_calls=[call])
        elif self.answer_tool is not None:
            args = {"city": str(last.content).split()[-1], "sky": "sunny"}
            call = {"name": self.answer_tool, "args": args, "id": _call_id()}
            message = AIMessage(content="", tool_calls=[call])
        else:
            text = f"It is {last.content}."
            if self.json_answer:
                text = Forecast(city=str(last.content).split()[-1], sky="sunny").model_dump_json()
            message = AIMessage(
                content=text,
                usage_metadata={"input_tokens": 21, "output_tokens": 5, "total_tokens": 26},
                response_metadata={"model_name": "scripted-1", "finish_reason": "stop"},
            )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChat:  # type: ignore[override]
        return self


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:12]}"


@dataclass
class User:
    name: str


def by_user(request: Any) -> str:
    return str(request.runtime.context.name)


class Tools:
    """The agent's tools, counting their runs."""

    def __init__(self) -> None:
        self.runs: list[str] = []

        @tool
        def weather(city: str, units: str) -> str:
            """The weather in a city."""
            self.runs.append(city)
            return f"sunny, 21 {units} in {city}"

        @tool
        def flaky(city: str, units: str) -> str:
            """Fails the way a tool reports a failure to the model."""
            self.runs.append(city)
            raise ToolException("the weather service is down")

        @tool
        def broken(city: str, units: str) -> str:
            """Raises."""
            self.runs.append(city)
            raise RuntimeError("boom")

        @tool
        def commanding(
            city: str, units: str, tool_call_id: Annotated[str, InjectedToolCallId]
        ) -> Command[Any]:
            """Updates the state itself."""
            self.runs.append(city)
            reply = ToolMessage(f"sunny in {city}", tool_call_id=tool_call_id)
            return Command(update={"messages": [reply]})

        @tool(response_format="content_and_artifact")
        def with_object(city: str, units: str) -> tuple[str, object]:
            """Returns an artifact the cache cannot store."""
            self.runs.append(city)
            return f"sunny in {city}", object()

        flaky = flaky.model_copy(update={"handle_tool_error": True})
        self.by_name: dict[str, BaseTool] = {
            t.name: t for t in (weather, flaky, broken, commanding, with_object)
        }

    def named(self, name: str) -> BaseTool:
        """The tool ``name``, renamed ``weather`` (the name the scripted model calls)."""
        return self.by_name[name].model_copy(update={"name": "weather"})


def ask(city: str = "Paris") -> dict[str, Any]:
    return {"messages": [HumanMessage(city)]}


def without_ids(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [m.model_dump(exclude={"id"}) for m in messages]


@pytest.fixture
def cache_engine(redis_url: str) -> Iterator[CacheEngine]:
    with engine(redis_url, unique("agent")) as built:
        yield built


@pytest.fixture
def metrics() -> Metrics:
    return private_metrics()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def agent_with(
    model: ScriptedChat,
    tools: list[BaseTool],
    *middleware: Any,
    **options: Any,
) -> Any:
    return create_agent(
        model, tools=tools, middleware=list(middleware), context_schema=User, **options
    )


# -- the replay --------------------------------------------------------------------------------


def test_a_second_identical_run_calls_neither_model_nor_tool(
    cache_engine: CacheEngine, metrics: Metrics
) -> None:
    model, tools = ScriptedChat(), Tools()
    models = ModelCacheMiddleware(LLMCache(engine=cache_engine), scope=by_user, metrics=metrics)
    tool_cache = ToolCacheMiddleware(cache_engine, tools={"weather": 600}, scope=by_user)
    agent = agent_with(model, [tools.named("weather")], models, tool_cache)

    first = agent.invoke(ask(), context=User("alice"))
    second = agent.invoke(ask(), context=User("alice"))

    assert (model.calls, tools.runs) == (2, ["Paris"])
    assert without_ids(second["messages"]) == without_ids(first["messages"])
    # The model's messages come back as they were: ids, tool-call ids, usage, metadata.
    ai = [m for m in first["messages"] if isinstance(m, AIMessage)]
    assert [m for m in second["messages"] if isinstance(m, AIMessage)] == ai
    assert ai[-1].usage_metadata == {"input_tokens": 21, "output_tokens": 5, "total_tokens": 26}
    assert second["messages"][-1].content == "It is sunny, 21 C in Paris."
    model_stats, tool_stats = models.stats(), tool_cache.stats()
    assert (model_stats.hits, model_stats.misses, model_stats.bypasses) == (2, 2, 0)
    assert (tool_stats.hits, tool_stats.misses, tool_stats.bypasses) == (1, 1, 0)
    assert model_stats.seconds_saved > 0 and tool_stats.seconds_saved > 0
    assert model_stats.errors == tool_stats.errors == 0


def test_hits_misses_and_time_saved_are_counted_in_metrics(cache_engine: CacheEngine) -> None:
    model, tools = ScriptedChat(), Tools()
    # Both count where their cache engine counts (a private registry here).
    models = ModelCacheMiddleware(LLMCache(engine=cache_engine), scope="shared")
    tool_cache = ToolCacheMiddleware(cache_engine, tools={"weather": 600}, scope="shared")
    agent = agent_with(model, [tools.named("weather")], models, tool_cache)
    agent.invoke(ask(), context=User("alice"))
    agent.invoke(ask(), context=User("bob"))  # "shared": bob reuses alice's answers

    assert (model.calls, len(tools.runs)) == (2, 1)
    metrics = cache_engine.core.metrics
    model_labels = {"cache_type": "agent_model", "operation": "model_call"}
    assert sample(metrics, "cache_hits_total", **model_labels) == 2
    assert sample(metrics, "cache_misses_total", **model_labels) == 2
    tool_labels = {"cache_type": "agent_tool", "operation": "weather"}
    assert sample(metrics, "cache_hits_total", **tool_labels) == 1
    assert sample(metrics, "cache_misses_total", **tool_labels) == 1
    # The engine's own lookups of the tool namespace are not counted a second time.
    assert sample(metrics, "cache_hits_total", cache_type="agent_tool", operation="get") == 0
    saved = "cache_time_saved_seconds_total"
    for middleware in (models, tool_cache):
        seconds = middleware.stats().seconds_saved
        assert seconds > 0
        assert sample(metrics, saved, cache_type=middleware.cache_type) == pytest.approx(seconds)
    assert sample(metrics, "cache_errors_total", cache_type="agent_model", kind="operation") == 0


def test_another_user_does_not_reuse_and_shared_is_explicit(cache_engine: CacheEngine) -> None:
    model, tools = ScriptedChat(), Tools()
    models = ModelCacheMiddleware(LLMCache(engine=cache_engine), scope=by_user)
    tool_cache = ToolCacheMiddleware(cache_engine, tools={"weather": 600}, scope=by_user)
    agent = agent_with(model, [tools.named("weather")], models, tool_cache)
    agent.invoke(ask(), context=User("alice"))
    agent.invoke(ask(), context=User("bob"))
    assert (model.calls, tools.runs) == (4, ["Paris", "Paris"])
    agent.invoke(ask(), context=User("bob"))
    assert (model.calls, tools.runs) == (4, ["Paris", "Paris"])
    # A user called "shared" does not get the explicitly shared entries, and back.
    shared = ModelCacheMiddleware(LLMCache(engine=cache_engine), scope="shared")
    agent_with(model, [tools.named("weather")], shared).invoke(ask(), context=User("x"))
    assert model.calls == 6
    agent.invoke(ask(), context=User("shared"))
    assert model.calls == 8


def test_scope_is_required_and_checked(cache_engine: CacheEngine) -> None:
    cache = LLMCache(engine=cache_engine)
    with pytest.raises(TypeError):
        ModelCacheMiddleware(cache)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="shared"):
        ModelCacheMiddleware(cache, scope="alice")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="BaseCache"):
        ModelCacheMiddleware(cache_engine, scope="shared")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TTL"):
        ToolCacheMiddleware(cache_engine, tools={"weather": 0}, scope="shared")
    with pytest.raises(TypeError, match="once"):
        ToolCacheMiddleware(cache_engine, engine=cache_engine, tools={}, scope="shared")


def test_a_failing_scope_function_means_no_caching_not_a_failed_call(
    cache_engine: CacheEngine,
) -> None:
    def no_user(request: Any) -> str:
        raise KeyError("user")

    model, tools = ScriptedChat(), Tools()
    models = ModelCacheMiddleware(LLMCache(engine=cache_engine), scope=no_user)
    tool_cache = ToolCacheMiddleware(cache_engine, tools={"weather": 600}, scope=no_user)
    agent = agent_with(model, [tools.named("weather")], models, tool_cache)
    for _ in range(2):
        assert agent.invoke(ask(), context=User("alice"))["messages"][-1].content.startswith("It")
    assert (model.calls, len(tools.runs)) == (4, 2)
    assert models.stats().bypasses == 4 and tool_cache.stats().bypasses == 2


# -- what is not cached ------------------------------------------------------------------------


def _run_twice(agent: Any) -> None:
    for _ in range(2):
        agent.invoke(ask(), context=User("alice"))


@pytest.mark.parametrize("name", ["flaky", "commanding", "with_object"])
def test_errors_commands_and_unstorable_artifacts_are_not_cached(
    cache_engine: CacheEngine, name: str
) -> None:
    tools = Tools()
    tool_cache = ToolCacheMiddleware(cache_engine, tools={"weather": 600}, scope=by_user)
    _run_twice(agent_with(ScriptedChat(), [tools.named(name)], tool_cache))
    assert tools.runs == ["Paris", "Paris"]
    stats = tool_cache.stats()
    assert (stats.hits, stats.misses, stats.bypasses, stats.errors) == (0, 2, 2, 0)


def test_a_tool_that_raises_is_not_cached(cache_engine: CacheEngine) -> None:
    tools = Tools()
    tool_cache = ToolCacheMiddleware(cache_engine, tools={"weather": 600}, scope=by_user)
    agent = agent_with(ScriptedChat(), [tools.named("broken")], tool_cache)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="boom"):
            agent.invoke(ask(), context=User("alice"))
    assert tools.runs == ["Paris", "Paris"]
    assert tool_cache.stats().misses == 2


def test_tools_not_named_go_through_uncounted(cache_engine: CacheEngine) -> None:
    tools = Tools()
    tool_cache = ToolCacheMiddleware(cache_engine, tools={"search": 600}, scope=by_user)
    _run_twice(agent_with(ScriptedChat(), [tools.named("weather")], tool_cache))
    assert tools.runs == ["Paris", "Paris"]
    assert tool_cache.stats() == AgentCacheStats()


def test_invalidate_drops_one_tools_entries(cache_engine: CacheEngine) -> None:
    tools = Tools()
    tool_cache = ToolCacheMiddleware(cache_engine, tools={"weather": 600}, scope=by_user)
    agent = agent_with(ScriptedChat(), [tools.named("weather")], tool_cache)
    _run_twice(agent)
    assert tools.runs == ["Paris"]
    assert tool_cache.invalidate("weather") >= 1
    agent.invoke(ask(), context=User("alice"))
    assert tools.runs == ["Paris", "Paris"]


def test_a_provider_structured_response_is_rebuilt_as_its_model(cache_engine: CacheEngine) -> None:
    model, tools = ScriptedChat(json_answer=True), Tools()
    models = ModelCacheMiddleware(LLMCache(engine=cache_engine), scope=by_user)
    agent = agent_with(
        model, [tools.named("weather")], models, response_format=ProviderStrategy(Forecast)
    )
    first = agent.invoke(ask(), context=User("alice"))
    second = agent.invoke(ask(), context=User("alice"))
    assert model.calls == 2
    assert isinstance(second["structured_response"], Forecast)
    assert second["structured_response"] == first["structured_response"]
    assert first["structured_response"].city == "Paris"


def test_a_tool_strategy_answer_is_not_cached(cache_engine: CacheEngine) -> None:
    # The structured answer comes with a ToolMessage the agent made: two messages, not cached.
    model, tools = ScriptedChat(answer_tool="Forecast"), Tools()
    models = ModelCacheMiddleware(LLMCache(engine=cache_engine), scope=by_user)
    agent = agent_with(
        model, [tools.named("weather")], models, response_format=ToolStrategy(Forecast)
    )
    first = agent.invoke(ask(), context=User("alice"))
    second = agent.invoke(ask(), context=User("alice"))
    assert second["structured_response"] == first["structured_response"]
    assert model.calls == 3  # the tool call replayed, the structured answer asked again
    assert models.stats().bypasses == 2


# -- async -------------------------------------------------------------------------------------


@pytest.fixture
async def async_tool_cache(cache_engine: CacheEngine) -> AsyncIterator[ToolCacheMiddleware]:
    tool_cache = ToolCacheMiddleware(cache_engine, tools={"weather": 600}, scope=by_user)
    yield tool_cache
    await tool_cache.aclose()


async def test_async_second_run_calls_neither_model_nor_tool(
    cache_engine: CacheEngine, async_tool_cache: ToolCacheMiddleware, metrics: Metrics
) -> None:
    model, tools, llm_cache = ScriptedChat(), Tools(), LLMCache(engine=cache_engine)
    models = ModelCacheMiddleware(llm_cache, scope=by_user, metrics=metrics)
    agent = agent_with(model, [tools.named("weather")], models, async_tool_cache)
    first = await agent.ainvoke(ask(), context=User("alice"))
    second = await agent.ainvoke(ask(), context=User("alice"))
    assert (model.calls, tools.runs) == (2, ["Paris"])
    assert without_ids(second["messages"]) == without_ids(first["messages"])
    # The sync hooks read what the async ones wrote.
    third = agent.invoke(ask(), context=User("alice"))
    assert without_ids(third["messages"]) == without_ids(first["messages"])
    assert (model.calls, tools.runs) == (2, ["Paris"])
    assert (models.stats().hits, async_tool_cache.stats().hits) == (4, 2)
    await agent.ainvoke(ask(), context=User("bob"))
    assert (model.calls, tools.runs) == (4, ["Paris", "Paris"])
    await llm_cache.aclose()


async def test_a_tool_cache_on_an_async_engine_serves_both_hooks(redis_url: str) -> None:
    tools = Tools()
    async_engine = AsyncCacheEngine(redis_url, prefix=unique("async"), metrics=private_metrics())
    tool_cache = ToolCacheMiddleware(async_engine, tools={"weather": 600}, scope=by_user)
    agent = agent_with(ScriptedChat(), [tools.named("weather")], tool_cache)
    await agent.ainvoke(ask(), context=User("alice"))
    await agent.ainvoke(ask(), context=User("alice"))
    agent.invoke(ask(), context=User("alice"))  # the sync side, derived from the async engine
    assert tools.runs == ["Paris"]
    assert (tool_cache.stats().hits, tool_cache.stats().misses) == (2, 1)
    await tool_cache.aclose()
    await async_engine.aclose()


async def test_async_errors_and_commands_are_not_cached(cache_engine: CacheEngine) -> None:
    for name in ("flaky", "commanding"):
        tools = Tools()
        tool_cache = ToolCacheMiddleware(cache_engine, tools={"weather": 600}, scope=by_user)
        agent = agent_with(ScriptedChat(), [tools.named(name)], tool_cache)
        for _ in range(2):
            await agent.ainvoke(ask(), context=User("alice"))
        assert tools.runs == ["Paris", "Paris"]
        assert tool_cache.stats().bypasses == 2
        await tool_cache.aclose()


# -- outages and failing caches ----------------------------------------------------------------


def test_redis_down_calls_go_through(dead_url: str) -> None:
    model, tools = ScriptedChat(), Tools()
    models = ModelCacheMiddleware(LLMCache(dead_url, namespace=unique("llm")), scope=by_user)
    tool_cache = ToolCacheMiddleware(dead_url, tools={"weather": 600}, scope=by_user)
    agent = agent_with(model, [tools.named("weather")], models, tool_cache)
    for _ in range(2):
        result = agent.invoke(ask(), context=User("alice"))
        assert result["messages"][-1].content == "It is sunny, 21 C in Paris."
    assert model.calls >= 2 and len(tools.runs) >= 1  # the memory tier may answer the second
    tool_cache.close()


async def test_redis_down_async_calls_go_through(dead_url: str) -> None:
    model, tools = ScriptedChat(), Tools()
    models = ModelCacheMiddleware(LLMCache(dead_url, namespace=unique("llm")), scope=by_user)
    tool_cache = ToolCacheMiddleware(dead_url, tools={"weather": 600}, scope=by_user)
    agent = agent_with(model, [tools.named("weather")], models, tool_cache)
    result = await agent.ainvoke(ask(), context=User("alice"))
    assert result["messages"][-1].content == "It is sunny, 21 C in Paris."
    assert model.calls >= 2 and len(tools.runs) >= 1
    await tool_cache.aclose()


class BrokenCache(BaseCache):
    """Every operation fails."""

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        raise ConnectionError("cache down")

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        raise ConnectionError("cache down")

    def clear(self, **kwargs: Any) -> None:
        raise ConnectionError("cache down")


class BrokenEngine(CacheEngine):
    def get_many(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise ConnectionError("engine down")


class BrokenAsyncEngine(AsyncCacheEngine):
    async def get_many(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise ConnectionError("engine down")


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_failing_cache_is_logged_and_bypassed(
    redis_url: str, metrics: Metrics, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    model, tools = ScriptedChat(), Tools()
    models = ModelCacheMiddleware(BrokenCache(), scope=by_user, metrics=metrics)
    options: dict[str, Any] = {"prefix": unique("broken"), "metrics": metrics}
    if mode == "sync":
        broken: Any = BrokenEngine(redis_url, **options)
        tool_cache = ToolCacheMiddleware(engine=broken, tools={"weather": 600}, scope=by_user)
    else:
        broken = BrokenAsyncEngine(redis_url, **options)
        tool_cache = ToolCacheMiddleware(async_engine=broken, tools={"weather": 600}, scope=by_user)
    agent = agent_with(model, [tools.named("weather")], models, tool_cache)
    if mode == "sync":
        result = agent.invoke(ask(), context=User("alice"))
        broken.close()
    else:
        result = await agent.ainvoke(ask(), context=User("alice"))
        await broken.aclose()
    assert result["messages"][-1].content == "It is sunny, 21 C in Paris."
    assert (models.stats().errors, models.stats().misses) == (4, 2)  # lookups and updates
    assert (tool_cache.stats().errors, tool_cache.stats().misses) == (1, 1)
    assert sample(metrics, "cache_errors_total", cache_type="agent_model", kind="operation") == 4
    assert "going on without the cache" in caplog.text


# -- the key, and semantic caches ---------------------------------------------------------------


def _request(messages: list[BaseMessage], **overrides: Any) -> ModelRequest[Any]:
    base: dict[str, Any] = {"model": ScriptedChat(), "messages": messages}
    return ModelRequest(**{**base, **overrides})


def _turn(call_id: str, args: dict[str, Any]) -> list[BaseMessage]:
    return [
        HumanMessage("Paris", id=str(uuid.uuid4())),
        AIMessage("", tool_calls=[{"name": "weather", "args": args, "id": call_id}], id="a"),
        ToolMessage("sunny", tool_call_id=call_id, id=str(uuid.uuid4())),
    ]


def test_the_key_is_what_the_model_sees() -> None:
    scope = ["shared"]
    paris = {"city": "Paris", "units": "C"}
    key = _model_call_key(_request(_turn("c1", paris)), scope)
    # Message ids, provider tool-call ids and argument order are not meaning.
    same = _model_call_key(_request(_turn("zz", {"units": "C", "city": "Paris"})), scope)
    assert same == key
    # The last message is a tool result: in the llm_string, the prompt only says "a tool's".
    assert key.prompt == '[{"role": "tool"}]'
    other_result = [*_turn("c1", paris)[:2], ToolMessage("rain", tool_call_id="c1")]
    assert _model_call_key(_request(other_result), scope).llm_string != key.llm_string
    human = _model_call_key(_request([HumanMessage("What is the weather?")]), scope)
    assert human.prompt == "What is the weather?"
    picture = [{"type": "image", "url": "https://example.com/a.png"}]
    image = _model_call_key(_request([HumanMessage(picture)]), scope)
    assert image.prompt == '[{"role": "human"}]'
    others = [
        _model_call_key(_request(_turn("c1", {"city": "Lyon", "units": "C"})), scope),
        _model_call_key(_request(_turn("c1", {"city": "Paris", "units": "C"})), ["scope", "a"]),
        _model_call_key(
            _request(_turn("c1", {"city": "Paris", "units": "C"}), system_prompt="Be brief."),
            scope,
        ),
        _model_call_key(
            _request(
                _turn("c1", {"city": "Paris", "units": "C"}), tools=[Tools().named("weather")]
            ),
            scope,
        ),
        _model_call_key(
            _request(_turn("c1", {"city": "Paris", "units": "C"}), tool_choice="any"), scope
        ),
        _model_call_key(
            _request(_turn("c1", {"city": "Paris", "units": "C"}), model_settings={"seed": 1}),
            scope,
        ),
        _model_call_key(
            _request(
                _turn("c1", {"city": "Paris", "units": "C"}),
                response_format=ProviderStrategy(Forecast),
            ),
            scope,
        ),
    ]
    assert len({k.llm_string for k in [key, *others]}) == len(others) + 1


def test_which_tool_call_a_result_answers_is_in_the_key() -> None:
    calls = [
        {"name": "weather", "args": {"city": "Paris"}, "id": "p"},
        {"name": "weather", "args": {"city": "Lyon"}, "id": "l"},
    ]
    asked = [HumanMessage("Paris and Lyon"), AIMessage("", tool_calls=calls)]

    def key(first: str, second: str) -> Any:
        results = [ToolMessage("rain", tool_call_id=first), ToolMessage("sun", tool_call_id=second)]
        return _model_call_key(_request([*asked, *results]), ["shared"])

    assert key("p", "l") != key("l", "p")


def test_a_hit_drops_an_id_the_thread_already_holds() -> None:
    cache = InMemoryCache()  # any BaseCache: an in-memory one shares what it returns
    middleware = ModelCacheMiddleware(cache, scope="shared", metrics=private_metrics())
    answer = AIMessage("hello", id="answer-1")

    def handler(request: ModelRequest[Any]) -> ModelResponse[Any]:
        return ModelResponse(result=[answer])

    question = [HumanMessage("hi")]
    middleware.wrap_model_call(_request(question), handler)
    elsewhere = middleware.wrap_model_call(_request(question), handler)
    assert isinstance(elsewhere, ModelResponse) and elsewhere.result == [answer]
    held = _request(question, state={"messages": [*question, answer]})
    here = middleware.wrap_model_call(held, handler)
    assert isinstance(here, ModelResponse)
    assert here.result[0].id is None and here.result[0].content == "hello"
    assert middleware.stats().hits == 2
    assert answer.id == "answer-1"  # the stored entry is untouched


class LooseCache(BaseCache):
    """A careless semantic cache: any prompt matches within the same llm_string."""

    def __init__(self) -> None:
        self.entries: dict[str, RETURN_VAL_TYPE] = {}
        self.lookups: list[str] = []

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        self.lookups.append(prompt)
        return self.entries.get(llm_string)

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        self.entries[llm_string] = return_val

    def clear(self, **kwargs: Any) -> None:
        self.entries.clear()


def test_a_semantic_cache_matches_the_users_text_only(
    cache_engine: CacheEngine, metrics: Metrics
) -> None:
    model, tools, cache = ScriptedChat(), Tools(), LooseCache()
    models = ModelCacheMiddleware(cache, scope=by_user, metrics=metrics)
    tool_cache = ToolCacheMiddleware(cache_engine, tools={"weather": 600}, scope=by_user)
    agent = agent_with(model, [tools.named("weather")], models, tool_cache)
    agent.invoke(ask("Paris"), context=User("alice"))
    answer = agent.invoke(ask("please Paris"), context=User("alice"))
    # The rephrased question reused the tool call (and so the tool's cached result); the answer
    # after the tool result is matched exactly: a new conversation state, so the model ran.
    assert (model.calls, tools.runs) == (3, ["Paris"])
    assert answer["messages"][-1].content == "It is sunny, 21 C in Paris."
    tool_result = '[{"role": "tool"}]'
    assert cache.lookups == ["Paris", tool_result, "please Paris", tool_result]
    assert models.stats().semantic_hits == 1
    assert sample(metrics, "cache_semantic_hits_total", cache_type="agent_model") == 1


class BagOfWords(Embeddings):
    """Each word (lowercased) counted in one of 256 dims; records what it embeds."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed_query(self, text: str) -> list[float]:
        self.texts.append(text)
        vector = [0.0] * 256
        for word in re.findall(r"[a-z]+", text.lower()):
            vector[hashlib.sha256(word.encode()).digest()[0]] += 1.0
        return vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(text) for text in texts]


async def test_with_the_semantic_cache_a_rephrasing_reuses_the_first_answer(
    redis_url: str, cache_engine: CacheEngine, metrics: Metrics
) -> None:
    words = BagOfWords()
    semantic = SemanticLLMCache(words, redis_url, prefix=unique("sem"), metrics=private_metrics())
    model, tools = ScriptedChat(), Tools()
    models = ModelCacheMiddleware(semantic, scope=by_user, metrics=metrics)
    tool_cache = ToolCacheMiddleware(cache_engine, tools={"weather": 600}, scope=by_user)
    agent = agent_with(model, [tools.named("weather")], models, tool_cache)
    question = "what is the weather like today in Paris"
    agent.invoke(ask(question), context=User("alice"))
    answer = await agent.ainvoke(ask(f"please {question}"), context=User("alice"))
    assert answer["messages"][-1].content == "It is sunny, 21 C in Paris."
    assert (model.calls, tools.runs) == (3, ["Paris"])
    assert (models.stats().hits, models.stats().semantic_hits) == (1, 1)
    assert sample(metrics, "cache_semantic_hits_total", cache_type="agent_model") == 1
    # Only the user's questions were embedded, never a tool-result turn.
    assert set(words.texts) == {question, f"please {question}"}
    # Another user does not get alice's answer, however alike the question.
    await agent.ainvoke(ask(question), context=User("bob"))
    assert model.calls == 5
    await semantic.aclose()
    await tool_cache.aclose()
