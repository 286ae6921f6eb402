"""Seeded random sequences of store operations, run on our store and on InMemoryStore side by
side: every answer must match (with the differences by design of tests/store_helpers.py)."""

from __future__ import annotations

import random
from contextlib import AsyncExitStack
from typing import Any, Literal

import pytest
from langgraph.store.base import GetOp, ListNamespacesOp, Op, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore
from store_helpers import (
    FaceMaker,
    Namespace,
    Target,
    index_config,
    matching,
    same_as_reference,
    vector_searches,
)

from redis_checkpoint.store import VectorSearch
from redis_checkpoint.testing import RedisServer

STEPS = 150
# Labels that sort differently as text than as tuples ("a" < "a b" < "a-b"), and characters a
# key layout or a SCAN pattern could trip on.
LEVEL1 = ("a", "a b", "a-b", "ü:{x}")
LEVEL2 = ("x", "y:{z}", "[q]?")
LEVEL3 = ("m", "n n")
KEYS = ("k1", "k:2", "{k3}", "ключ", "*")
WORDS = ("red", "green", "blue", "apple", "pear", "sky", "sea", "stone", "fire", "leaf")
INDEXES: tuple[Literal[False] | list[str] | None, ...] = (
    None,
    None,
    None,
    False,
    ["text"],
    ["items[*].text"],
    ["text", "meta.tags[*]"],
)
NUMBERS: tuple[Any, ...] = (0, 1, 2, 2.0, 2.5, 3, 7, -1, "x", None)
FILTERS: tuple[dict[str, Any], ...] = (
    {"tag": "red"},
    {"tag": None},
    {"n": 2},
    {"n": {"$eq": 2}},
    {"n": {"$ne": 2}},
    {"n": {"$gt": 1}},
    {"n": {"$gte": 2, "$lt": 7}},
    {"n": {"$lte": 0}},
    {"meta": {"lvl": 1}},
    {"meta": {"lvl": {"$gt": 0}}},
    {"meta": {"tags": ["p", "q"]}},
    {"meta": {"tags": []}},
    {"flag": True},
    {"tag": "blue", "n": {"$lt": 3}},
    {"items": []},
)


