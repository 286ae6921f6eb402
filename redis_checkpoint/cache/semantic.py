"""A semantic LLM cache without a search module: a rephrased prompt hits the answer of the most
similar earlier one, for the same ``llm_string`` only.

Two stores under one engine: the answers, in the cache engine (namespace, TTL, tags, the memory
tier while Redis is away), keyed by the digest of (llm_string, prompt) as ``LLMCache`` keys
them; and for each answer the embedding of its prompt's question (a chat prompt's last human
message: see :func:`question_of`), in the store's vector search (``store/``: exact on plain
Redis, on the server where a search module exists), one store namespace per ``llm_string`` and
conversation context, so a search never crosses models, parameters, tools, output schemas or
conversations. The store item holds the answer's key, the question's guard signature and, only
with ``store_prompts=True``, the prompt; never the prompt otherwise (a digest and the vector
match it).

A lookup is one plan (``steps.py``) for the sync and the async driver: the exact entry first (an
exact repeat costs no embedding), then the nearest stored prompts, then their answers; the first
answer still there whose prompt clears the threshold and the guard (guard.py: the numbers,
negations, time words, polar words and directions of both questions agree) is the hit.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.embeddings import Embeddings
from langgraph.store.base import IndexConfig, PutOp, SearchOp

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.core import DEFAULT_TTLS, MISSING, Ttl
from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine
from redis_checkpoint.cache.face import EngineOwner, UsesEngines
from redis_checkpoint.cache.guard import guard_conflict, guard_features
from redis_checkpoint.cache.keys import Digest, digest, key_part
from redis_checkpoint.cache.llm import (
    LLMCache,
    call_key,
    decode_generations,
    deterministic_only,
    encode_generations,
    mark_hit,
)
from redis_checkpoint.client import AsyncRedisClient, SyncRedisClient, is_cluster
from redis_checkpoint.failures import is_unavailable_error
from redis_checkpoint.settings import Settings
from redis_checkpoint.steps import Invoke, acarry_out, adrive, carry_out, drive
from redis_checkpoint.store.core import StoreCore, VectorSearch

log = logging.getLogger("redis_checkpoint.cache")
P = ParamSpec("P")
R = TypeVar("R")

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from redis_checkpoint.cache.core import CoreOptions

__all__ = ["DEFAULT_THRESHOLD", "SemanticLLMCache", "SemanticMatch", "question_of", "sdk_prompt"]

#: The cosine similarity a stored prompt must reach (docs/llm-cache.md has the measurement).
DEFAULT_THRESHOLD: Final = 0.92
#: Nearest stored prompts a lookup considers: the best may be guarded or its answer gone.
CANDIDATES: Final = 3
#: Prompt vectors a cache keeps between a lookup and the update that follows a miss.
HELD_VECTORS: Final = 1024

_DIGEST = re.compile(r"#[0-9a-f]{32}")  # what digest() makes: an entry's key


#: The context of a question asked first, and of a text prompt: so a chat model's first question
#: and the same text (``nearest("...")``) meet in one place.
NO_CONTEXT: Final = json.dumps([])


def question_of(prompt: str) -> tuple[str, str] | None:
    """What a prompt asks, apart from its context: (context, question). A list of messages (a
    chat model's prompt: langchain-core's serialised messages; an SDK call's OpenAI-style
    ``{"role", "content"}`` maps) asks its last message when that is the user's, in the context
    of the messages before it; a text prompt asks all of itself, as a first question. None when
    the last message is another's (a tool result, an AI turn): only an exact repeat matches
    then. Matching on the question alone keeps a long shared system prompt from making every
    prompt look alike."""
    try:
        messages = json.loads(prompt) if prompt.startswith("[{") else None
    except ValueError:
        messages = None
    if not isinstance(messages, list) or not messages:
        return NO_CONTEXT, prompt
    if all(map(_is_serialised_message, messages)):
        last = messages[-1]["kwargs"]
        asker = last.get("type") == "human"
    elif all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        last = messages[-1]
        asker = last["role"] == "user"
    else:
        return NO_CONTEXT, prompt
    if not asker:
        return None
    return json.dumps(messages[:-1], sort_keys=True), _text_of(last.get("content"))


def _is_serialised_message(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and item.get("lc") == 1
        and item.get("type") == "constructor"
        and isinstance(item.get("kwargs"), dict)
    )


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text of its content blocks."""
    if isinstance(content, list):
        return " ".join(
            str(block.get("text", "")) if isinstance(block, dict) else str(block)
            for block in content
        )
    return str(content)


