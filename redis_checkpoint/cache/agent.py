"""Caching middleware for LangChain 1.x agents: ``create_agent(..., middleware=[...])``.

:class:`ModelCacheMiddleware` answers a model call from any LangChain ``BaseCache``
(:class:`~redis_checkpoint.LLMCache`, :class:`~redis_checkpoint.cache.semantic.SemanticLLMCache`,
...). The key is what the model would see: the ``llm_string`` is a digest of the model's identity
and parameters, the tools, ``tool_choice``, the response format's schemas, ``model_settings``,
the system message, the scope and every message but the last; the ``prompt`` is the last message's
text when it is the user's (a semantic cache then matches rephrasings in the same conversation
state). When the last message is not the user's text (a tool result, an image), it goes into
the ``llm_string`` too and the prompt only names its kind, as an OpenAI-style message list
(``[{"role": "tool"}]``): every such state has its own ``llm_string``, so even a semantic cache
can only answer it exactly, and :class:`SemanticLLMCache` does not embed it. Message ids are not
part of the key and tool-call ids only by their order, so a replay in another thread hits.

A hit is the stored AIMessage as it was (content, tool calls and their ids, usage and response
metadata, id), so the agent loop goes on exactly as it did; its id is dropped only when the
thread already holds a message with that id (a reducer would replace that message instead of
adding this one).

:class:`ToolCacheMiddleware` answers the calls of the tools it names, each with its own TTL, from
the cache engine, keyed by the tool's name, its arguments and the scope; a hit is a ToolMessage
with the stored content, artifact and name and the current tool call's id.

Both need a ``scope``: a function of the request (usually of ``request.runtime.context``) whose
string goes into every key, or ``"shared"`` to reuse answers across users on purpose. Both cache
only what they can give back exactly: a model call that returned a single AIMessage with no
structured response, plain data or a pydantic model of the response format; a tool call that
returned a ToolMessage that is not an error. Anything else goes through uncached (a *bypass*).
The cache never fails a call: a cache error is logged and the call goes to the model or tool.

Counted per middleware (:meth:`~_CachingMiddleware.stats`) and in the shared metrics:
``cache_hits_total`` / ``cache_misses_total`` (cache types ``agent_model`` and ``agent_tool``,
operation ``model_call`` or the tool's name), ``cache_semantic_hits_total`` and
``cache_time_saved_seconds_total`` (what the spared call took when it was made).

A call is one plan (:mod:`redis_checkpoint.steps`) for both hooks: the sync hook runs its steps
with the blocking cache and handler, the async hook awaits them.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

from langchain.agents.middleware import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
    ToolCallRequest,
)
from langchain.agents.structured_output import AutoStrategy, ProviderStrategy, ToolStrategy
from langchain_core.caches import BaseCache
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.types import Command
from pydantic import BaseModel, TypeAdapter

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.core import MISSING
from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine
from redis_checkpoint.cache.face import EngineOwner, UsesEngines
from redis_checkpoint.cache.keys import derive_key, digest
from redis_checkpoint.cache.llm import SECRET_PARAMETERS
from redis_checkpoint.cache.stats import HitCounts
from redis_checkpoint.client import AsyncRedisClient, SyncRedisClient
from redis_checkpoint.metrics import Metrics, get_metrics
from redis_checkpoint.settings import Settings
from redis_checkpoint.steps import Invoke, Plan, adrive, drive

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from redis_checkpoint.cache.core import CoreOptions

__all__ = ["SHARED", "AgentCacheStats", "ModelCacheMiddleware", "ToolCacheMiddleware"]

log = logging.getLogger("redis_checkpoint.cache")

K = TypeVar("K")
R = TypeVar("R")
T = TypeVar("T")

#: The scope that reuses answers across users: pass it explicitly, it is never a default.
SHARED: Final = "shared"
#: Goes into every key: bump it when the key material or the entry layout changes.
_FORMAT: Final = "agent-cache-1"
#: Where a model entry's own data sits in its generation_info.
_META: Final = "redis_checkpoint.agent"
#: Message fields the model is not sent (or that differ on every run): not in the key.
_UNSEEN: Final = frozenset({"id", "response_metadata", "usage_metadata", "artifact"})

ModelScope = Callable[[ModelRequest[Any]], str] | Literal["shared"]
ToolScope = Callable[[ToolCallRequest], str] | Literal["shared"]
ToolResult = ToolMessage | Command[Any]


class _Uncacheable(Exception):
    """Why a call goes through uncached (a bypass, not an error)."""


@dataclass
class AgentCacheStats(HitCounts):
    """One middleware's counts: ``bypasses`` are calls that went through uncached (no key, or a
    result the cache cannot give back exactly); ``errors`` cache reads or writes that failed
    (the call went on without the cache)."""

    bypasses: int = 0
    errors: int = 0
    seconds_saved: float = 0.0


@dataclass(frozen=True)
class _Hit(Generic[R]):
    result: R
    seconds: float  # what the call took when it was made
    semantic: bool = False


@dataclass(frozen=True)
class _Side:
    """What a plan's steps run on: blocking functions, or coroutine functions."""

    read: Callable[[Any], Any]
    write: Callable[[Any, Any], Any]
    call: Callable[[], Any]


