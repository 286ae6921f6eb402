"""The cache engine and its faces on a real 3-node Redis Cluster: every multi-key command stays
in one slot (the namespace's hash tag), sync and async."""

from __future__ import annotations

import pytest
from cache_helpers import CountingEmbeddings, private_metrics, unique
from langchain_core.outputs import Generation

from redis_checkpoint import CachedEmbeddings, CacheEngine, LLMCache, NodeCache
from redis_checkpoint.cache import MISSING
from redis_checkpoint.testing import RedisClusterServers

pytestmark = pytest.mark.cluster


def test_engine_on_a_cluster(redis_cluster: RedisClusterServers) -> None:
    namespaces = ["llm", "a:b", "{x}", "emb:doc:float32:model/1"]  # land on different slots
    with CacheEngine(redis_cluster.url, prefix=unique("cl"), metrics=private_metrics()) as cache:
        for ns in namespaces:
            cache.set_many(ns, [(f"k{i}", i) for i in range(50)], tags=["t"])
            assert cache.get_many(ns, [f"k{i}" for i in range(50)]) == list(range(50))
        assert cache.invalidate_tags("a:b", "t") == 50
        cache.clear("{x}")
        assert cache.get_many("a:b", ["k0"]) == [MISSING]
        assert cache.get_many("{x}", ["k0"]) == [MISSING]
        assert cache.get("llm", "k1") == 1
        assert cache.get_or_compute("llm", "computed", lambda: "once") == "once"
        assert cache.stats()["llm"].errors == 0
        embeddings = CachedEmbeddings(CountingEmbeddings(), engine=cache)
        texts = [f"t{i}" for i in range(100)]
        cold = embeddings.embed_documents(texts)
        trips = cache.round_trips
        assert embeddings.embed_documents(texts) == cold
        assert cache.round_trips - trips == 1


async def test_async_faces_on_a_cluster(redis_cluster: RedisClusterServers) -> None:
    with CacheEngine(redis_cluster.url, prefix=unique("acl"), metrics=private_metrics()) as cache:
        llm = LLMCache(engine=cache)
        node: NodeCache[object] = NodeCache(engine=cache)
        try:
            await llm.aupdate("p", "m", [Generation(text="x")])
            assert await llm.alookup("p", "m") is not None
            await node.aset({(("n",), "k"): ({"v": 1}, 60)})
            assert await node.aget([(("n",), "k")]) == {(("n",), "k"): {"v": 1}}
            await node.aclear([("n",)])
            assert await node.aget([(("n",), "k")]) == {}
        finally:
            await llm.aclose()
            await node.aclose()