#: Where an SDK call carries what it asks: chat ``messages``, a Responses ``input``, a ``prompt``.
PROMPT_ARGUMENTS: Final = ("messages", "input", "prompt")


def sdk_prompt(
    function: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[str, str]:
    """An SDK call as (prompt, llm_string): what it asks (see :data:`PROMPT_ARGUMENTS`), and
    the digest of everything else it passes (the function, model, parameters, tools; no
    credentials), so only calls alike in all but the question share answers."""
    name = next((n for n in PROMPT_ARGUMENTS if n in kwargs), None)
    if name is None:
        raise TypeError(
            f"{function.__qualname__}: the semantic cache reads what a call asks from its "
            f"{', '.join(PROMPT_ARGUMENTS)} keyword argument; pass one of them by keyword"
        )
    asked = kwargs[name]
    prompt = asked if isinstance(asked, str) else json.dumps(asked, sort_keys=True, default=str)
    rest = {k: v for k, v in kwargs.items() if k != name}
    return prompt, str(call_key(function, args, rest))


@dataclass(frozen=True)
class SemanticMatch:
    """A stored prompt near a looked-up one: its entry's key, the cosine similarity, whether
    the guard refuses it, and the prompt itself when the cache stores prompts."""

    key: str
    similarity: float
    guarded: bool
    prompt: str | None = None


_bypass: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "semantic_bypass", default=None
)


class _HeldVectors:
    """Prompt vectors by key: the store embeds an item's key text, and this answers with the
    vector of the prompt behind it (the prompt itself never reaches the store)."""

    def __init__(self) -> None:
        self._vectors: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hold(self, key: str, vector: list[float]) -> None:
        with self._lock:
            self._vectors[key] = vector
            self._vectors.move_to_end(key)
            while len(self._vectors) > HELD_VECTORS:
                self._vectors.popitem(last=False)

    def get(self, key: str) -> list[float] | None:
        with self._lock:
            return self._vectors.get(key)

    def embed_documents(self, keys: Sequence[str]) -> list[list[float]]:
        return [self._vector(key) for key in keys]

    def embed_query(self, key: str) -> list[float]:
        return self._vector(key)

    def _vector(self, key: str) -> list[float]:
        vector = self.get(key)
        if vector is None:  # the plan holds every vector before the store asks for it
            raise RuntimeError(f"no vector held for {key!r}")
        return vector


def _call_it(function: Callable[[], Any]) -> Any:
    """``function()``: a coroutine in the async driver, which awaits it."""
    return function()


class _SyncSide:
    """What the plan's Invoke steps call in sync code."""

    def __init__(self, engine: CacheEngine, embeddings: Embeddings, held: _HeldVectors) -> None:
        self.client = engine.client
        self.get_many = engine.get_many
        self.set = engine.set
        self.get_or_compute = engine.get_or_compute
        self.embed_prompt = embeddings.embed_query
        self.embed_documents = held.embed_documents
        self.compute = _call_it
        self.embed_query = held.embed_query

    def clustered(self) -> bool:
        return is_cluster(self.client)


class _AsyncSide:
    """The async twins of :class:`_SyncSide`'s methods under the same names."""

    def __init__(
        self, engine: AsyncCacheEngine, embeddings: Embeddings, held: _HeldVectors
    ) -> None:
        self.client = engine.client
        self.get_many = engine.get_many
        self.set = engine.set
        self.get_or_compute = engine.get_or_compute
        self.embed_prompt = embeddings.aembed_query

        async def embed_documents(keys: list[str]) -> list[list[float]]:
            return held.embed_documents(keys)

        async def embed_query(key: str) -> list[float]:
            return held.embed_query(key)

        self.embed_documents = embed_documents
        self.embed_query = embed_query
        self.compute = _call_it

    async def clustered(self) -> bool:
        return is_cluster(self.client)