def _run(plan: Plan[T], side: _Side) -> T:
    return drive(plan, lambda step: step.on(side))


async def _arun(plan: Plan[T], side: _Side) -> T:
    async def handle(step: Invoke) -> Any:
        return await step.on(side)

    return await adrive(plan, handle)


# -- plain data --------------------------------------------------------------------------------


def _as_data(value: Any, *, key: bool = False) -> Any:
    """``value`` as the codec stores it exactly: str subclasses (langchain's text accessors, str
    enums) as plain str, tuples as lists. As ``key`` material also mappings sorted (the order of
    a model's JSON arguments means nothing) and pydantic classes as their JSON schema."""
    if value is None or type(value) in (bool, int, float, bytes):
        return value
    if isinstance(value, int):  # an IntEnum: the plain number
        return int(value)
    if isinstance(value, float):  # a numpy float64: the plain number
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, Mapping):
        items = [(_as_data(k, key=key), _as_data(v, key=key)) for k, v in value.items()]
        if key:
            items.sort(key=lambda item: (type(item[0]).__name__, str(item[0])))
        return dict(items)
    if isinstance(value, (list, tuple)):
        return [_as_data(v, key=key) for v in value]
    if key and isinstance(value, type) and issubclass(value, BaseModel):
        return {"pydantic": value.__qualname__, "schema": _as_data(value.model_json_schema())}
    return value


