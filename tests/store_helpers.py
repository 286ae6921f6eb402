"""Helpers for the store tests: a deterministic embedding, one face over the sync and async
stores, and InMemoryStore as the reference, with our store's differences by design modelled.

The differences: without a query, search orders by namespace (sorted tuples) and then by first
insertion, where InMemoryStore orders namespaces by first use; a comparison operator ($gt $gte
$lt $lte) on a missing or non-numeric value is no match, where InMemoryStore raises; namespaces
with no items are not listed (InMemoryStore lists one it has ever seen, even after a get); and a
put replaces an item's vectors (InMemoryStore keeps those of earlier puts that this one does
not overwrite: see ``STALE_VECTORS``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import langgraph.store.memory as memory_store
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from langchain_core.embeddings import Embeddings
from langgraph.store.base import (
    NOT_PROVIDED,
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    NotProvided,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from langgraph.store.memory import InMemoryStore

from redis_checkpoint import AsyncRedisStore, RedisStore, get_metrics
from redis_checkpoint.store import VectorSearch

DIMS = 16
#: Scores may differ this much from InMemoryStore's: our vectors are float32.
TOLERANCE = 1e-5
#: False: a put replaces all of an item's vectors, so the reference drops the old ones first.
STALE_VECTORS = False
_EVERYTHING = 10**6

Namespace = tuple[str, ...]
Row = tuple[Namespace, str, dict[str, Any]]
Checker = Callable[[Result], None]


class HashedWords(Embeddings):
    """A bag of words hashed into 16 dimensions: equal texts get equal vectors, shared words a
    higher cosine, and no text (not even "") the zero vector. Counts the texts it embeds."""

    def __init__(self) -> None:
        self.embedded = 0

    @staticmethod
    def vector(text: str) -> list[float]:
        vector = [0.05] * DIMS
        for word in text.lower().split():
            digest = hashlib.sha256(word.encode()).digest()
            vector[digest[0] % DIMS] += 1.0
            vector[digest[1] % DIMS] += 0.5
        return vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded += len(texts)
        return [self.vector(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        self.embedded += 1
        return self.vector(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)


def index_config(fields: list[str] | None = None) -> IndexConfig:
    return IndexConfig(dims=DIMS, embed=HashedWords(), fields=fields or ["text"])


def vector_searches(ranked_by: str) -> float:
    """Store vector searches so far in the default registry: ranked by the module or exact."""
    metrics = get_metrics()
    name = metrics.name("store_vector_searches_total")
    return metrics.registry.get_sample_value(name, {"ranked_by": ranked_by}) or 0.0


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


# -- the stores under test ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where the stores under test connect: one server, or a cluster given by its nodes."""

    host: str
    ports: tuple[int, ...]
    cluster: bool = False

    def sync_client(self) -> Any:
        if self.cluster:
            nodes = [
                redis.cluster.ClusterNode(self.host, port)  # type: ignore[no-untyped-call]
                for port in self.ports
            ]
            return redis.cluster.RedisCluster(startup_nodes=nodes, socket_timeout=5.0)
        return redis.Redis(host=self.host, port=self.ports[0], socket_timeout=5.0)

    def async_client(self) -> Any:
        if self.cluster:
            nodes = [redis.asyncio.cluster.ClusterNode(self.host, port) for port in self.ports]
            return redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, socket_timeout=5.0)
        return redis.asyncio.Redis(host=self.host, port=self.ports[0], socket_timeout=5.0)


