"""The store on a server with a search module (Valkey 8.1 with RediSearch): setup finds it
without MODULE LIST, the module's KNN gives the exact path's answers for every distance, and
its vector hashes live and die with their items."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from langgraph.store.base import SearchItem
from store_helpers import HashedWords, new_prefix, vector_searches

from redis_checkpoint import AsyncRedisStore, ConfigurationError, RedisStore
from redis_checkpoint.store import StoreIndexConfig
from redis_checkpoint.store.search import DISTANCE_TYPES, DistanceType
from redis_checkpoint.testing import RedisClusterServers, RedisServer

DIMS = 16
NEAR_TIE = 1e-6
WORDS = ("red", "green", "blue", "apple", "pear", "sky", "sea", "stone", "fire", "leaf", "owl")


def index(distance: DistanceType = "cosine") -> StoreIndexConfig:
    return {
        "dims": DIMS,
        "embed": HashedWords(),
        "fields": ["text", "notes[*]"],
        "distance_type": distance,
    }


def doc_keys(server: RedisServer, store: RedisStore) -> list[bytes]:
    assert store.core.knn is not None
    with server.client() as client:
        return sorted(client.scan_iter(match=f"{store.core.knn.doc_prefix}*", count=1000))


@pytest.fixture
def module_store(search_server: RedisServer) -> Iterator[RedisStore]:
    with RedisStore.from_conn_string(
        search_server.url, index=index(), prefix=new_prefix(), vector_search="module"
    ) as store:
        yield store


def test_setup_finds_the_module_by_asking_for_its_index(
    search_server: RedisServer, redis_url: str
) -> None:
    prefix = new_prefix()
    with RedisStore.from_conn_string(search_server.url, index=index(), prefix=prefix) as store:
        assert store.search_module
        assert store.core.knn is not None
        name = store.core.knn.name
        store.setup()  # harmless again
        with search_server.client() as client:
            assert name.encode() in client.execute_command("FT._LIST")
    # Without an index, "exact", or a server without the module: no module and no FT index.
    with RedisStore.from_conn_string(search_server.url, prefix=new_prefix()) as store:
        assert not store.search_module
    exact = new_prefix()
    with RedisStore.from_conn_string(
        search_server.url, index=index(), prefix=exact, vector_search="exact"
    ) as store:
        assert not store.search_module
    with search_server.client() as client:
        assert not any(exact.encode() in n for n in client.execute_command("FT._LIST"))
    with RedisStore.from_conn_string(redis_url, index=index(), prefix=new_prefix()) as store:
        assert not store.search_module
    no_module = RedisStore.from_conn_string(redis_url, index=index(), vector_search="module")
    with pytest.raises(ConfigurationError, match="no search module"), no_module:
        pass


def test_on_a_cluster_the_store_ranks_exactly(redis_cluster: RedisClusterServers) -> None:
    with RedisStore.from_conn_string(redis_cluster.url, index=index()) as store:
        assert not store.search_module
    clustered = RedisStore.from_conn_string(
        redis_cluster.url, index=index(), vector_search="module"
    )
    with pytest.raises(ConfigurationError, match="cluster"), clustered:
        pass


def fill(store: RedisStore, rng: random.Random, n: int) -> None:
    """Items in three namespaces: most with one to three vectors, some without, some
    overwritten with fewer fields, some deleted."""
    for i in range(n):
        namespace = ("mem", f"u{i % 3}") if i % 5 else ("mem", "u0", "deep")
        value: dict[str, Any] = {"group": i % 4, "n": i}
        if i % 9:
            value["text"] = " ".join(rng.choices(WORDS, k=3))
        if i % 4 == 0:
            value["notes"] = [" ".join(rng.choices(WORDS, k=2)) for _ in range(2)]
        store.put(namespace, f"k{i}", value, index=False if i % 13 == 0 else None)
    for i in range(0, n, 17):
        store.put(("mem", f"u{i % 3}"), f"k{i}", {"text": "sea owl", "group": 1, "n": i})
    for i in range(3, n, 23):
        store.delete(("mem", f"u{i % 3}"), f"k{i}")


def same(found: list[SearchItem], expected: list[SearchItem]) -> None:
    """The same page: position by position the same score, and the same item unless two
    items score within float rounding of each other (such a near-tie may break either way:
    float32 dot products round differently in matrices of different shapes)."""
    scores = [r.score for r in expected]
    assert [r.score for r in found] == pytest.approx(scores, abs=NEAR_TIE)  # None: no vector
    for got, wanted in zip(found, expected, strict=True):
        if (got.namespace, got.key) == (wanted.namespace, wanted.key):
            assert got.value == wanted.value
        else:
            assert got.score is not None and wanted.score is not None, (got, wanted)


@pytest.mark.parametrize("distance", DISTANCE_TYPES)
def test_the_module_answers_as_the_exact_path(
    search_server: RedisServer, distance: DistanceType
) -> None:
    rng = random.Random(distance)
    options: dict[str, Any] = {"index": index(distance)}
    with (
        RedisStore.from_conn_string(
            search_server.url, prefix=new_prefix(), vector_search="module", **options
        ) as module,
        RedisStore.from_conn_string(
            search_server.url, prefix=new_prefix(), vector_search="exact", **options
        ) as exact,
    ):
        assert module.search_module and not exact.search_module
        state = rng.getstate()
        fill(module, rng, 400)
        rng.setstate(state)
        fill(exact, rng, 400)
        before = vector_searches("module")
        searches = 0
        for _ in range(60):
            query = " ".join(rng.choices(WORDS, k=rng.randint(1, 3)))
            prefix = rng.choice([(), ("mem",), ("mem", "u1"), ("mem", "u0", "deep")])
            kwargs: dict[str, Any] = {
                "limit": rng.choice([1, 5, 10, 40]),
                "offset": rng.choice([0, 0, 3, 20]),
            }
            if rng.random() < 0.4:
                kwargs["filter"] = rng.choice(
                    [{"group": 2}, {"n": {"$gt": 300}}, {"group": {"$ne": 0}}]
                )
            same(
                module.search(prefix, query=query, **kwargs),
                exact.search(prefix, query=query, **kwargs),
            )
            searches += 1
        answered = vector_searches("module") - before
        # The few the exact path answers are pages the module's vectors cannot fill.
        assert answered >= 0.9 * searches, (answered, searches)


def test_vector_hashes_live_and_die_with_their_items(
    search_server: RedisServer, module_store: RedisStore
) -> None:
    store = module_store
    store.put(("a",), "x", {"text": "red owl", "notes": ["sea", "fire"]})
    assert len(doc_keys(search_server, store)) == 3  # text and two notes
    store.put(("a",), "x", {"text": "red owl"})
    assert len(doc_keys(search_server, store)) == 1
    store.put(("a",), "x", {"text": "red owl"}, index=False)
    assert doc_keys(search_server, store) == []
    store.put(("a",), "x", {"text": "red owl"})
    store.delete(("a",), "x")
    assert doc_keys(search_server, store) == []
    assert store.search(("a",), query="red owl") == []

    # A TTL: the hashes expire with the item, and a refresh gives them the TTL again.
    store.put(("a",), "t", {"text": "blue sky"}, ttl=0.01)  # 600 ms
    [doc] = doc_keys(search_server, store)
    with search_server.client() as client:
        assert 0 < client.pttl(doc) <= 600
        time.sleep(0.3)
        assert client.pttl(doc) <= 300
        assert store.get(("a",), "t", refresh_ttl=True) is not None
        assert client.pttl(doc) > 450
        assert [r.key for r in store.search(("a",), query="blue sky")] == ["t"]
        time.sleep(0.7)
        assert store.search(("a",), query="blue sky") == []
        assert client.exists(doc) == 0


def test_vectors_stored_before_the_index_existed_are_found(search_server: RedisServer) -> None:
    prefix = new_prefix()
    with RedisStore.from_conn_string(
        search_server.url, index=index(), prefix=prefix, vector_search="exact"
    ) as exact:
        fill(exact, random.Random(5), 120)
        expected = exact.search(("mem",), query="sea owl", limit=15)
        # This process found no module, so it wrote no vector hashes.
        with search_server.client() as client:
            assert not list(client.scan_iter(match=f"{prefix}:st:knn*"))
    before = vector_searches("module")
    with RedisStore.from_conn_string(search_server.url, index=index(), prefix=prefix) as module:
        assert module.search_module  # created the index, then hashed what was there
        same(module.search(("mem",), query="sea owl", limit=15), expected)
    assert vector_searches("module") == before + 1


async def test_the_async_store_uses_the_module_too(search_server: RedisServer) -> None:
    async with AsyncRedisStore.from_conn_string(
        search_server.url, index=index("l2"), prefix=new_prefix(), vector_search="module"
    ) as store:
        assert store.search_module
        texts = ("red owl", "blue sea", "green leaf", "red fire")
        for i, text in enumerate(texts):
            await store.aput(("b",), f"k{i}", {"text": text})
        before = vector_searches("module")
        found = await store.asearch(("b",), query="red owl", limit=2)
        assert vector_searches("module") == before + 1
        query = np.asarray(HashedWords.vector("red owl"))
        distances = [
            float(np.linalg.norm(np.asarray(HashedWords.vector(t)) - query)) for t in texts
        ]
        nearest = sorted(range(len(texts)), key=distances.__getitem__)[:2]
        assert [r.key for r in found] == [f"k{i}" for i in nearest]
        # l2 scores are minus the distance: the query's own text scores 0.
        assert [r.score for r in found] == pytest.approx([-distances[i] for i in nearest], abs=1e-5)


def test_a_foreign_hash_under_the_index_prefix_is_ignored(
    search_server: RedisServer, module_store: RedisStore
) -> None:
    store = module_store
    store.put(("c",), "real", {"text": "stone"})
    assert store.core.knn is not None
    with search_server.client() as client:
        # Indexed by the module (its vector is valid) but names no item the store holds.
        packed = np.asarray(HashedWords.vector("stone"), dtype="<f4").tobytes()
        client.hset(
            f"{store.core.knn.doc_prefix}{{c}}:0:ghost",
            mapping={"v": packed, "k": "ghost", "n": "c", "p": store.core.knn.digests(("c",))},
        )
    assert [r.key for r in store.search(("c",), query="stone")] == ["real"]


@pytest.mark.parametrize("distance", DISTANCE_TYPES)
def test_each_distance_ranks_as_documented_on_plain_redis(
    redis_url: str, distance: DistanceType
) -> None:
    # PostgresStore's scores: cosine similarity, the dot product, minus the euclidean distance.
    def expected_score(a: np.ndarray[Any, Any], q: np.ndarray[Any, Any]) -> float:
        if distance == "cosine":
            return float(a @ q / (np.linalg.norm(a) * np.linalg.norm(q)))
        if distance == "inner_product":
            return float(a @ q)
        return -float(np.linalg.norm(a - q))

    texts = [" ".join(random.Random(i).choices(WORDS, k=3)) for i in range(40)]
    with RedisStore.from_conn_string(
        redis_url, index=index(distance), prefix=new_prefix()
    ) as store:
        assert not store.search_module
        for i, text in enumerate(texts):
            store.put(("d",), f"k{i}", {"text": text})
        query = np.asarray(HashedWords.vector("owl sea"))
        scores = [expected_score(np.asarray(HashedWords.vector(t)), query) for t in texts]
        found = store.search(("d",), query="owl sea", limit=40)
    assert [r.score for r in found] == pytest.approx(sorted(scores, reverse=True), abs=1e-5)
    for item in found:
        assert item.score == pytest.approx(scores[int(item.key[1:])], abs=1e-5)


def test_an_unknown_distance_or_search_choice_is_refused(redis_url: str) -> None:
    bad_index: Any = {**index(), "distance_type": "manhattan"}
    with pytest.raises(ValueError, match="distance_type"):
        RedisStore(redis.Redis.from_url(redis_url), index=bad_index)
    with pytest.raises(ValueError, match="vector_search"):
        RedisStore(redis.Redis.from_url(redis_url), vector_search="fast")  # type: ignore[arg-type]


def test_a_search_whose_index_went_away_is_answered_exactly(
    search_server: RedisServer, module_store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = module_store
    store.put(("e",), "a", {"text": "red owl"})
    store.put(("e",), "b", {"text": "blue sea"})
    assert store.core.knn is not None
    with search_server.client() as client:
        client.execute_command("FT.DROPINDEX", store.core.knn.name)
    before = vector_searches("exact")
    with caplog.at_level("WARNING", logger="redis_checkpoint.store"):
        found = store.search(("e",), query="red owl", limit=1)
    assert [r.key for r in found] == ["a"]
    assert vector_searches("exact") == before + 1
    assert "the search module failed" in caplog.text