def _is_data(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_is_data(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_data(v) for k, v in value.items())
    return False


def _key(*parts: str, material: Any, what: str) -> str:
    try:
        return str(derive_key(_FORMAT, *parts, material=_as_data(material, key=True), what=what))
    except TypeError as exc:  # e.g. a model setting or message field the codec cannot encode
        raise _Uncacheable(str(exc)) from None


def _scope_material(scope: ModelScope | ToolScope, request: Any) -> list[str]:
    """The scope's part of a key: ``shared`` and a user named "shared" never share a key."""
    if scope == SHARED:
        return [SHARED]
    assert callable(scope)
    value = scope(request)
    if not isinstance(value, str):
        raise TypeError(f"the scope function returned {type(value).__name__}, not str")
    return ["scope", value]


def _check_scope(scope: object) -> None:
    if isinstance(scope, str):
        if scope != SHARED:
            raise ValueError(
                f"scope={scope!r}: pass a function of the request (e.g. of "
                "request.runtime.context) or scope='shared' to reuse answers across users"
            )
    elif not callable(scope):
        raise TypeError("scope must be a function of the request, or 'shared'")


# -- the model call's key ----------------------------------------------------------------------


@dataclass(frozen=True)
class _ModelKey:
    prompt: str
    llm_string: str


class _ToolCallIds:
    """Tool-call ids by order of appearance: providers make them up, the pairing is what
    counts."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, call_id: Any) -> Any:
        if not isinstance(call_id, str):
            return call_id
        return self._seen.setdefault(call_id, len(self._seen))


def _message_material(message: BaseMessage, ids: _ToolCallIds) -> dict[str, Any]:
    data = message.model_dump(exclude=set(_UNSEEN))
    for field in ("tool_calls", "invalid_tool_calls"):
        for call in data.get(field) or ():
            call["id"] = ids(call.get("id"))
    if "tool_call_id" in data:
        data["tool_call_id"] = ids(data["tool_call_id"])
    return data


def _user_text(message: BaseMessage | None) -> str | None:
    """The text of a user message that is text only; None for anything else."""
    if not isinstance(message, HumanMessage):
        return None
    content: Any = message.content
    if isinstance(content, list) and len(content) == 1:
        content = content[0]
        if isinstance(content, dict):
            if content.get("type") != "text" or set(content) - {"type", "text"}:
                return None
            content = content.get("text")
    return str.__str__(content) if isinstance(content, str) else None


def _model_identity(model: Any) -> Any:
    try:
        return ["llm_string", model._get_llm_string()]
    except Exception:  # not a BaseChatModel after all: its class and fields minus secrets
        kind = f"{type(model).__module__}.{type(model).__qualname__}"
        fields = {k: v for k, v in model.model_dump().items() if k.lower() not in SECRET_PARAMETERS}
        return ["fields", kind, repr(sorted(fields.items(), key=lambda item: str(item[0])))]


def _tool_material(tool: BaseTool | dict[str, Any]) -> Any:
    return convert_to_openai_tool(tool) if isinstance(tool, BaseTool) else tool


def _json_schema(schema: Any) -> Any:
    if isinstance(schema, dict):
        return schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    return TypeAdapter(schema).json_schema()


def _schemas(response_format: Any) -> list[Any]:
    """The classes (or dicts) a structured response of ``response_format`` may be."""
    if response_format is None:
        return []
    if isinstance(response_format, ToolStrategy):
        return [spec.schema for spec in response_format.schema_specs]
    if isinstance(response_format, (ProviderStrategy, AutoStrategy)):
        return [response_format.schema]
    return [response_format]  # a raw schema (a middleware's override): the agent's AutoStrategy


def _response_format_material(response_format: Any) -> Any:
    if response_format is None:
        return None
    if isinstance(response_format, (ToolStrategy, ProviderStrategy)):
        specs = (
            response_format.schema_specs
            if isinstance(response_format, ToolStrategy)
            else [response_format.schema_spec]
        )
        schemas = [
            {
                "name": spec.name,
                "description": spec.description,
                "schema": spec.json_schema,
                "strict": spec.strict,
            }
            for spec in specs
        ]
    else:
        schemas = [{"schema": _json_schema(schema)} for schema in _schemas(response_format)]
    return {
        "strategy": type(response_format).__name__,
        "schemas": schemas,
        "tool_message_content": getattr(response_format, "tool_message_content", None),
    }


def _model_call_key(request: ModelRequest[Any], scope: list[str]) -> _ModelKey:
    """The (prompt, llm_string) of a model call; see the module docstring."""
    ids = _ToolCallIds()
    messages = list(request.messages)
    history = [_message_material(m, ids) for m in messages[:-1]]
    last = messages[-1] if messages else None
    last_material = _message_material(last, ids) if last is not None else None
    text = _user_text(last)
    if text is not None and last_material is not None:
        prompt = text
        last_part: Any = {k: v for k, v in last_material.items() if k != "content"}
    else:  # matched exactly: its own llm_string; the prompt is not a question (no embedding)
        prompt = json.dumps([{"role": "none" if last is None else last.type}])
        last_part = last_material
    system = request.system_message
    material = {
        "model": _model_identity(request.model),
        "model_settings": request.model_settings,
        "tools": [_tool_material(tool) for tool in request.tools],
        "tool_choice": request.tool_choice,
        "response_format": _response_format_material(request.response_format),
        "system": None if system is None else _message_material(system, ids),
        "scope": scope,
        "history": history,
        "last": last_part,
    }
    llm_string = _key("agent-model", material=material, what="for the model call")
    return _ModelKey(prompt=prompt, llm_string=llm_string)


# -- structured responses ----------------------------------------------------------------------


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _dump_structured(value: Any, response_format: Any) -> Any:
    if value is None:
        return None
    if _is_data(value):
        return {"kind": "data", "value": _as_data(value)}
    if isinstance(value, BaseModel) and any(s is type(value) for s in _schemas(response_format)):
        return {
            "kind": "model",
            "class": _qualname(type(value)),
            "value": value.model_dump(mode="json"),
        }
    raise _Uncacheable(f"a structured response of type {type(value).__name__}")


def _load_structured(stored: Any, response_format: Any) -> Any:
    if stored is None:
        return None
    if not isinstance(stored, dict):
        raise ValueError("a structured response entry must be a map")
    if stored.get("kind") == "data":
        return stored.get("value")
    for schema in _schemas(response_format):
        if (
            isinstance(schema, type)
            and issubclass(schema, BaseModel)
            and _qualname(schema) == stored.get("class")
        ):
            return schema.model_validate(stored.get("value"))
    raise ValueError(f"the response format has no schema {stored.get('class')!r} any more")


def _known_ids(request: ModelRequest[Any]) -> set[str]:
    state = request.state if isinstance(request.state, Mapping) else {}
    return {m.id for m in [*request.messages, *state.get("messages", ())] if m.id is not None}


# -- both middlewares --------------------------------------------------------------------------


class _CachingMiddleware(AgentMiddleware[AgentState[Any], Any, Any], Generic[K, R]):
    """The plan both middlewares run, and their counting."""

    cache_type: str = ""

    def __init__(self, scope: ModelScope | ToolScope, metrics: Metrics | None) -> None:
        _check_scope(scope)
        self.scope = scope
        self.metrics = metrics if metrics is not None else get_metrics()
        self._stats = AgentCacheStats()
        self._lock = threading.Lock()

    def stats(self) -> AgentCacheStats:
        """A snapshot of this middleware's counts."""
        with self._lock:
            return replace(self._stats)

    def _cached(
        self,
        operation: str,
        make_key: Callable[[], K | None],
        hit_of: Callable[[K, Any], _Hit[R] | None],
        entry_of: Callable[[K, R, float], Any],
    ) -> Plan[R]:
        """Look up, else call and store. Steps: ``read(key)``, ``call()``, ``write(key,
        entry)``. Only the call's own errors leave the plan."""
        key = self._key(make_key)
        if key is None:
            through: R = yield Invoke("call")
            return through
        try:
            hit = hit_of(key, (yield Invoke("read", (key,))))
        except Exception as exc:
            self._failed("read", exc)
            hit = None
        if hit is not None:
            self._hit(operation, hit)
            return hit.result
        self._miss(operation)
        started = time.perf_counter()
        result: R = yield Invoke("call")
        seconds = time.perf_counter() - started
        try:
            entry = entry_of(key, result, seconds)
        except _Uncacheable as exc:
            self._bypass(str(exc))
            return result
        except Exception as exc:
            self._failed("encode", exc)
            return result
        try:
            yield Invoke("write", (key, entry))
        except Exception as exc:
            self._failed("write", exc)
        return result

    def _key(self, make_key: Callable[[], K | None]) -> K | None:
        try:
            return make_key()
        except _Uncacheable as exc:
            self._bypass(str(exc))
        except Exception as exc:  # e.g. the scope function failed: no key is safer than a guess
            log.warning("%s: call not cached, no key: %r", self.name, exc)
            self._bypass(repr(exc))
        return None

    def _hit(self, operation: str, hit: _Hit[Any]) -> None:
        seconds = max(hit.seconds, 0.0)
        with self._lock:
            self._stats.hits += 1
            self._stats.semantic_hits += hit.semantic
            self._stats.seconds_saved += seconds
        self.metrics.lookups(self.cache_type, operation, 1, 0)
        self.metrics.time_saved(self.cache_type, seconds)
        if hit.semantic:
            self.metrics.semantic_hit(self.cache_type)

    def _miss(self, operation: str) -> None:
        with self._lock:
            self._stats.misses += 1
        self.metrics.lookups(self.cache_type, operation, 0, 1)

    def _bypass(self, reason: str) -> None:
        with self._lock:
            self._stats.bypasses += 1
        log.debug("%s: call not cached: %s", self.name, reason)

    def _failed(self, what: str, exc: Exception) -> None:
        with self._lock:
            self._stats.errors += 1
        self.metrics.error(self.cache_type, "operation")
        log.warning("%s: cache %s failed, going on without the cache: %r", self.name, what, exc)


# -- the model ---------------------------------------------------------------------------------


class ModelCacheMiddleware(_CachingMiddleware[_ModelKey, ModelResponse[Any]]):
    """Answers an agent's model calls from ``cache`` (any LangChain ``BaseCache``).

    ``scope``: ``(ModelRequest) -> str`` (e.g. ``lambda r: r.runtime.context.user_id``), or
    ``"shared"`` to reuse answers across users. ``metrics``: where to count (default: the
    cache's own for this package's caches, else :func:`~redis_checkpoint.get_metrics`). See the
    module docstring for the key; list this middleware after those that rewrite the request.
    """

    cache_type = "agent_model"

    def __init__(
        self, cache: BaseCache, *, scope: ModelScope, metrics: Metrics | None = None
    ) -> None:
        if not isinstance(cache, BaseCache):
            raise TypeError(f"cache must be a LangChain BaseCache, not {type(cache).__name__}")
        if metrics is None and isinstance(cache, UsesEngines):
            metrics = cache._engines.core.metrics  # count beside the cache's own counts
        super().__init__(scope, metrics)
        self.cache = cache

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]:
        side = _Side(
            read=lambda key: self.cache.lookup(key.prompt, key.llm_string),
            write=lambda key, entry: self.cache.update(key.prompt, key.llm_string, entry),
            call=lambda: handler(request),
        )
        return _run(self._plan(request), side)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]:
        side = _Side(
            read=lambda key: self.cache.alookup(key.prompt, key.llm_string),
            write=lambda key, entry: self.cache.aupdate(key.prompt, key.llm_string, entry),
            call=lambda: handler(request),
        )
        return await _arun(self._plan(request), side)

    # -- the decisions -------------------------------------------------------------------------

    def _plan(self, request: ModelRequest[Any]) -> Plan[ModelResponse[Any]]:
        return self._cached(
            "model_call",
            lambda: _model_call_key(request, _scope_material(self.scope, request)),
            lambda key, found: self._hit_of(request, key, found),
            lambda key, result, seconds: self._entry_of(request, key, result, seconds),
        )

    @staticmethod
    def _hit_of(
        request: ModelRequest[Any], key: _ModelKey, found: Any
    ) -> _Hit[ModelResponse[Any]] | None:
        if not found:
            return None
        [generation] = found
        if not isinstance(generation, ChatGeneration) or not isinstance(
            generation.message, AIMessage
        ):
            raise ValueError(f"not an agent model entry: {type(generation).__name__}")
        meta = (generation.generation_info or {}).get(_META)
        if not isinstance(meta, dict):
            raise ValueError("not an agent model entry: no agent data")
        structured = _load_structured(meta.get("structured"), request.response_format)
        message = generation.message.model_copy(deep=True)  # an in-memory cache's is shared
        if message.id is not None and message.id in _known_ids(request):
            message.id = None  # the thread holds it: add_messages would replace, not add
        return _Hit(
            ModelResponse(result=[message], structured_response=structured),
            seconds=float(meta.get("seconds") or 0.0),
            semantic=meta.get("prompt") != digest(key.prompt),
        )

    @staticmethod
    def _entry_of(
        request: ModelRequest[Any], key: _ModelKey, result: object, seconds: float
    ) -> list[Generation]:
        if isinstance(result, AIMessage):
            message, structured = result, None
        elif (
            isinstance(result, ModelResponse)
            and len(result.result) == 1
            and isinstance(result.result[0], AIMessage)
        ):
            message, structured = result.result[0], result.structured_response
        else:
            raise _Uncacheable(f"the model call returned {_describe(result)}")
        info = {
            _META: {
                "seconds": seconds,
                "prompt": str(digest(key.prompt)),
                "structured": _dump_structured(structured, request.response_format),
            }
        }
        return [ChatGeneration(message=message.model_copy(deep=True), generation_info=info)]