@dataclass
class Face:
    """One store, sync or async, behind the same awaitable methods; ``raw`` is a plain client to
    the same server for looking at the keys under ``prefix``."""

    store: BaseStore
    is_async: bool
    prefix: str
    raw: Any

    async def put(
        self,
        namespace: Namespace,
        key: str,
        value: Mapping[str, Any],
        index: Literal[False] | list[str] | None = None,
        *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
    ) -> None:
        if self.is_async:
            await self.store.aput(namespace, key, value, index, ttl=ttl)
        else:
            self.store.put(namespace, key, value, index, ttl=ttl)

    async def get(
        self, namespace: Namespace, key: str, *, refresh_ttl: bool | None = None
    ) -> Item | None:
        if self.is_async:
            return await self.store.aget(namespace, key, refresh_ttl=refresh_ttl)
        return self.store.get(namespace, key, refresh_ttl=refresh_ttl)

    async def delete(self, namespace: Namespace, key: str) -> None:
        if self.is_async:
            await self.store.adelete(namespace, key)
        else:
            self.store.delete(namespace, key)

    async def search(
        self,
        namespace_prefix: Namespace,
        *,
        query: str | None = None,
        filter: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
        refresh_ttl: bool | None = None,
    ) -> list[SearchItem]:
        options: dict[str, Any] = {
            "query": query,
            "filter": filter,
            "limit": limit,
            "offset": offset,
            "refresh_ttl": refresh_ttl,
        }
        if self.is_async:
            return await self.store.asearch(namespace_prefix, **options)
        return self.store.search(namespace_prefix, **options)

    async def list_namespaces(
        self,
        *,
        prefix: tuple[str, ...] | None = None,
        suffix: tuple[str, ...] | None = None,
        max_depth: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Namespace]:
        options: dict[str, Any] = {
            "prefix": prefix,
            "suffix": suffix,
            "max_depth": max_depth,
            "limit": limit,
            "offset": offset,
        }
        if self.is_async:
            return await self.store.alist_namespaces(**options)
        return self.store.list_namespaces(**options)

    async def batch(self, ops: Sequence[Op]) -> list[Result]:
        if self.is_async:
            return await self.store.abatch(ops)
        return self.store.batch(ops)

    async def run(self, op: Op) -> Result:
        """``op`` through the public method that makes it (not through batch)."""
        if isinstance(op, GetOp):
            return await self.get(op.namespace, op.key, refresh_ttl=op.refresh_ttl)
        if isinstance(op, SearchOp):
            return await self.search(
                op.namespace_prefix,
                query=op.query,
                filter=op.filter,
                limit=op.limit,
                offset=op.offset,
                refresh_ttl=op.refresh_ttl,
            )
        if isinstance(op, ListNamespacesOp):
            paths = {c.match_type: c.path for c in op.match_conditions or ()}
            return await self.list_namespaces(
                prefix=paths.get("prefix"),
                suffix=paths.get("suffix"),
                max_depth=op.max_depth,
                limit=op.limit,
                offset=op.offset,
            )
        if op.value is None:
            await self.delete(op.namespace, op.key)
        else:
            await self.put(op.namespace, op.key, op.value, op.index)
        return None

    def redis_keys(self) -> list[bytes]:
        """Every Redis key under this face's prefix (a hash tag may come before it)."""
        return sorted(set(self.raw.scan_iter(match=f"*{self.prefix}*", count=1000)))


class FaceMaker:
    """Makes faces of one kind (sync or async) on ``target``; ``stack`` closes their clients."""

    def __init__(self, target: Target, is_async: bool, stack: AsyncExitStack) -> None:
        self.target = target
        self.is_async = is_async
        self.stack = stack

    async def __call__(
        self,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        prefix: str | None = None,
        vector_search: VectorSearch = "auto",
    ) -> Face:
        prefix = prefix or new_prefix()
        raw = self.target.sync_client()
        self.stack.callback(raw.close)
        store: BaseStore
        if self.is_async:
            client = self.target.async_client()
            self.stack.push_async_callback(client.aclose)
            async_store = AsyncRedisStore(
                client, index=index, ttl=ttl, prefix=prefix, vector_search=vector_search
            )
            await async_store.asetup()
            await async_store.asetup()  # harmless a second time
            store = async_store
        else:
            client = self.target.sync_client()
            self.stack.callback(client.close)
            sync_store = RedisStore(
                client, index=index, ttl=ttl, prefix=prefix, vector_search=vector_search
            )
            sync_store.setup()
            sync_store.setup()
            store = sync_store
        return Face(store, self.is_async, prefix, raw)