class Generator:
    """Random ops over a few "hot" namespaces, reading the reference to pick keys that exist."""

    def __init__(self, seed: int, ref: InMemoryStore) -> None:
        self.rng = random.Random(seed)
        self.ref = ref
        every: list[Namespace] = [(a,) for a in LEVEL1]
        every += [(a, b) for a in LEVEL1 for b in LEVEL2]
        every += [(a, b, c) for a in LEVEL1 for b in LEVEL2 for c in LEVEL3]
        self.every = every
        self.hot = self.rng.sample(every, 8)

    def words(self) -> str:
        return " ".join(self.rng.choices(WORDS, k=self.rng.randint(1, 4)))

    def value(self) -> dict[str, Any]:
        rng = self.rng
        value: dict[str, Any] = {"uid": rng.randint(0, 10**9)}
        if rng.random() < 0.85:
            value["text"] = self.words()
        if rng.random() < 0.8:
            value["n"] = rng.choice(NUMBERS)
        if rng.random() < 0.7:
            value["tag"] = rng.choice(["red", "blue", None])
        if rng.random() < 0.5:
            tags = rng.sample(["p", "q", "r"], k=rng.randint(0, 2))
            value["meta"] = {"lvl": rng.randint(0, 2), "tags": tags}
        if rng.random() < 0.4:
            value["items"] = [{"text": self.words()} for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.3:
            value["flag"] = rng.random() < 0.5
        return value

    def existing(self) -> tuple[Namespace, str]:
        stored = [(ns, key) for ns, items in self.ref._data.items() for key in items]
        if stored and self.rng.random() < 0.8:
            return self.rng.choice(stored)
        return self.rng.choice(self.hot), self.rng.choice(KEYS)

    def prefix(self) -> Namespace:
        rng = self.rng
        if rng.random() < 0.15:
            return ()
        namespace = rng.choice(self.hot if rng.random() < 0.85 else self.every)
        return namespace[: rng.randint(1, len(namespace))]

    def path(self, length: int, last: bool) -> tuple[str, ...]:
        namespace = self.rng.choice(self.hot)
        labels = namespace[-length:] if last else namespace[:length]
        return tuple("*" if self.rng.random() < 0.3 else label for label in labels)

    def search(self, query: bool) -> SearchOp:
        rng = self.rng
        return SearchOp(
            self.prefix(),
            filter=rng.choice(FILTERS) if rng.random() < 0.5 else None,
            limit=rng.randint(1, 6),
            offset=rng.choice([0, 0, 0, 1, 2, 4]),
            query=self.words() if query else None,
        )

    def list_namespaces(self) -> ListNamespacesOp:
        rng = self.rng
        prefix = self.path(rng.randint(1, 2), last=False) if rng.random() < 0.6 else None
        suffix = self.path(rng.randint(1, 2), last=True) if rng.random() < 0.3 else None
        return ListNamespacesOp(
            matching(prefix=prefix, suffix=suffix),
            max_depth=rng.choice([None, None, 1, 2, 3]),
            limit=rng.choice([100, 100, 1, 2, 5]),
            offset=rng.choice([0, 0, 1, 3]),
        )

    def op(self) -> Op:
        roll = self.rng.random()
        if roll < 0.38:
            index = self.rng.choice(INDEXES)
            return PutOp(self.rng.choice(self.hot), self.rng.choice(KEYS), self.value(), index)
        if roll < 0.48:
            return PutOp(*self.existing(), None)
        if roll < 0.60:
            return GetOp(*self.existing())
        if roll < 0.72:
            return self.search(query=False)
        if roll < 0.88:
            return self.search(query=True)
        return self.list_namespaces()

    def step(self) -> list[Op]:
        if self.rng.random() < 0.06:
            return [self.op() for _ in range(self.rng.randint(2, 5))]
        return [self.op()]


RUNS = [(seed, False) for seed in range(5)] + [(seed, True) for seed in (5, 6)]
# On the search module: its KNN answers the vector searches.
MODULE_RUNS = [(seed, False) for seed in (7, 8)] + [(9, True)]


def _ids(runs: list[tuple[int, bool]]) -> list[str]:
    return [f"{'async' if a else 'sync'}-{s}" for s, a in runs]


@pytest.mark.parametrize(("seed", "is_async"), RUNS, ids=_ids(RUNS))
async def test_random_operations_answer_as_in_memory_store(
    redis_server: RedisServer, seed: int, is_async: bool
) -> None:
    await run_sequence(redis_server, seed, is_async, "exact")


@pytest.mark.parametrize(("seed", "is_async"), MODULE_RUNS, ids=_ids(MODULE_RUNS))
async def test_random_operations_answer_as_in_memory_store_on_the_search_module(
    search_server: RedisServer, seed: int, is_async: bool
) -> None:
    await run_sequence(search_server, seed, is_async, "module")


async def run_sequence(
    server: RedisServer, seed: int, is_async: bool, vector_search: VectorSearch = "exact"
) -> None:
    target = Target(server.host, (server.port,))
    before = {by: vector_searches(by) for by in ("module", "exact")}
    ref = InMemoryStore(index=index_config())
    generator = Generator(seed, ref)
    async with AsyncExitStack() as stack:
        face = await FaceMaker(target, is_async, stack)(
            index=index_config(), vector_search=vector_search
        )
        assert face.store.search_module == (vector_search == "module")  # type: ignore[attr-defined]
        for step in range(STEPS):
            ops = generator.step()
            if step % 25 == 24:  # the whole state, now and then
                ops = [*ops, SearchOp((), limit=10**4), ListNamespacesOp(limit=10**4)]
            try:
                await same_as_reference(face, ref, *ops)
            except AssertionError as exc:
                raise AssertionError(f"seed {seed}, step {step}: {exc}") from exc
        assert ref._data, "the sequence left nothing stored: a weak test"
    ranked = {by: vector_searches(by) - before[by] for by in before}
    if vector_search == "module":
        # These namespaces are small and many items have no vector: most pages need items
        # without one to fill them, which only the exact path knows (tests/test_store_module.py
        # has namespaces where the module answers nearly all).
        assert ranked["module"] > 0, ranked
    else:
        assert ranked["module"] == 0 and ranked["exact"] > 0, ranked