def _describe(result: object) -> str:
    if isinstance(result, ModelResponse):
        kinds = ", ".join(type(m).__name__ for m in result.result)
        return f"a ModelResponse of [{kinds}]"
    return f"a {type(result).__name__}"


# -- the tools ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ToolKey:
    key: str
    tool: str
    ttl: float


def _as_is(value: bytes) -> bytes:
    return value


class ToolCacheMiddleware(UsesEngines, _CachingMiddleware[_ToolKey, ToolResult]):
    """Answers the calls of the tools named in ``tools`` (name -> TTL seconds) from the cache
    engine. Cache only tools whose result depends on their arguments alone (and the scope).

    ``target`` is a URL, Settings, a redis-py client, a :class:`CacheEngine` or an
    :class:`AsyncCacheEngine` (or pass ``engine=`` / ``async_engine=``): the other side is
    derived as :class:`~redis_checkpoint.LLMCache` does, so ``invoke`` and ``ainvoke`` both work.
    ``scope``: ``(ToolCallRequest) -> str`` or ``"shared"``. Counts go to the engine core's
    metrics (``metrics=`` among the engine options). Entries are tagged with their tool's name:
    :meth:`invalidate` drops one tool's entries in every process.
    """

    cache_type = "agent_tool"

    def __init__(
        self,
        target: str
        | Settings
        | SyncRedisClient
        | AsyncRedisClient
        | CacheEngine
        | AsyncCacheEngine
        | None = None,
        *,
        tools: Mapping[str, float],
        scope: ToolScope,
        engine: CacheEngine | None = None,
        async_engine: AsyncCacheEngine | None = None,
        namespace: str = "agent-tools",
        **engine_options: Unpack[CoreOptions],
    ) -> None:
        if isinstance(target, (CacheEngine, AsyncCacheEngine)):
            if engine is not None or async_engine is not None:
                raise TypeError("pass the engine once: as target, or as engine=/async_engine=")
            if isinstance(target, CacheEngine):
                engine = target
            else:
                async_engine = target
            target = None
        self._engines = EngineOwner(
            target, engine, async_engine, engine_options, face=type(self).__name__
        )
        core = self._engines.core
        super().__init__(scope, core.metrics)
        # Not `self.tools`: AgentMiddleware.tools are tools the middleware adds to the agent.
        self.ttls = _check_ttls(tools)
        self.namespace = namespace
        core.stats.set_cache_type(namespace, self.cache_type)

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolResult],
    ) -> ToolResult:
        return _run(self._plan(request), self._side(lambda: self.engine, lambda: handler(request)))

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolResult]],
    ) -> ToolResult:
        side = self._side(lambda: self.async_engine, lambda: handler(request))
        return await _arun(self._plan(request), side)

    def invalidate(self, *tools: str) -> int:
        """Drop the entries of these tools (every scope, every process); returns keys deleted."""
        return self.engine.invalidate_tags(self.namespace, *tools)

    async def ainvalidate(self, *tools: str) -> int:
        return await self.async_engine.invalidate_tags(self.namespace, *tools)

    def _side(
        self, engine: Callable[[], CacheEngine | AsyncCacheEngine], call: Callable[[], Any]
    ) -> _Side:
        # Both engines have the same method names: the async ones return coroutines.
        return _Side(
            read=lambda key: engine().get_many(self.namespace, [key.key], count=False),
            write=lambda key, entry: engine().set(
                self.namespace, key.key, entry, ttl=key.ttl, tags=[key.tool], encode=_as_is
            ),
            call=call,
        )

    # -- the decisions -------------------------------------------------------------------------

    def _plan(self, request: ToolCallRequest) -> Plan[ToolResult]:
        name = request.tool_call["name"]
        return self._cached(
            name,
            lambda: self._key_of(request),
            lambda key, found: self._hit_of(request, found),
            lambda key, result, seconds: self._entry_of(result, seconds),
        )

    def _key_of(self, request: ToolCallRequest) -> _ToolKey | None:
        name = request.tool_call["name"]
        ttl = self.ttls.get(name)
        if ttl is None:
            return None  # not a cached tool: straight through, not counted
        scope = _scope_material(self.scope, request)
        key = _key(
            "agent-tool",
            name,
            material=[scope, request.tool_call["args"]],
            what=f"for tool {name}",
        )
        return _ToolKey(key=key, tool=name, ttl=ttl)

    @staticmethod
    def _hit_of(request: ToolCallRequest, found: Sequence[Any]) -> _Hit[ToolResult] | None:
        [value] = found
        if value is MISSING:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("content"), (str, list)):
            raise ValueError("not an agent tool entry")
        message = ToolMessage(
            content=value["content"],
            artifact=value.get("artifact"),
            name=value.get("name"),
            tool_call_id=request.tool_call["id"],
        )
        return _Hit(message, seconds=float(value.get("seconds") or 0.0))

    @staticmethod
    def _entry_of(result: ToolResult, seconds: float) -> bytes:
        if not isinstance(result, ToolMessage):
            raise _Uncacheable(f"the tool returned a {type(result).__name__}")
        if result.status == "error":
            raise _Uncacheable("the tool call failed")
        entry = {
            "content": _as_data(result.content),
            "artifact": _as_data(result.artifact),
            "name": result.name,
            "seconds": seconds,
        }
        try:
            return codec.dumps(entry)
        except TypeError as exc:
            raise _Uncacheable(str(exc)) from None


def _check_ttls(tools: Mapping[str, float]) -> dict[str, float]:
    checked: dict[str, float] = {}
    for name, ttl in tools.items():
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, (int, float))
            or not math.isfinite(ttl)
            or ttl <= 0
        ):
            raise ValueError(f"tools[{name!r}]: a TTL is a positive number of seconds, not {ttl!r}")
        checked[name] = float(ttl)
    return checked
