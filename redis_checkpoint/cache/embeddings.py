"""CachedEmbeddings: any langchain-core Embeddings, with its vectors cached in Redis.

``embed_documents`` costs one MGET for the whole batch; each distinct missing text is embedded
once (duplicates inside the batch too) and the new vectors go back in one round trip. Documents
and queries live in separate namespaces (some models embed them differently), and the model's
identity is part of both, so two models never share vectors.

Vectors are stored packed: a one-byte type tag then little-endian float32 (default, half the
bytes) or float64 (exact). With float32 a freshly computed vector is returned as it will later be
read back, so what a caller gets never depends on whether the cache was warm.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.embeddings import Embeddings

from redis_checkpoint.cache.core import DEFAULT_TTLS, MISSING, Ttl
from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine
from redis_checkpoint.cache.face import EngineOwner, UsesEngines
from redis_checkpoint.cache.keys import digest
from redis_checkpoint.client import AsyncRedisClient, SyncRedisClient
from redis_checkpoint.settings import Settings

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from redis_checkpoint.cache.core import CoreOptions

__all__ = ["CachedEmbeddings", "model_identity"]

_FORMATS = {"float32": (b"f", "f", 4), "float64": (b"d", "d", 8)}
_MODEL_ATTRIBUTES = ("model", "model_name", "model_id", "deployment", "repo_id")


def model_identity(embeddings: Embeddings) -> str:
    """``module.Class`` plus the first of model/model_name/model_id/... the object has.

    Pass ``model_id=`` when that does not tell two configurations apart (e.g. dimensions).
    """
    kind = f"{type(embeddings).__module__}.{type(embeddings).__qualname__}"
    for attribute in _MODEL_ATTRIBUTES:
        value = getattr(embeddings, attribute, None)
        if isinstance(value, str) and value:
            return f"{kind}/{value}"
    return kind


class CachedEmbeddings(UsesEngines, Embeddings):
    """``CachedEmbeddings(OpenAIEmbeddings(...), url)`` and use it like the model.

    ``ttl`` defaults to 7 days (the "embeddings" kind); ``dtype`` is "float32" or "float64".
    """

    def __init__(
        self,
        underlying: Embeddings,
        target: str | Settings | SyncRedisClient | AsyncRedisClient | None = None,
        *,
        engine: CacheEngine | None = None,
        async_engine: AsyncCacheEngine | None = None,
        model_id: str | None = None,
        namespace: str = "emb",
        ttl: Ttl = DEFAULT_TTLS["embeddings"],
        dtype: Literal["float32", "float64"] = "float32",
        **engine_options: Unpack[CoreOptions],
    ) -> None:
        if dtype not in _FORMATS:
            raise ValueError(f"dtype={dtype!r} must be 'float32' or 'float64'")
        self.underlying = underlying
        self._engines = EngineOwner(
            target, engine, async_engine, engine_options, face=type(self).__name__
        )
        self.model_id = model_id or model_identity(underlying)
        self.dtype = dtype
        self.ttl = ttl
        self._tag, self._code, self._size = _FORMATS[dtype]
        # The dtype is in the namespace too: a float64 reader never sees float32 entries.
        self.documents_namespace = f"{namespace}:doc:{dtype}:{self.model_id}"
        self.queries_namespace = f"{namespace}:query:{dtype}:{self.model_id}"
        for own in (self.documents_namespace, self.queries_namespace):
            self._engines.core.stats.set_cache_type(own, "embedding")

    # -- packing ---------------------------------------------------------------------------

    def pack(self, vector: Sequence[float]) -> bytes:
        return self._tag + struct.pack(f"<{len(vector)}{self._code}", *vector)

    def unpack(self, payload: bytes) -> list[float]:
        body = len(payload) - 1
        if not payload.startswith(self._tag) or body % self._size:
            raise ValueError(f"not a packed {self.dtype} vector")
        return list(struct.unpack(f"<{body // self._size}{self._code}", payload[1:]))

    def _as_stored(self, vector: Sequence[float]) -> list[float]:
        return self.unpack(self.pack(vector)) if self.dtype == "float32" else list(vector)

    # -- batching --------------------------------------------------------------------------

    @staticmethod
    def _missing(texts: Sequence[str], found: Sequence[Any]) -> list[str]:
        """Distinct texts without a cached vector, in first-seen order."""
        return list(dict.fromkeys(t for t, v in zip(texts, found, strict=True) if v is MISSING))

    def _merge(
        self,
        texts: Sequence[str],
        found: Sequence[Any],
        missing: Sequence[str],
        computed: Sequence[Sequence[float]],
    ) -> tuple[list[list[float]], list[tuple[str | bytes, list[float]]]]:
        if len(computed) != len(missing):
            raise ValueError(
                f"{type(self.underlying).__name__} returned {len(computed)} vectors "
                f"for {len(missing)} texts"
            )
        pairs = zip(missing, computed, strict=True)
        fresh = {text: self._as_stored(vector) for text, vector in pairs}
        vectors = [fresh[t] if v is MISSING else v for t, v in zip(texts, found, strict=True)]
        return vectors, [(digest(text), vector) for text, vector in fresh.items()]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        keys = [digest(text) for text in texts]
        found = self.engine.get_many(self.documents_namespace, keys, decode=self.unpack)
        missing = self._missing(texts, found)
        if not missing:
            return list(found)
        computed = self.underlying.embed_documents(missing)
        vectors, new = self._merge(texts, found, missing, computed)
        self.engine.set_many(self.documents_namespace, new, ttl=self.ttl, encode=self.pack)
        return vectors

    def embed_query(self, text: str) -> list[float]:
        key = digest(text)
        [found] = self.engine.get_many(self.queries_namespace, [key], decode=self.unpack)
        if found is not MISSING:
            return found  # type: ignore[no-any-return]
        vector = self._as_stored(self.underlying.embed_query(text))
        self.engine.set(self.queries_namespace, key, vector, ttl=self.ttl, encode=self.pack)
        return vector

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        keys = [digest(text) for text in texts]
        found = await self.async_engine.get_many(self.documents_namespace, keys, decode=self.unpack)
        missing = self._missing(texts, found)
        if not missing:
            return list(found)
        computed = await self.underlying.aembed_documents(missing)
        vectors, new = self._merge(texts, found, missing, computed)
        await self.async_engine.set_many(
            self.documents_namespace, new, ttl=self.ttl, encode=self.pack
        )
        return vectors

    async def aembed_query(self, text: str) -> list[float]:
        key = digest(text)
        [found] = await self.async_engine.get_many(
            self.queries_namespace, [key], decode=self.unpack
        )
        if found is not MISSING:
            return found  # type: ignore[no-any-return]
        vector = self._as_stored(await self.underlying.aembed_query(text))
        await self.async_engine.set(
            self.queries_namespace, key, vector, ttl=self.ttl, encode=self.pack
        )
        return vector

    def clear(self) -> None:
        """Forget this model's cached vectors (documents and queries), in every process."""
        self.engine.clear(self.documents_namespace)
        self.engine.clear(self.queries_namespace)

    async def aclear(self) -> None:
        await self.async_engine.clear(self.documents_namespace)
        await self.async_engine.clear(self.queries_namespace)
