"""LLM responses: a langchain-core BaseCache, and a decorator for any LLM SDK call.

An entry is keyed by a digest of (llm_string, prompt): the llm_string holds the model's name and
invocation parameters, so two models, or one model with other parameters, never share an entry.
Generations are stored as msgpack maps of their fields (``model_dump``) plus their class name, and
read back only as one of six known classes (Generation, ChatGeneration, their chunks, AIMessage,
AIMessageChunk) with pydantic validation: no pickle, no import of a class named by the data. That
is also seven times faster than langchain-core's ``load`` (about 10 µs per hit instead of 70).
A generation the cache cannot store exactly (another message class, a non-data value in
``additional_kwargs``) is not cached: a warning and an error count, never an exception in the
middle of the model call.

A hit returns exactly what was stored, as ``BaseCache.lookup`` promises ("on a cache hit, return
the cached value"), as langchain-core's own ``InMemoryCache`` does, and as langchain-tests'
standard cache suites check (``lookup(...) == stored``). Hits are counted instead, outside the
response: per namespace in ``engine.stats()`` and in the ``cache_hits_total`` metric.

``mark_hits=True`` opts in to a marker on the response itself: a hit's generations carry
``generation_info["cache_hit"] = True`` and a chat message also
``response_metadata["cache_hit"] = True`` (the stored entry never holds it). That breaks the
contract, so the standard suites fail with it; and a marked message that goes into a
conversation's history changes the key of every later prompt that carries it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.core import DEFAULT_TTLS, Ttl
from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine
from redis_checkpoint.cache.face import EngineOwner, UsesEngines
from redis_checkpoint.cache.keys import derive_key, digest
from redis_checkpoint.client import AsyncRedisClient, SyncRedisClient
from redis_checkpoint.settings import Settings

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from redis_checkpoint.cache.core import CoreOptions

__all__ = [
    "SECRET_PARAMETERS",
    "LLMCache",
    "cached_llm_call",
    "decode_generations",
    "deterministic_only",
    "encode_generations",
    "mark_hit",
]

log = logging.getLogger("redis_checkpoint.cache")
P = ParamSpec("P")
R = TypeVar("R")

_GENERATIONS: dict[str, type[Generation]] = {
    cls.__name__: cls for cls in (Generation, GenerationChunk, ChatGeneration, ChatGenerationChunk)
}
_MESSAGES: dict[str, type[AIMessage]] = {cls.__name__: cls for cls in (AIMessage, AIMessageChunk)}

#: Keyword arguments never put into a key (nor stored): credentials differ per caller while
#: the answer does not.
SECRET_PARAMETERS = frozenset(
    {"api_key", "apikey", "password", "token", "access_token", "secret", "authorization"}
)


def _plain(value: Any) -> Any:
    """Dumped fields with str subclasses (langchain's text accessors) made plain str."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _dump_generation(generation: Generation) -> dict[str, Any]:
    kind = type(generation).__name__
    if _GENERATIONS.get(kind) is not type(generation):
        raise TypeError(f"the LLM cache stores {sorted(_GENERATIONS)}, not {kind}")
    if isinstance(generation, ChatGeneration):
        message = generation.message
        message_kind = type(message).__name__
        if _MESSAGES.get(message_kind) is not type(message):
            raise TypeError(f"the LLM cache stores {sorted(_MESSAGES)}, not {message_kind}")
        return {
            "class": kind,
            "generation_info": _plain(generation.generation_info),
            "message_class": message_kind,
            "message": _plain(message.model_dump()),
        }
    return {
        "class": kind,
        "text": str(generation.text),
        "generation_info": _plain(generation.generation_info),
    }


def _load_generation(item: Any) -> Generation:
    if not isinstance(item, dict):
        raise ValueError("an LLM cache entry must hold generation maps")
    cls = _GENERATIONS.get(item.get("class"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown generation class {item.get('class')!r}")
    info = item.get("generation_info")
    if issubclass(cls, ChatGeneration):
        message_cls = _MESSAGES.get(item.get("message_class"))  # type: ignore[arg-type]
        if message_cls is None:
            raise ValueError(f"unknown message class {item.get('message_class')!r}")
        message = message_cls.model_validate(item["message"])
        return cls(message=message, generation_info=info)
    return cls(text=item["text"], generation_info=info)


def encode_generations(generations: RETURN_VAL_TYPE) -> bytes:
    return codec.dumps([_dump_generation(generation) for generation in generations])


def decode_generations(payload: bytes) -> list[Generation]:
    data = codec.loads(payload)
    if not isinstance(data, list):
        raise ValueError("an LLM cache entry must be a list of generations")
    return [_load_generation(item) for item in data]


def mark_hit(generations: list[Generation], similarity: float | None = None) -> list[Generation]:
    """``cache_hit`` on a hit's generations (and chat messages); a semantic cache adds the
    ``cache_similarity`` of the prompt it matched."""
    marks: dict[str, Any] = {"cache_hit": True}
    if similarity is not None:
        marks["cache_similarity"] = similarity
    for generation in generations:
        generation.generation_info = {**(generation.generation_info or {}), **marks}
        if isinstance(generation, ChatGeneration):
            message = generation.message
            message.response_metadata = {**message.response_metadata, **marks}
    return generations


class LLMCache(UsesEngines, BaseCache):
    """LLM responses on Redis: ``set_llm_cache(LLMCache(url))`` or ``ChatModel(cache=...)``.

    ``target`` is a URL, Settings, redis client or ``None`` (REDIS_URL); or pass ``engine=`` to
    share one engine between faces. ``ttl`` defaults to 1800 s (the "ai" kind). ``clear()``
    removes this cache's namespace only, in every process, without scanning. ``mark_hits=True``
    marks what a hit returns with ``cache_hit`` (off by default: see the module docstring).
    """

    def __init__(
        self,
        target: str | Settings | SyncRedisClient | AsyncRedisClient | None = None,
        *,
        engine: CacheEngine | None = None,
        async_engine: AsyncCacheEngine | None = None,
        namespace: str = "llm",
        ttl: Ttl = DEFAULT_TTLS["ai"],
        mark_hits: bool = False,
        **engine_options: Unpack[CoreOptions],
    ) -> None:
        self._engines = EngineOwner(
            target, engine, async_engine, engine_options, face=type(self).__name__
        )
        self.namespace = namespace
        self._engines.core.stats.set_cache_type(namespace, "llm")
        self.ttl = ttl
        self.mark_hits = mark_hits

    @staticmethod
    def key(prompt: str, llm_string: str) -> str:
        return digest(llm_string, prompt)

    def _hit(self, value: Any) -> RETURN_VAL_TYPE | None:
        if value is None:
            return None
        generations = cast(list[Generation], value)
        return mark_hit(generations) if self.mark_hits else generations

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        value = self.engine.get(
            self.namespace, self.key(prompt, llm_string), decode=decode_generations
        )
        return self._hit(value)

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        entry = self._entry(prompt, llm_string, return_val)
        if entry is not None:
            with self._unless_unencodable():
                self.engine.set(**entry)

    def _entry(
        self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE
    ) -> dict[str, Any] | None:
        """What ``engine.set`` stores for a response; None for an empty one (it would read back
        as a hit with nothing in it)."""
        if not return_val:
            return None
        return {
            "namespace": self.namespace,
            "key": self.key(prompt, llm_string),
            "value": return_val,
            "ttl": self.ttl,
            "encode": encode_generations,
        }

    @contextlib.contextmanager
    def _unless_unencodable(self) -> Iterator[None]:
        try:
            yield
        except TypeError as exc:
            # The model already answered: losing the answer over a cache write would be worse.
            self.engine.core.stats.error(self.namespace, "unencodable")
            log.warning("LLM response not cached: %s", exc)

    def clear(self, **kwargs: Any) -> None:
        self.engine.clear(self.namespace)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        value = await self.async_engine.get(
            self.namespace, self.key(prompt, llm_string), decode=decode_generations
        )
        return self._hit(value)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        entry = self._entry(prompt, llm_string, return_val)
        if entry is not None:
            with self._unless_unencodable():
                await self.async_engine.set(**entry)

    async def aclear(self, **kwargs: Any) -> None:
        await self.async_engine.clear(self.namespace)


# -- any LLM SDK call -----------------------------------------------------------------------


def deterministic_only(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    """The default policy: cache unless the call samples (``temperature`` > 0, or ``n`` > 1).

    A call that does not pass ``temperature`` is cached: pass a stricter policy if your SDK
    samples by default.
    """
    temperature = kwargs.get("temperature")
    n = kwargs.get("n")
    return not (
        (isinstance(temperature, (int, float)) and temperature > 0)
        or (isinstance(n, int) and n > 1)
    )


def call_key(function: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """Digest of the function's name and its arguments minus :data:`SECRET_PARAMETERS`."""
    kept = {k: kwargs[k] for k in sorted(kwargs) if k.lower() not in SECRET_PARAMETERS}
    return derive_key(
        f"{function.__module__}.{function.__qualname__}",
        material=[list(args), kept],
        what=f"for {function.__qualname__}",
        hint="pass key=...",
    )


def cached_llm_call(
    engine: CacheEngine | AsyncCacheEngine,
    *,
    namespace: str = "llm-calls",
    ttl: Ttl = DEFAULT_TTLS["ai"],
    should_cache: Callable[[Sequence[Any], Mapping[str, Any]], bool] = deterministic_only,
    key: Callable[..., str] | None = None,
    encode: Callable[[Any], bytes] = codec.dumps,
    decode: Callable[[bytes], Any] = codec.loads,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Cache any LLM SDK call (sync function with a CacheEngine, coroutine function with an
    AsyncCacheEngine) with single-flight: concurrent identical calls run once.

    ``should_cache(args, kwargs)`` returning False bypasses the cache (the default skips
    sampling calls). ``key(*args, **kwargs)`` overrides the key. Results must be encodable
    (dicts, lists, str...; e.g. ``response.model_dump()``) or come with ``encode``/``decode``.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        def key_of(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
            return key(*args, **kwargs) if key is not None else call_key(function, args, kwargs)

        stored: dict[str, Any] = {"ttl": ttl, "encode": encode, "decode": decode}

        if inspect.iscoroutinefunction(function):
            if not isinstance(engine, AsyncCacheEngine):
                raise TypeError(f"{function.__qualname__} is async: pass an AsyncCacheEngine")
            async_engine = engine
            async_engine.set_cache_type(namespace, "llm")
            async_function = cast(Callable[..., Awaitable[Any]], function)

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if not should_cache(args, kwargs):
                    return await async_function(*args, **kwargs)
                call = functools.partial(async_function, *args, **kwargs)
                return await async_engine.get_or_compute(
                    namespace, key_of(args, kwargs), call, **stored
                )

            return cast(Callable[P, R], async_wrapper)

        if not isinstance(engine, CacheEngine):
            raise TypeError(f"{function.__qualname__} is sync: pass a CacheEngine")
        sync_engine = engine
        sync_engine.set_cache_type(namespace, "llm")

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not should_cache(args, kwargs):
                return function(*args, **kwargs)
            call = functools.partial(function, *args, **kwargs)
            return sync_engine.get_or_compute(namespace, key_of(args, kwargs), call, **stored)

        return wrapper

    return decorate