class SemanticLLMCache(UsesEngines, BaseCache):
    """LLM responses reused for similar prompts: ``set_llm_cache(SemanticLLMCache(embeddings))``.

    ``embeddings``: any LangChain ``Embeddings`` (the prompt's vector; cosine similarity).
    ``target``/``engine``/``async_engine`` and the engine options as :class:`LLMCache`.
    ``threshold``: the similarity a stored prompt must reach (default :data:`DEFAULT_THRESHOLD`,
    chosen from a measurement); ``guard``: refuse matches the guard finds flip the answer
    (other numbers, negation, times, units, opposites, directions: see ``guard.py``);
    ``store_prompts``: keep prompts in clear text beside their vectors (off: a digest and the
    vector match them); ``tags``: tags of every entry, for ``invalidate_tags``;
    ``vector_search``: as ``RedisStore``'s (the server's search module where there is one).
    A hit returns what was stored, as ``BaseCache`` promises; it is counted per namespace
    (``semantic_hits``) and in ``cache_semantic_hits_total``, and ``mark_hits=True`` marks it
    on the response as :class:`LLMCache` does, with the similarity.
    """

    def __init__(
        self,
        embeddings: Embeddings,
        target: str | Settings | SyncRedisClient | AsyncRedisClient | None = None,
        *,
        engine: CacheEngine | None = None,
        async_engine: AsyncCacheEngine | None = None,
        namespace: str = "semantic-llm",
        ttl: Ttl = DEFAULT_TTLS["ai"],
        threshold: float = DEFAULT_THRESHOLD,
        guard: bool = True,
        store_prompts: bool = False,
        tags: Iterable[str] = (),
        mark_hits: bool = False,
        vector_search: VectorSearch = "auto",
        **engine_options: Unpack[CoreOptions],
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in (0, 1], not {threshold!r}")
        self._engines = EngineOwner(
            target, engine, async_engine, engine_options, face=type(self).__name__
        )
        self.embeddings = embeddings
        self.namespace = namespace
        core = self._engines.core
        core.stats.set_cache_type(namespace, "llm")
        self.ttl = ttl
        self.threshold = threshold
        self.guard = guard
        self.store_prompts = store_prompts
        self.tags = tuple(tags)
        self.mark_hits = mark_hits
        self.vector_search = vector_search
        self._held = _HeldVectors()
        # Beside the engine's keys (its prefix): a store prefix of their own, so the vectors'
        # namespaces never show in an app's RedisStore.list_namespaces().
        self._store_prefix = f"{core.layout.prefix}:semantic:{key_part(namespace)}"
        self._store: StoreCore | None = None
        self._store_ready = False
        self._store_lock = threading.Lock()

    key = staticmethod(LLMCache.key)

    # -- per call ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def bypass(self, *, semantic_only: bool = False) -> Iterator[None]:
        """Within the block (this thread or task): no lookup and no update; or, with
        ``semantic_only``, exact repeats only (and updates as usual)."""
        token = _bypass.set("semantic" if semantic_only else "all")
        try:
            yield
        finally:
            _bypass.reset(token)

    # -- the plans -----------------------------------------------------------------------------

    def _lookup(
        self,
        prompt: str,
        llm_string: str,
        decode: Callable[[bytes], Any],
        count_miss: bool = True,
    ) -> Generator[Any, Any, tuple[Any, SemanticMatch | None]]:
        """The entry for ``prompt``, or MISSING; and the match when it was a similar prompt's.
        ``count_miss=False``: the caller counts a miss (its own lookup follows)."""
        key = self.key(prompt, llm_string)
        uncounted = {"decode": decode, "count": False}  # this plan counts what the lookup was
        [value] = yield Invoke("get_many", (self.namespace, [key]), uncounted)
        stats = self._engines.core.stats
        if value is not MISSING:
            stats.lookups(self.namespace, 1, 0)
            return value, None
        if _bypass.get() is None:
            for match in (
                yield from self._unless_failing(self._candidates(prompt, llm_string), [])
            ):
                if match.guarded or match.similarity < self.threshold:
                    continue
                [value] = yield Invoke("get_many", (self.namespace, [match.key]), uncounted)
                if value is not MISSING:  # else invalidated or expired: its vector outlives it
                    stats.semantic_hit(self.namespace)
                    return value, match
        if count_miss:
            stats.lookups(self.namespace, 0, 1)
        return MISSING, None

    def _call(
        self,
        prompt: str,
        llm_string: str,
        compute: Callable[[], Any],
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
    ) -> Generator[Any, Any, Any]:
        """An SDK call's result: a stored or a similar call's, else ``compute``'s, run once
        for concurrent identical calls (the engine's single-flight, which counts the miss)."""
        value, _ = yield from self._lookup(prompt, llm_string, decode, count_miss=False)
        if value is not MISSING:
            return value
        if _bypass.get() == "all":
            return (yield Invoke("compute", (compute,)))
        key = self.key(prompt, llm_string)
        entry = {"ttl": self.ttl, "tags": self.tags, "encode": encode, "decode": decode}
        value = yield Invoke("get_or_compute", (self.namespace, key, compute), entry)
        yield from self._unless_failing(self._index(prompt, llm_string), None)
        return value

    def _candidates(self, prompt: str, llm_string: str) -> Generator[Any, Any, list[SemanticMatch]]:
        """The stored prompts nearest ``prompt`` (its question, in the same context) for this
        ``llm_string``, best first."""
        asked = question_of(prompt)
        if asked is None:
            return []
        context, question = asked
        key = self.key(prompt, llm_string)
        store = yield from self._ready_store(question, key)
        where = self._store_namespace(llm_string, context)
        [found] = yield from store.batch([SearchOp(where, query=key, limit=CANDIDATES)])
        features = guard_features(question)
        matches = []
        for item in found:
            entry = item.value.get("k")
            if not (isinstance(entry, str) and _DIGEST.fullmatch(entry)):
                self._engines.core.stats.error(self.namespace, "corrupt")  # not one of ours
                continue
            matches.append(
                SemanticMatch(
                    key=Digest(entry),
                    similarity=float(item.score or 0.0),
                    guarded=self.guard and guard_conflict(item.value.get("g"), features),
                    prompt=item.value.get("prompt"),
                )
            )
        return matches

    def _update(
        self, prompt: str, llm_string: str, value: Any, encode: Callable[[Any], bytes]
    ) -> Generator[Any, Any, None]:
        if _bypass.get() == "all":
            return
        key = self.key(prompt, llm_string)
        entry = {"ttl": self.ttl, "tags": self.tags, "encode": encode}
        stored = yield Invoke("set", (self.namespace, key, value), entry)
        if stored:
            yield from self._unless_failing(self._index(prompt, llm_string), None)

    def _unless_failing(
        self, plan: Generator[Any, Any, Any], otherwise: Any
    ) -> Generator[Any, Any, Any]:
        """``plan``'s result, or ``otherwise`` when it fails (the embeddings' API, the vector
        store): the model call goes on as with a miss, and the error is logged and counted."""
        try:
            return (yield from plan)
        except Exception as exc:
            self._engines.core.stats.error(self.namespace, "semantic")
            log.warning("semantic cache step failed, taken as a miss: %s", exc)
            return otherwise

    def _index(self, prompt: str, llm_string: str) -> Generator[Any, Any, None]:
        """Put the question's vector in the store, pointing at its entry, with the entry's
        TTL."""
        asked = question_of(prompt)
        if asked is None:
            return
        context, question = asked
        key = self.key(prompt, llm_string)
        store = yield from self._ready_store(question, key)
        item: dict[str, Any] = {"k": str(key), "g": guard_features(question)}
        if self.store_prompts:
            item["prompt"] = prompt
        seconds = self._engines.core.ttl_for(self.namespace, self.ttl)
        minutes = None if seconds is None else seconds / 60
        where = self._store_namespace(llm_string, context)
        yield from store.batch([PutOp(where, key, item, index=["k"], ttl=minutes)])

    def _ready_store(self, question: str, key: str) -> Generator[Any, Any, StoreCore]:
        """The store, made once the first vector tells its dims and set up once; with the
        question's vector held for it under the prompt's key."""
        vector = self._held.get(key)
        if vector is None:
            vector = list((yield Invoke("embed_prompt", (question,))))
            self._held.hold(key, vector)
        with self._store_lock:
            if self._store is None:
                self._store = StoreCore(
                    index=IndexConfig(dims=len(vector), embed=self._held.embed_documents),
                    prefix=self._store_prefix,
                    metrics=self._engines.core.metrics,
                    vector_search=self.vector_search,
                )
            store, ready = self._store, self._store_ready
        if not ready:
            try:
                yield from store.setup((yield Invoke("clustered")))
                self._store_ready = True
            except Exception as exc:
                if not is_unavailable_error(exc):
                    raise
                # Redis is away: the store answers from memory meanwhile; set up once it is back.
        return store

    @staticmethod
    def _store_namespace(llm_string: str, context: str) -> tuple[str, ...]:
        """Where the vectors of one model and parameters in one conversation context live."""
        return ("llm", digest(llm_string), digest(context))

    # -- drivers -------------------------------------------------------------------------------

    def _run(self, plan: Generator[Any, Any, Any]) -> Any:
        side = _SyncSide(self.engine, self.embeddings, self._held)
        return drive(plan, lambda step: carry_out(step, side.client, side))

    async def _arun(self, plan: Generator[Any, Any, Any]) -> Any:
        side = _AsyncSide(self.async_engine, self.embeddings, self._held)
        return await adrive(plan, lambda step: acarry_out(step, side.client, side))

    # -- BaseCache -----------------------------------------------------------------------------

    def _hit(self, found: tuple[Any, SemanticMatch | None]) -> RETURN_VAL_TYPE | None:
        value, match = found
        if value is MISSING:
            return None
        if not self.mark_hits:
            return value  # type: ignore[no-any-return]
        similarity = 1.0 if match is None else match.similarity
        return mark_hit(value, similarity=similarity)

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        if _bypass.get() == "all":
            return None
        return self._hit(self._run(self._lookup(prompt, llm_string, decode_generations)))

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        if _bypass.get() == "all":
            return None
        return self._hit(await self._arun(self._lookup(prompt, llm_string, decode_generations)))

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        if return_val:
            self._run(self._update(prompt, llm_string, return_val, encode_generations))

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        if return_val:
            await self._arun(self._update(prompt, llm_string, return_val, encode_generations))

    def clear(self, **kwargs: Any) -> None:
        """Remove every answer (the prompt vectors stay until their TTL, answering nothing)."""
        self.engine.clear(self.namespace)

    async def aclear(self, **kwargs: Any) -> None:
        await self.async_engine.clear(self.namespace)

    def invalidate_tags(self, *tags: str) -> int:
        """Remove the answers stored with any of ``tags``."""
        return self.engine.invalidate_tags(self.namespace, *tags)

    async def ainvalidate_tags(self, *tags: str) -> int:
        return await self.async_engine.invalidate_tags(self.namespace, *tags)

    def cached_llm_call(
        self,
        *,
        should_cache: Callable[[Sequence[Any], Mapping[str, Any]], bool] = deterministic_only,
        encode: Callable[[Any], bytes] = codec.dumps,
        decode: Callable[[bytes], Any] = codec.loads,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """:func:`~redis_checkpoint.cached_llm_call` with reuse across rephrasings: decorate
        any LLM SDK call (sync, or a coroutine function) that passes its question as
        ``messages=`` (OpenAI-style), ``input=`` or ``prompt=``. An exact repeat is answered
        without an embedding; a similar question (same function, model and parameters, same
        messages before it) by its answer; else the call runs, once for concurrent identical
        calls. ``should_cache``, ``encode`` and ``decode`` as there."""

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(function):
                async_function = cast(Callable[..., Awaitable[Any]], function)

                @functools.wraps(function)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    if not should_cache(args, kwargs):
                        return await async_function(*args, **kwargs)
                    prompt, llm_string = sdk_prompt(function, args, kwargs)
                    call = functools.partial(async_function, *args, **kwargs)
                    return await self._arun(self._call(prompt, llm_string, call, encode, decode))

                return cast(Callable[P, R], async_wrapper)

            @functools.wraps(function)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                if not should_cache(args, kwargs):
                    return function(*args, **kwargs)
                prompt, llm_string = sdk_prompt(function, args, kwargs)
                call = functools.partial(function, *args, **kwargs)
                return cast(R, self._run(self._call(prompt, llm_string, call, encode, decode)))

            return wrapper

        return decorate

    def neighbours(self, prompt: str, llm_string: str) -> list[SemanticMatch]:
        """The stored prompts a lookup of ``prompt`` weighs, nearest first, whatever the
        threshold, each with whether the guard refuses it: to see why a lookup hit or missed."""
        return list(self._run(self._candidates(prompt, llm_string)))

    def nearest(self, prompt: str, llm_string: str) -> SemanticMatch | None:
        """The stored prompt a lookup of ``prompt`` would answer from at a low enough threshold:
        the nearest the guard lets through, else the nearest (marked ``guarded``)."""
        found = self.neighbours(prompt, llm_string)
        return next((m for m in found if not m.guarded), found[0] if found else None)
