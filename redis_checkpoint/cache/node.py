"""NodeCache: langgraph's node cache (``graph.compile(cache=NodeCache(url))``) on the engine.

All of a graph's node results live in one engine namespace; each entry is tagged with its
langgraph namespace (the node), so ``clear([ns])`` is a tag invalidation and ``clear()`` a single
generation bump: no KEYS, no SCAN. Values go through the cache's ``serde`` (langgraph's
JsonPlusSerializer without pickle by default) and are stored as msgpack ``[type, bytes]``. The
async methods run on redis.asyncio, never on a thread.

Built from a URL, a sync client or an asyncio client, the cache serves ``graph.invoke`` and
``graph.ainvoke`` alike: the other side's client is derived from the one given (see
:mod:`.face`), and both drive one core.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langgraph.cache.base import BaseCache, FullKey, Namespace, ValueT
from langgraph.checkpoint.serde.base import SerializerProtocol

from redis_checkpoint.cache import codec
from redis_checkpoint.cache.core import MISSING
from redis_checkpoint.cache.engine import AsyncCacheEngine, CacheEngine
from redis_checkpoint.cache.face import EngineOwner, UsesEngines
from redis_checkpoint.cache.keys import digest, escape
from redis_checkpoint.client import AsyncRedisClient, SyncRedisClient
from redis_checkpoint.settings import Settings

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from redis_checkpoint.cache.core import CoreOptions

__all__ = ["NodeCache"]


def _tag(namespace: Namespace) -> str:
    return "/".join(escape(part) for part in namespace)


class NodeCache(UsesEngines, BaseCache[ValueT]):
    """A langgraph ``BaseCache`` on Redis. TTLs come from each node's ``CachePolicy(ttl=...)``
    (``None``: no expiry).

    ``target`` is a URL, Settings, a redis-py client (sync or asyncio, standalone or cluster) or
    ``None`` (REDIS_URL); or pass ``engine=`` (and ``async_engine=``) to share engines. Closing
    the cache closes only the clients it built or derived, never the one passed in.
    """

    def __init__(
        self,
        target: str | Settings | SyncRedisClient | AsyncRedisClient | None = None,
        *,
        engine: CacheEngine | None = None,
        async_engine: AsyncCacheEngine | None = None,
        namespace: str = "node",
        serde: SerializerProtocol | None = None,
        **engine_options: Unpack[CoreOptions],
    ) -> None:
        super().__init__(serde=serde)
        self._engines = EngineOwner(
            target, engine, async_engine, engine_options, face=type(self).__name__
        )
        self.namespace = namespace
        # On the core: a cache built from an asyncio client derives its sync side only if used.
        self._engines.core.stats.set_cache_type(namespace, "node")

    @staticmethod
    def _key(full_key: FullKey) -> str:
        namespace, key = full_key
        return digest(_tag(namespace), key)

    def _encode(self, value: Any) -> bytes:
        kind, data = self.serde.dumps_typed(value)
        return codec.dumps([kind, data])

    def _decode(self, payload: bytes) -> Any:
        kind, data = codec.loads(payload)
        if not isinstance(kind, str) or not isinstance(data, bytes):
            raise ValueError("a node cache entry must be [type, bytes]")
        return self.serde.loads_typed((kind, data))

    @staticmethod
    def _found(keys: Sequence[FullKey], values: Sequence[Any]) -> dict[FullKey, ValueT]:
        return {k: v for k, v in zip(keys, values, strict=True) if v is not MISSING}

    def _groups(
        self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]
    ) -> dict[tuple[str, int | None], list[tuple[str | bytes, Any]]]:
        # One write per (node, ttl): the tag and the TTL apply to a whole write.
        groups: dict[tuple[str, int | None], list[tuple[str | bytes, Any]]] = defaultdict(list)
        for full_key, (value, ttl) in pairs.items():
            groups[(_tag(full_key[0]), ttl)].append((self._key(full_key), value))
        return groups

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        values = self.engine.get_many(
            self.namespace, [self._key(k) for k in keys], decode=self._decode
        )
        return self._found(keys, values)

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        values = await self.async_engine.get_many(
            self.namespace, [self._key(k) for k in keys], decode=self._decode
        )
        return self._found(keys, values)

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        for (tag, ttl), items in self._groups(pairs).items():
            self.engine.set_many(self.namespace, items, ttl=ttl, tags=[tag], encode=self._encode)

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        for (tag, ttl), items in self._groups(pairs).items():
            await self.async_engine.set_many(
                self.namespace, items, ttl=ttl, tags=[tag], encode=self._encode
            )

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        if namespaces is None:
            self.engine.clear(self.namespace)
        else:
            self.engine.invalidate_tags(self.namespace, *(_tag(ns) for ns in namespaces))

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        if namespaces is None:
            await self.async_engine.clear(self.namespace)
        else:
            await self.async_engine.invalidate_tags(
                self.namespace, *(_tag(ns) for ns in namespaces)
            )