# -- the reference --------------------------------------------------------------------------------

_in_memory_operator = memory_store._apply_operator


def _lenient_operator(value: Any, operator: str, op_value: Any) -> bool:
    try:
        return bool(_in_memory_operator(value, operator, op_value))
    except (TypeError, ValueError):
        if operator in ("$gt", "$gte", "$lt", "$lte"):
            return False  # our deliberate difference: no match instead of an exception
        raise


@contextmanager
def lenient_comparisons() -> Iterator[None]:
    """InMemoryStore with our answer to ``{"n": {"$gt": 1}}`` on a missing or text ``n``."""
    before = memory_store._apply_operator
    memory_store._apply_operator = _lenient_operator
    try:
        yield
    finally:
        memory_store._apply_operator = before


def row(item: Item) -> Row:
    return (item.namespace, item.key, item.value)


def rows(items: Sequence[Item]) -> list[Row]:
    return [row(item) for item in items]


def prune(ref: InMemoryStore) -> None:
    # A get makes InMemoryStore remember an empty namespace that list_namespaces then shows.
    for namespace in [ns for ns, items in ref._data.items() if not items]:
        del ref._data[namespace]


def apply(ref: InMemoryStore, ops: Sequence[Op]) -> None:
    """Run ``ops`` on the reference for their effect (the reads' answers come from expect)."""
    # The last put of a key wins, in the place of its first: a batch's semantics. Applied one by
    # one, since InMemoryStore's batch fails on two puts of the same text.
    puts: dict[tuple[Namespace, str], PutOp] = {}
    for op in ops:
        if isinstance(op, PutOp):
            puts[(op.namespace, op.key)] = op
    for put in puts.values():
        if not STALE_VECTORS:
            ref._vectors[put.namespace].pop(put.key, None)
        ref.batch([put])
    prune(ref)


def _by_namespace(items: Sequence[SearchItem]) -> list[SearchItem]:
    return sorted(items, key=lambda item: item.namespace)  # stable: insertion order within one


def check_timestamps(item: Item) -> None:
    for stamp in (item.created_at, item.updated_at):
        assert isinstance(stamp, datetime), item
        assert stamp.utcoffset() == timedelta(0), item
    assert item.created_at <= item.updated_at, item


def expect(ref: InMemoryStore, op: Op) -> Checker:
    """What our store must answer to ``op``, read off the reference in its current state."""
    if isinstance(op, GetOp):
        found = ref.batch([op])[0]
        prune(ref)
        want = row(found) if isinstance(found, Item) else None

        def check_get(result: Result) -> None:
            if want is None:
                assert result is None, f"expected no item, got {result!r}"
                return
            assert isinstance(result, Item), f"expected {want}, got {result!r}"
            assert row(result) == want, f"expected {want}, got {row(result)}"
            check_timestamps(result)

        return check_get
    if isinstance(op, ListNamespacesOp):
        listed = ref.batch([op])[0]

        def check_list(result: Result) -> None:
            assert result == listed, f"expected {listed}\n     got {result}"

        return check_list
    if isinstance(op, PutOp):

        def check_put(result: Result) -> None:
            assert result is None, f"a put answered {result!r}"

        return check_put
    return _expect_search(ref, op)


def _search(ref: InMemoryStore, op: SearchOp) -> list[SearchItem]:
    found = ref.batch([op])[0]
    assert isinstance(found, list), found
    return [item for item in found if isinstance(item, SearchItem)]


