"""CachedEmbeddings around a model that counts its calls: one MGET when warm, no repeats."""

from __future__ import annotations

import struct

import pytest
import redis
from cache_helpers import CountingEmbeddings, engine, unique

from redis_checkpoint import CachedEmbeddings
from redis_checkpoint.cache.keys import digest


def as_float32(vector: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))


@pytest.fixture
def cached(redis_url: str) -> CachedEmbeddings:
    return CachedEmbeddings(CountingEmbeddings(), engine=engine(redis_url, unique("emb")))


def test_a_warm_batch_is_one_round_trip(cached: CachedEmbeddings) -> None:
    model = cached.underlying
    assert isinstance(model, CountingEmbeddings)
    texts = [f"document {i}" for i in range(300)] + ["document 0", "document 1"]
    cold = cached.embed_documents(texts)
    assert model.documents == [[f"document {i}" for i in range(300)]]  # duplicates embedded once
    assert cold[300] == cold[0] and cold[301] == cold[1]
    trips = cached.engine.round_trips
    warm = cached.embed_documents(texts)
    assert cached.engine.round_trips - trips == 1  # one MGET, nothing else
    assert warm == cold and len(model.documents) == 1
    assert cold[5] == as_float32(model.vector("document 5"))  # what a hit would return


def test_only_missing_texts_are_embedded(cached: CachedEmbeddings) -> None:
    model = cached.underlying
    assert isinstance(model, CountingEmbeddings)
    cached.embed_documents(["a", "b"])
    trips = cached.engine.round_trips
    result = cached.embed_documents(["b", "c", "a", "c"])
    assert model.documents[-1] == ["c"]
    assert cached.engine.round_trips - trips == 2  # MGET + one write-back
    assert result[1] == result[3] == as_float32(model.vector("c"))
    assert cached.embed_documents([]) == []


def test_queries_and_documents_are_separate(cached: CachedEmbeddings) -> None:
    model = cached.underlying
    assert isinstance(model, CountingEmbeddings)
    document = cached.embed_documents(["same text"])[0]
    query = cached.embed_query("same text")
    assert query != document and model.queries == ["same text"]
    assert cached.embed_query("same text") == query and model.queries == ["same text"]


def test_models_are_separate_and_float64_is_exact(redis_url: str) -> None:
    shared = engine(redis_url, unique("models"))
    v1 = CachedEmbeddings(CountingEmbeddings("v1"), engine=shared)
    v2 = CachedEmbeddings(CountingEmbeddings("v2"), engine=shared)
    exact = CachedEmbeddings(CountingEmbeddings("v1"), engine=shared, dtype="float64")
    assert "v1" in v1.documents_namespace and v1.documents_namespace != v2.documents_namespace
    first = v1.embed_documents(["x"])
    assert v2.embed_documents(["x"]) != first
    assert isinstance(v2.underlying, CountingEmbeddings) and len(v2.underlying.documents) == 1
    full = exact.embed_documents(["x"])
    assert exact.embed_documents(["x"]) == full == [CountingEmbeddings("v1").vector("x")]
    with pytest.raises(ValueError, match="dtype"):
        CachedEmbeddings(CountingEmbeddings(), engine=shared, dtype="float16")  # type: ignore[arg-type]


def test_a_corrupt_vector_is_recomputed(
    cached: CachedEmbeddings, redis_client: redis.Redis
) -> None:
    cached.embed_documents(["t"])
    key = cached.engine.core.layout.entry(cached.documents_namespace, digest("t"))
    raw = redis_client.get(key)
    assert raw is not None
    redis_client.set(key, raw[:-3], keepttl=True)  # truncated: no longer a whole float32 vector
    assert cached.embed_documents(["t"]) == [as_float32(CountingEmbeddings().vector("t"))]
    assert cached.engine.stats()[cached.documents_namespace].errors == 1


async def test_async_twins(cached: CachedEmbeddings) -> None:
    model = cached.underlying
    assert isinstance(model, CountingEmbeddings)
    cold = await cached.aembed_documents(["p", "q", "p"])
    trips = cached.async_engine.round_trips
    assert await cached.aembed_documents(["p", "q", "p"]) == cold
    assert cached.async_engine.round_trips - trips == 1
    assert len(model.documents) == 1  # the default aembed_documents ran the sync one once
    query = await cached.aembed_query("p")
    assert await cached.aembed_query("p") == query and model.queries == ["p"]
    assert cached.embed_documents(["p"]) == [cold[0]]  # sync and async share the entries
    await cached.aclear()
    await cached.aembed_documents(["p"])
    assert len(model.documents) == 2
    await cached.aclose()
