"""The store's one core: every ``BaseStore`` operation as a plan of ``steps.py`` steps.

A batch runs as one plan (:meth:`StoreCore.batch`): reads first (they see the state before the
batch's puts, as ``InMemoryStore``), then the embeddings of the new texts, then the puts, one
script per namespace, all in one round trip. It yields :class:`Send` and :class:`LoadScripts`
for Redis and :class:`Invoke` for the embeddings (``embed_documents``/``embed_query``: the async
driver calls the embeddings' async twins), so ``RedisStore`` and ``AsyncRedisStore`` share it.

Search is exact: the process keeps a *snapshot* of each namespace it searched (decoded items and
their vectors as one float32 matrix) with the namespace's version. A search asks Redis for the
versions of the namespaces under its prefix (one round trip), reloads only those that changed,
and then filters and scores in numpy: the same top-k as brute force, without a search module.
Where the server has one (found at ``setup``; see knn.py), a vector search asks it for the
nearest vectors instead and ranks just their items the same way.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Generator, Iterable
from typing import Any, Final, Literal, cast, get_args

import numpy as np
from langgraph.store.base import (
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from langgraph.store.base.embed import ensure_embeddings, get_text_at_path, tokenize_path
from redis.exceptions import ResponseError

from redis_checkpoint.breaker import CircuitBreaker
from redis_checkpoint.cache import codec
from redis_checkpoint.checkpoint.journal import Journal
from redis_checkpoint.client import reply_text
from redis_checkpoint.errors import ConfigurationError, CorruptEntryError
from redis_checkpoint.failures import is_unavailable_error
from redis_checkpoint.metrics import Metrics, get_metrics
from redis_checkpoint.steps import Invoke, LoadScripts, Send, send_with_scripts
from redis_checkpoint.store.held import HeldItems
from redis_checkpoint.store.knn import KnnIndex, has_no_search_module
from redis_checkpoint.store.layout import StoreLayout
from redis_checkpoint.store.owed import OwedWrites
from redis_checkpoint.store.scripts import (
    GET_ITEMS,
    INDEX_VECTORS,
    PUT_ITEMS,
    REGISTER,
    SNAPSHOT,
    STORE_SCRIPTS,
)
from redis_checkpoint.store.search import (
    DISTANCE_TYPES,
    ItemRecord,
    Namespace,
    Snapshot,
    StoreIndexConfig,
    assemble,
    clear_of_ties,
    decode_record,
    empty_snapshot,
    page_of_namespaces,
    passing,
    rank,
    ttl_ms,
    when,
)

__all__ = ["StoreCore", "StorePlan", "VectorSearch"]

StorePlan = Generator[Send | LoadScripts | Invoke, Any, Any]
#: The module's KNN asks for the page and this many more vectors; then four times as many,
#: up to KNN_MAX, while a filter or a tie at the edge leaves too few.
KNN_SLACK: Final = 10
KNN_MAX: Final = 4096
VectorSearch = Literal["auto", "exact", "module"]
STORE_COMPONENT: Final = "store"  # its label in the fallback metrics
log = logging.getLogger("redis_checkpoint.store")


class StoreCore:
    """The plans of a store; holds no connection. Thread-safe."""

    def __init__(
        self,
        *,
        index: IndexConfig | StoreIndexConfig | None = None,
        ttl: TTLConfig | None = None,
        prefix: str = "rc",
        clock: Any = time.time,
        metrics: Metrics | None = None,
        fallback: bool = True,
        breaker: CircuitBreaker | None = None,
        vector_search: VectorSearch = "auto",
        fallback_journal: str | os.PathLike[str] | None = None,
    ) -> None:
        self.layout = StoreLayout(prefix)
        self.metrics = metrics or get_metrics()
        #: While Redis is away: answer from the snapshots and keep the writes owed to it.
        self.fallback = fallback
        self.breaker = breaker or CircuitBreaker()
        self.distance = cast(StoreIndexConfig, index or {}).get("distance_type", "cosine")
        if self.distance not in DISTANCE_TYPES:
            raise ValueError(f"distance_type is one of {DISTANCE_TYPES}, not {self.distance!r}")
        if vector_search not in get_args(VectorSearch):
            raise ValueError(f"vector_search is one of {get_args(VectorSearch)}")
        # The puts and deletes, and their packed vectors, to write back in order.
        journal = None
        if fallback_journal is not None:
            if not fallback:
                raise ConfigurationError("fallback_journal needs fallback=True (it journals it)")
            journal = Journal(fallback_journal, f"{prefix}:st")
        self._owed = OwedWrites(self.layout, journal)
        self._owed.adopt()
        for _ in range(self._owed.unreadable):
            self.metrics.error(STORE_COMPONENT, "corrupt")
        self.index = index
        self.ttl = ttl
        self.embeddings = ensure_embeddings(index.get("embed")) if index else None
        self.dims = int(index["dims"]) if index else 0
        self.vector_search = vector_search
        #: The search module's index, when setup() found one: KNN on the server.
        self.knn: KnnIndex | None = None
        paths = (index.get("fields") or ["$"]) if index else []
        # "$" is the whole value (get_text_at_path takes it as it is), as in InMemoryStore.
        self.fields = [(path, tokenize_path(path) if path != "$" else path) for path in paths]
        self._clock = clock
        self.held = HeldItems(self.dims, self._owed, self._vectors)

    # -- Redis ---------------------------------------------------------------------------------

    def _send(self, *commands: tuple[Any, ...]) -> Generator[Any, Any, list[Any]]:
        try:
            replies: list[Any] = yield from send_with_scripts(commands, STORE_SCRIPTS)
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            # Something else wrote a key of another type where the store keeps a namespace.
            keys = [k for command in commands for k in _keys_of(command)]
            detail = f"a key of another type than the store writes (WRONGTYPE) among {keys}"
            raise CorruptEntryError(keys[0] if keys else "?", detail) from None
        return replies

    def _register(self, now: int, *entries: tuple[Namespace, float | None]) -> tuple[Any, ...]:
        """The REGISTER call for namespaces and the latest expiry of their items (None: the
        namespace is empty)."""
        args: list[Any] = []
        for namespace, expiry in entries:
            score = "" if expiry is None else "+inf" if math.isinf(expiry) else int(expiry)
            args += [self.layout.tag(namespace), score]
        return ("EVALSHA", REGISTER.sha, 1, self.layout.registry, now, *args)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _script(self, script: Any, namespace: Namespace, *args: Any) -> tuple[Any, ...]:
        keys = self.layout.keys(namespace).all()
        return ("EVALSHA", script.sha, len(keys), *keys, *args)

    def _docs(self, namespace: Namespace) -> tuple[str, int]:
        """The scripts' docs base and vector width: ('', 1) without a search module."""
        knn = self.knn
        return (knn.docs_base(namespace), knn.width) if knn is not None else ("", 1)

    def setup(self, clustered: bool) -> Generator[Any, Any, None]:
        """Load the scripts; find the search module (see :meth:`_find_module`); then write back
        what an adopted journal owes."""
        yield LoadScripts(STORE_SCRIPTS)
        yield from self._find_module(clustered)
        if self._owed:
            yield from self.flush()

    def _find_module(self, clustered: bool) -> Generator[Any, Any, None]:
        """With an index, look for the server's search module (unless ``"exact"``, or on a
        cluster, where a module sees one shard) and create its vector index when it is
        missing, with the vectors already stored."""
        if not self.dims or self.vector_search == "exact":
            return
        knn = KnnIndex(self.layout, self.dims, self.distance)
        if clustered:
            return self._no_module("the store does not use a search module on a cluster")
        try:
            yield from self._send(knn.info_command())
        except ResponseError as exc:
            if has_no_search_module(exc):
                return self._no_module(f"the server has no search module ({exc})")
            try:  # no such index yet
                yield from self._send(knn.create_command())
            except ResponseError as created:
                if "already exists" not in str(created).lower():  # another process made it
                    raise
            self.knn = knn
            yield from self._index_stored_vectors()
        else:
            self.knn = knn

    def _no_module(self, why: str) -> None:
        if self.vector_search == "module":
            raise ConfigurationError(f'vector_search="module", but {why}')

    def _index_stored_vectors(self) -> Generator[Any, Any, None]:
        """Give the vectors put before the index existed their hashes (one script per
        namespace), so the module finds them too."""
        now = self._now_ms()
        namespaces = yield from self._live_namespaces()
        if namespaces:
            yield from self._send(
                *(
                    self._script(INDEX_VECTORS, ns, now, *self._docs(ns), *self._tags(ns))
                    for ns in namespaces
                )
            )

    def _tags(self, namespace: Namespace) -> tuple[str, str]:
        """The namespace's tag and its prefixes' digests, as the docs hold them."""
        digests = self.knn.digests(namespace) if self.knn is not None else ""
        return self.layout.tag(namespace), digests

    # -- a batch -------------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> StorePlan:
        """The results of ``ops``: from Redis (writing back first what an outage left owed), or
        while Redis is away (and ``fallback``) from what this process holds."""
        ops = list(ops)
        if self.fallback and not self.breaker.allow_request():
            return (yield from self._batch_in_memory(ops))
        try:
            if self._owed:
                yield from self._write_back()
            results = yield from self._batch_on_redis(ops)
        except Exception as exc:
            if not (self.fallback and is_unavailable_error(exc)):
                raise
            self._failed(exc)
            return (yield from self._batch_in_memory(ops))
        self._succeeded()
        return results

    def _batch_on_redis(self, ops: list[Op]) -> StorePlan:
        results: list[Result] = [None] * len(ops)
        puts: dict[tuple[Namespace, str], PutOp] = {}
        for i, op in enumerate(ops):
            if isinstance(op, GetOp):
                results[i] = yield from self._measured(self._get(op), get=1)
            elif isinstance(op, SearchOp):
                results[i] = yield from self._measured(self._search(op), search=1)
            elif isinstance(op, ListNamespacesOp):
                results[i] = yield from self._measured(self._list_namespaces(op), list_namespaces=1)
            elif isinstance(op, PutOp):
                puts[(op.namespace, op.key)] = op
            else:
                raise ValueError(f"Unknown operation type: {type(op)}")
        if puts:
            writes = list(puts.values())
            deletes = sum(op.value is None for op in writes)
            yield from self._measured(self._put(writes), put=len(writes) - deletes, delete=deletes)
        return results

    def _measured(self, plan: Generator[Any, Any, Any], **counts: int) -> Generator[Any, Any, Any]:
        """``plan``, counted as ``counts[op]`` operations of each op with its duration: a get
        as a hit or a miss, any op as an error when the plan raised."""
        start = time.perf_counter()
        try:
            result = yield from plan
        except Exception:
            self._count(counts, "error", start)
            raise
        found = "hit" if result is not None else "miss"
        self._count(counts, found if "get" in counts else "ok", start)
        return result

    def _count(self, counts: dict[str, int], outcome: str, start: float) -> None:
        seconds = time.perf_counter() - start
        for op, n in counts.items():
            if n:
                self.metrics.store_operation(op, outcome, seconds, n)

    # -- while Redis is away -------------------------------------------------------------------

    @property
    def owed(self) -> int:
        """Writes made while Redis was away and not written back yet."""
        return len(self._owed)

    @property
    def unreadable_owed_writes(self) -> int:
        """Writes in an adopted journal that did not decode (logged, left out)."""
        return self._owed.unreadable

    def _failed(self, exc: BaseException) -> None:
        before = self.breaker.state
        self.breaker.record_failure()
        if before == "closed" and self.breaker.state == "open":
            log.warning("Redis is unavailable (%s); the store answers from memory", exc)
        self.metrics.set_fallback(STORE_COMPONENT, True, len(self._owed))

    def _succeeded(self) -> None:
        if self.breaker.state == "closed" and not self.breaker.failures:
            return
        if self.breaker.state != "closed":
            log.warning("Redis is reachable again; the store left its memory tier")
        self.breaker.record_success()
        self.metrics.set_fallback(STORE_COMPONENT, False, len(self._owed))

    def _write_back(self) -> Generator[Any, Any, None]:
        """Send what an outage left owed (the last write of each item), in one round trip."""
        owed = self._owed.pending()
        if not owed:
            return
        writes = [op for op, _ in owed]
        vectors = {(op.namespace, op.key): packed for op, packed in owed if packed}
        yield from self._put(writes, vectors)
        self._owed.settle(owed)
        self.metrics.replayed(STORE_COMPONENT, len(owed))
        log.warning("wrote back %d store writes made while Redis was away", len(owed))

    def probe(self) -> Generator[Any, Any, bool]:
        """A health check: PING whatever the breaker says. An answer closes the breaker and
        writes back what an outage left owed; Redis away counts as a failure. True when Redis
        answered."""
        try:
            yield from self._send(("PING",))
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise
            self._failed(exc)
            return False
        self._succeeded()
        yield from self.flush()
        return True

    def flush(self) -> Generator[Any, Any, int]:
        """Write back what is owed if Redis answers; returns how many writes are still owed
        (logged at ERROR: without a journal they are lost when the process ends). A pooled
        connection from before an outage fails its first command: a second try takes a new
        one."""
        failure: Exception | None = None
        for _ in range(2 if self._owed else 0):
            try:
                yield from self._write_back()
            except Exception as exc:
                if not is_unavailable_error(exc):
                    raise
                failure = exc
                continue
            self._succeeded()
            failure = None
            break
        if failure is not None:
            self._failed(failure)
        if self._owed:
            journal = self._owed.journal
            kept = f"kept in the journal at {journal.directory}" if journal else "LOST at exit"
            log.error("%d store writes are still owed to Redis (%s): %s", self.owed, kept, failure)
        return self.owed

    def close(self) -> None:
        """After the last flush: release the journal (kept only while it owes something)."""
        self._owed.close()

    def _batch_in_memory(self, ops: list[Op]) -> StorePlan:
        """``ops`` on what this process holds: the namespaces it searched (their snapshots)
        and the writes it made since; writes are owed to Redis."""
        now = self._now_ms()
        results: list[Result] = []
        puts: dict[tuple[Namespace, str], PutOp] = {}
        for op in ops:
            if isinstance(op, GetOp):
                record = self.held.get((op.namespace, op.key), now)
                results.append(record.item(op.namespace, op.key) if record else None)
            elif isinstance(op, SearchOp):
                prefix = tuple(op.namespace_prefix)
                held = self.held.live(now)
                namespaces = sorted(ns for ns in held if ns[: len(prefix)] == prefix)
                vector = yield from self._query_vector(op)
                found, _ = self._select(op, namespaces, [held[ns] for ns in namespaces], vector)
                results.append(found)
            elif isinstance(op, ListNamespacesOp):
                results.append(page_of_namespaces(op, self.held.live(now)))
            elif isinstance(op, PutOp):
                puts[(op.namespace, op.key)] = op
                results.append(None)
            else:
                raise ValueError(f"Unknown operation type: {type(op)}")
        if puts:
            writes = list(puts.values())
            self.held.hold(writes, (yield from self._embed(writes)), now)
        self.metrics.set_fallback(STORE_COMPONENT, True, len(self._owed))
        return results

    # -- reads ---------------------------------------------------------------------------------

    def _get(self, op: GetOp) -> Generator[Any, Any, Item | None]:
        refresh = "1" if op.refresh_ttl else "0"
        now = self._now_ms()
        docs = self._docs(op.namespace)
        [[raw]] = yield from self._send(
            self._script(GET_ITEMS, op.namespace, now, refresh, *docs, op.key)
        )
        slot = (op.namespace, op.key)
        if not raw:
            self.held.remember(slot, None)
            return None
        record = self._decode(op.namespace, op.key, raw)
        refreshed = op.refresh_ttl and record.ttl_ms
        if refreshed:
            yield from self._send(self._register(now, (op.namespace, now + record.ttl_ms)))
        if self.fallback:
            # It lives at least this long (a refresh by another reader may have moved it later).
            start = now if refreshed else record.updated_ms
            record.expiry_ms = start + record.ttl_ms if record.ttl_ms else math.inf
            self.held.remember(slot, record)
        return record.item(op.namespace, op.key)

    def _live_namespaces(self) -> Generator[Any, Any, dict[Namespace, bytes]]:
        """The namespaces that hold an item now (registry members whose version key exists),
        with their versions: a search reloads the snapshots whose version moved."""
        now = self._now_ms()
        [tags] = yield from self._send(("ZRANGEBYSCORE", self.layout.registry, now, "+inf"))
        namespaces = [self.layout.namespace(reply_text(tag)) for tag in tags]
        if not namespaces:
            return {}
        asked = [("GET", self.layout.keys(ns).version) for ns in namespaces]
        versions = dict(zip(namespaces, (yield from self._send(*asked)), strict=True))
        gone = [(ns, None) for ns, version in versions.items() if version is None]
        if gone:
            yield from self._send(self._register(now, *gone))
        return {ns: version for ns, version in versions.items() if version is not None}

    def _list_namespaces(self, op: ListNamespacesOp) -> Generator[Any, Any, list[Namespace]]:
        return page_of_namespaces(op, (yield from self._live_namespaces()))

    def _query_vector(self, op: SearchOp) -> Generator[Any, Any, list[float] | None]:
        """The embedding of a vector search's query; None for a search without one."""
        if not (op.query and self.embeddings is not None):
            return None
        vector: list[float] = yield Invoke("embed_query", (op.query,))
        return vector

    def _search(self, op: SearchOp) -> Generator[Any, Any, list[SearchItem]]:
        vector = yield from self._query_vector(op)
        nearest = None
        if vector is not None and self.knn is not None:
            try:
                nearest = yield from self._nearest(op, self.knn, vector)
            except ResponseError as exc:  # the index or the module went away (a failover?)
                log.warning("the search module failed (%s); the store searches exactly", exc)
        if nearest is not None:
            namespaces, snapshots = nearest
        else:
            prefix = tuple(op.namespace_prefix)
            live = yield from self._live_namespaces()
            versions = {ns: v for ns, v in live.items() if ns[: len(prefix)] == prefix}
            namespaces = sorted(versions)
            snapshots = yield from self._snapshots_of(namespaces, versions)
            yield from self._recheck_expiries(namespaces, snapshots)
        ranked_by = None if vector is None else "exact" if nearest is None else "module"
        self.metrics.store_search(sum(len(snap.keys) for snap in snapshots), ranked_by)
        found, touched = self._select(op, namespaces, snapshots, vector)
        if op.refresh_ttl:
            yield from self._refresh(touched)
        return found

    def _nearest(
        self, op: SearchOp, knn: KnnIndex, vector: list[float]
    ) -> Generator[Any, Any, tuple[list[Namespace], list[Snapshot]] | None]:
        """Snapshots of just the items whose vectors the module finds nearest, enough of them
        (after the filter, and past any tie at the edge of what it returned) for the page,
        ranked then as the exact path ranks; None when the module ran out of vectors first
        (items without one may fill the page) or the page is too deep: the exact path
        answers."""
        needed = op.offset + op.limit
        if min(op.offset, op.limit) < 0:
            return None
        packed = np.asarray(vector, dtype="<f4").tobytes()
        k = needed + KNN_SLACK
        while k <= KNN_MAX:
            [reply] = yield from self._send(
                knn.search_command(tuple(op.namespace_prefix), packed, k)
            )
            nearest: dict[Namespace, dict[str, list[bytes]]] = {}
            hits, returned = knn.parse(reply)
            for ns, key, row in hits:
                nearest.setdefault(ns, {}).setdefault(key, []).append(row)
            namespaces = sorted(nearest)
            now = self._now_ms()
            replies = yield from self._send(
                *(self._script(GET_ITEMS, ns, now, "0", "", 1, *nearest[ns]) for ns in namespaces)
            )
            snapshots = []
            for ns, raws in zip(namespaces, replies, strict=True):
                records = {
                    key: self._decode(ns, key, raw)
                    for key, raw in zip(nearest[ns], raws, strict=True)
                    if raw
                }
                rows = {key: self._vectors(ns, key, b"".join(nearest[ns][key])) for key in records}
                snapshots.append(assemble(b"", records, rows, self.dims))
            chosen = [passing(snap, op.filter, now, None) for snap in snapshots]
            if returned < k:  # every vector under the prefix is here
                return (namespaces, snapshots) if sum(map(len, chosen)) >= needed else None
            if clear_of_ties(snapshots, chosen, vector, self.distance, needed):
                return namespaces, snapshots
            k *= 4
        return None

    def _select(
        self,
        op: SearchOp,
        namespaces: list[Namespace],
        snapshots: list[Snapshot],
        vector: list[float] | None,
    ) -> tuple[list[SearchItem], list[tuple[Namespace, str, float]]]:
        """The page of items ``op`` asks for among these snapshots (ranked by closeness to
        ``vector`` if there is one), and (namespace, key, TTL) of each for a refresh."""
        now = self._now_ms()
        ranked = vector is not None
        # Per namespace, the positions of the items that pass, in their order; unranked, only
        # as many as the page needs.
        wanted = None if ranked or min(op.offset, op.limit) < 0 else op.offset + op.limit
        chosen = []
        for snap in snapshots:
            chosen.append(passing(snap, op.filter, now, wanted))
            if wanted is not None:
                wanted -= len(chosen[-1])
        places = [(n, int(i)) for n, positions in enumerate(chosen) for i in positions]
        if vector is not None:
            found = rank(op, snapshots, chosen, places, vector, self.distance)
        else:
            found = [(None, place) for place in places[op.offset : op.offset + op.limit]]
        results = []
        touched = []
        for score, (n, i) in found:
            snap = snapshots[n]
            key = snap.keys[i]
            record = snap.records[key]
            touched.append((namespaces[n], key, record.ttl_ms))
            results.append(
                SearchItem(
                    namespace=namespaces[n],
                    key=key,
                    value=record.value,
                    created_at=when(record.created_ms),
                    updated_at=when(record.updated_ms),
                    score=score,
                )
            )
        return results, touched

    def _snapshots_of(
        self, namespaces: list[Namespace], versions: dict[Namespace, bytes]
    ) -> Generator[Any, Any, list[Snapshot]]:
        """Each namespace's snapshot, reloading only those whose version moved."""
        if not namespaces:
            return []
        held = self.held.snapshots(namespaces)
        stale = [
            ns
            for ns in namespaces
            if held[ns] is None or held[ns].version != versions[ns]  # type: ignore[union-attr]
        ]
        if stale:
            now = self._now_ms()
            replies = yield from self._send(*(self._script(SNAPSHOT, ns, now) for ns in stale))
            self.metrics.store_snapshot_loads(len(stale))
            for ns, reply in zip(stale, replies, strict=True):
                held[ns] = self._load_snapshot(ns, reply)
        self.held.keep({ns: snap for ns, snap in held.items() if snap is not None})
        return [held[ns] or empty_snapshot() for ns in namespaces]

    def _recheck_expiries(
        self, namespaces: list[Namespace], snapshots: list[Snapshot]
    ) -> Generator[Any, Any, None]:
        """Items a snapshot holds as expired may have been read with a refresh since (which
        leaves the version alone): ask Redis for their expiry now."""
        now = self._now_ms()
        due = [
            (ns, snap, [k for k in snap.keys if snap.records[k].expiry_ms <= now])
            for ns, snap in zip(namespaces, snapshots, strict=True)
        ]
        due = [entry for entry in due if entry[2]]
        if not due:
            return
        replies = yield from self._send(
            *(("ZMSCORE", self.layout.keys(ns).expiries, *keys) for ns, _, keys in due)
        )
        for (_, snap, keys), scores in zip(due, replies, strict=True):
            for key, score in zip(keys, scores, strict=True):
                snap.records[key].expiry_ms = -math.inf if score is None else float(score)

    def _load_snapshot(self, namespace: Namespace, reply: Any) -> Snapshot:
        version, flat_records, flat_vectors, flat_expiries = reply
        records = {
            reply_text(flat_records[i]): self._decode(
                namespace, reply_text(flat_records[i]), flat_records[i + 1]
            )
            for i in range(0, len(flat_records), 2)
        }
        for i in range(0, len(flat_expiries), 2):
            record = records.get(reply_text(flat_expiries[i]))
            if record is not None:
                record.expiry_ms = float(flat_expiries[i + 1])
        blocks = {}
        for i in range(0, len(flat_vectors), 2):
            key = reply_text(flat_vectors[i])
            if key in records and self.dims:
                blocks[key] = self._vectors(namespace, key, flat_vectors[i + 1])
        return assemble(version or b"", records, blocks, self.dims)

    def _vectors(
        self, namespace: Namespace, key: str, packed: bytes
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """An item's field vectors, one row each, from their packed float32s."""
        flat = np.frombuffer(packed, dtype="<f4")
        if flat.size % self.dims:
            where = f"{self.layout.keys(namespace).vectors} field {key!r}"
            raise CorruptEntryError(where, f"{flat.size} floats for {self.dims} dims")
        return flat.reshape(-1, self.dims)

    def _decode(self, namespace: Namespace, key: str, raw: bytes) -> ItemRecord:
        try:
            return decode_record(raw)
        except ValueError as exc:
            where = f"{self.layout.keys(namespace).items} field {key!r}"
            raise CorruptEntryError(where, str(exc)) from None

    # -- TTL -----------------------------------------------------------------------------------

    def _refresh(self, found: list[tuple[Namespace, str, float]]) -> Generator[Any, Any, None]:
        """Give the found items with a TTL (namespace, key, TTL in ms) their TTL again from
        now, and keep their namespaces listed as long as they live."""
        now = self._now_ms()
        by_namespace: dict[Namespace, list[str]] = {}
        latest: dict[Namespace, float] = {}
        for namespace, key, ttl in found:
            if ttl:
                by_namespace.setdefault(namespace, []).append(key)
                latest[namespace] = max(latest.get(namespace, 0.0), now + ttl)
        if not by_namespace:
            return
        commands = [
            self._script(GET_ITEMS, ns, now, "1", *self._docs(ns), *keys)
            for ns, keys in by_namespace.items()
        ]
        yield from self._send(*commands, self._register(now, *latest.items()))

    # -- writes --------------------------------------------------------------------------------

    def _put(
        self, puts: list[PutOp], vectors: dict[tuple[Namespace, str], bytes] | None = None
    ) -> Generator[Any, Any, None]:
        """Write ``puts`` (embedding their texts unless ``vectors`` are given)."""
        if vectors is None:
            vectors = yield from self._embed(puts)
        now = self._now_ms()
        by_namespace: dict[Namespace, list[Any]] = {}
        latest: dict[Namespace, float] = {}
        counts: dict[Namespace, int] = {}
        for op in puts:
            args = by_namespace.setdefault(op.namespace, [])
            counts[op.namespace] = counts.get(op.namespace, 0) + 1
            if op.value is None:
                args += [op.key, "d"]
                continue
            body = codec.dumps(dict(op.value))
            ttl = ttl_ms(op)
            packed = vectors.get((op.namespace, op.key), b"")
            args += [op.key, "p", body, packed, ttl]
            expiry = math.inf if not ttl else now + ttl
            latest[op.namespace] = max(latest.get(op.namespace, -math.inf), expiry)
        namespaces = list(by_namespace)
        commands = [
            self._script(
                PUT_ITEMS, ns, now, counts[ns], *self._docs(ns), *self._tags(ns), *by_namespace[ns]
            )
            for ns in namespaces
        ]
        if latest:
            commands.append(self._register(now, *latest.items()))
        replies = yield from self._send(*commands)
        written = replies[: len(namespaces)]
        emptied = [
            (ns, None) for ns, (_, left) in zip(namespaces, written, strict=True) if not left
        ]
        if emptied:
            yield from self._send(self._register(now, *emptied))
        self.held.drop(namespaces)

    def _embed(self, puts: list[PutOp]) -> Generator[Any, Any, dict[tuple[Namespace, str], bytes]]:
        """Each indexed item's field vectors, packed: one embedding per distinct text."""
        if self.embeddings is None:
            return {}
        wanted: dict[tuple[Namespace, str], list[str]] = {}
        for op in puts:
            if op.value is None or op.index is False:
                continue
            paths = self.fields if op.index is None else [(p, tokenize_path(p)) for p in op.index]
            texts = [text for _, tokens in paths for text in get_text_at_path(op.value, tokens)]
            if texts:
                wanted[(op.namespace, op.key)] = texts
        distinct = list(dict.fromkeys(text for texts in wanted.values() for text in texts))
        if not distinct:
            return {}
        embedded = yield Invoke("embed_documents", (distinct,))
        if len(embedded) != len(distinct):
            raise ValueError(f"{len(embedded)} embeddings for {len(distinct)} texts")
        by_text = dict(zip(distinct, embedded, strict=True))
        return {
            slot: np.asarray([by_text[t] for t in texts], dtype="<f4").tobytes()
            for slot, texts in wanted.items()
        }


def _keys_of(command: tuple[Any, ...]) -> list[str]:
    """The keys an EVALSHA command names (none for other commands)."""
    if command[0] != "EVALSHA":
        return []
    return [str(key) for key in command[3 : 3 + int(command[2])]]