def _expect_search(ref: InMemoryStore, op: SearchOp) -> Checker:
    everything = _search(ref, op._replace(limit=_EVERYTHING, offset=0))
    own_answer = _search(ref, op)
    one_namespace = len({item.namespace for item in everything}) <= 1
    start, stop = op.offset, op.offset + op.limit
    if not (op.query and ref.embeddings):
        page = _by_namespace(everything)[start:stop]
        if one_namespace:  # the model is InMemoryStore's own order within one namespace
            assert rows(own_answer) == rows(page), "the harness's model of InMemoryStore"

        def check_plain(result: Result) -> None:
            assert isinstance(result, list)
            got = [item for item in result if isinstance(item, SearchItem)]
            assert len(got) == len(result), result
            assert all(item.score is None for item in got), got
            same_items = sorted(map(repr, rows(got))) == sorted(map(repr, rows(page)))
            assert rows(got) == rows(page), (
                ("the same items in another order" if same_items else "other items")
                + f" (the order: by namespace, then first insertion)\nexpected {rows(page)}"
                + f"\n     got {rows(got)}"
            )
            for item in got:
                check_timestamps(item)

        return check_plain

    scored = [item for item in everything if item.score is not None]
    scoreless = _by_namespace([item for item in everything if item.score is None])
    kept = scored[start:stop]
    # InMemoryStore tops a short page up with unscored items, counting them from the first.
    filled = scoreless[: op.limit - len(kept)] if len(kept) < op.limit else []
    truth = {(item.namespace, item.key): item for item in scored}
    if one_namespace:
        assert rows(own_answer) == rows(kept + filled), "the harness's model of InMemoryStore"

    def check_vector(result: Result) -> None:
        assert isinstance(result, list)
        got = [item for item in result if isinstance(item, SearchItem)]
        assert len(got) == len(result), result
        want = [(row(item), item.score) for item in kept + filled]
        shown = [(row(item), item.score) for item in got]
        assert len(got) == len(want), f"expected {want}\n     got {shown}"
        assert len({(item.namespace, item.key) for item in got}) == len(got), shown
        for position, (item, expected) in enumerate(zip(got[: len(kept)], kept, strict=True)):
            where = f"position {position}: expected {want}\n     got {shown}"
            assert item.score is not None and expected.score is not None, where
            assert abs(item.score - expected.score) <= TOLERANCE, where
            # A tie may be broken either way: the item must have the score it is shown with.
            same = truth.get((item.namespace, item.key))
            assert same is not None and same.score is not None, where
            assert row(item) == row(same), where
            assert abs(same.score - item.score) <= TOLERANCE, where
            check_timestamps(item)
        assert rows(got[len(kept) :]) == rows(filled), f"expected {want}\n     got {shown}"
        assert all(item.score is None for item in got[len(kept) :]), shown

    return check_vector


def matching(
    prefix: tuple[str, ...] | None = None, suffix: tuple[str, ...] | None = None
) -> tuple[MatchCondition, ...]:
    """The match conditions of ``list_namespaces(prefix=..., suffix=...)``."""
    conditions = []
    if prefix:
        conditions.append(MatchCondition(match_type="prefix", path=prefix))
    if suffix:
        conditions.append(MatchCondition(match_type="suffix", path=suffix))
    return tuple(conditions)


async def same_as_reference(face: Face, ref: InMemoryStore, *ops: Op) -> list[Result]:
    """Run ``ops`` on both stores (one op through its public method, more as one batch) and
    check every answer of ours against the reference's."""
    with lenient_comparisons():
        checks = [expect(ref, op) for op in ops]
    results = [await face.run(ops[0])] if len(ops) == 1 else await face.batch(ops)
    apply(ref, ops)
    assert len(results) == len(ops), f"{len(ops)} ops, {len(results)} results"
    for op, check, result in zip(ops, checks, results, strict=True):
        try:
            check(result)
        except AssertionError as exc:
            raise AssertionError(f"{op!r}:\n{exc}") from exc
    return results
