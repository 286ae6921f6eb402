"""What a search computes, apart from Redis: records, namespace snapshots, filters, similarity
and ranking (``InMemoryStore``'s order: the best of an item's fields, highest first, ties in
insertion order), and the matching of ``list_namespaces``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final, Literal

import numpy as np
from langgraph.store.base import (
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)

from redis_checkpoint.cache import codec

__all__ = [
    "DISTANCE_TYPES",
    "DistanceType",
    "ItemRecord",
    "Namespace",
    "Snapshot",
    "StoreIndexConfig",
    "assemble",
    "clear_of_ties",
    "decode_record",
    "empty_snapshot",
    "page_of_namespaces",
    "passing",
    "rank",
    "similarities",
    "ttl_ms",
    "when",
]

Namespace = tuple[str, ...]
#: How a query vector scores an item's vector (higher is closer), as ``PostgresStore`` says:
#: ``cosine`` similarity, ``inner_product`` (the dot product) or ``l2`` (minus the distance).
DistanceType = Literal["cosine", "l2", "inner_product"]
DISTANCE_TYPES: Final[tuple[DistanceType, ...]] = ("cosine", "l2", "inner_product")
TIE_MARGIN: Final = 1e-5
_HEADER: Final = np.dtype(">f8")  # a record's header: four big-endian doubles


class StoreIndexConfig(IndexConfig, total=False):
    """langgraph's ``IndexConfig`` and the distance a vector search ranks by (``PostgresStore``
    takes the same key): ``"cosine"`` (the default, as ``InMemoryStore``), ``"l2"`` or
    ``"inner_product"``."""

    distance_type: DistanceType


@dataclass
class ItemRecord:
    value: dict[str, Any]
    created_ms: float
    updated_ms: float
    place: float
    ttl_ms: float
    expiry_ms: float = math.inf  # in a snapshot: when it expires (a refresh moves it later)

    def item(self, namespace: Namespace, key: str) -> Item:
        return Item(
            value=self.value,
            key=key,
            namespace=namespace,
            created_at=when(self.created_ms),
            updated_at=when(self.updated_ms),
        )


@dataclass
class Snapshot:
    """One namespace as Redis held it at ``version``: items in their order of first insertion,
    and every indexed field's vector (rows of ``matrix``, owned by ``owners``)."""

    version: bytes
    keys: list[str]
    records: dict[str, ItemRecord]
    matrix: np.ndarray[Any, np.dtype[np.float32]]
    norms: np.ndarray[Any, np.dtype[np.float64]]
    owners: np.ndarray[Any, np.dtype[np.intp]]  # per row: the position of its item in keys
    #: False for one made during an outage from nothing: it holds only what was written then.
    complete: bool = True

    @property
    def soonest_expiry(self) -> float:
        return min((r.expiry_ms for r in self.records.values()), default=math.inf)


def ttl_ms(op: PutOp) -> int:
    """A put's TTL (minutes) in milliseconds; 0 for none."""
    return 0 if op.ttl is None else max(1, int(op.ttl * 60_000))


def when(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def empty_snapshot() -> Snapshot:
    empty = np.zeros((0, 1), dtype=np.float32)
    return Snapshot(b"", [], {}, empty, np.zeros(0), np.zeros(0, dtype=np.intp))


def assemble(
    version: bytes,
    records: dict[str, ItemRecord],
    blocks: dict[str, np.ndarray[Any, np.dtype[np.float32]]],
    dims: int,
) -> Snapshot:
    """A snapshot of these records (in their order of first insertion) and their items'
    vectors (one block of rows per item)."""
    keys = sorted(records, key=lambda key: records[key].place)
    owners: list[int] = []
    rows = []
    for position, key in enumerate(keys):
        block = blocks.get(key)
        if block is not None and len(block):
            owners += [position] * len(block)
            rows.append(block)
    matrix = np.vstack(rows) if rows else np.zeros((0, max(dims, 1)), dtype=np.float32)
    norms = np.linalg.norm(matrix.astype(np.float64), axis=1)
    return Snapshot(version, keys, records, matrix, norms, np.asarray(owners, dtype=np.intp))


def decode_record(raw: bytes) -> ItemRecord:
    """A stored record: its header (see scripts.py), then the msgpack of the value; a
    ValueError saying what is wrong with anything else."""
    if not isinstance(raw, bytes) or len(raw) < 32:
        raise ValueError("a record shorter than its header")
    created, updated, place, ttl = np.frombuffer(raw[:32], dtype=_HEADER).tolist()
    try:
        value = codec.loads(raw[32:])
    except Exception as exc:
        raise ValueError(f"the value does not decode ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"the value is a {type(value).__name__}, not a dict")
    return ItemRecord(value, created, updated, place, ttl)


def passing(
    snap: Snapshot, conditions: dict[str, Any] | None, now: float, wanted: int | None
) -> np.ndarray[Any, np.dtype[np.intp]]:
    """The positions of the snapshot's live items that pass the filter, in order: the first
    ``wanted`` of them, or all (None)."""
    if not conditions and snap.soonest_expiry > now:
        return np.arange(len(snap.keys) if wanted is None else min(wanted, len(snap.keys)))
    kept: list[int] = []
    for i, key in enumerate(snap.keys):
        if wanted is not None and len(kept) >= wanted:
            break
        record = snap.records[key]
        if record.expiry_ms > now and _passes(record.value, conditions):
            kept.append(i)
    return np.asarray(kept, dtype=np.intp)


def similarities(
    snap: Snapshot, query: Sequence[float], distance: DistanceType
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Per row of the snapshot's matrix, how close it is to ``query`` (higher is closer)."""
    q = np.asarray(query, dtype=np.float32)
    if distance == "l2":
        # From the differences, not from the norms: |a|^2 - 2a.q + |q|^2 cancels to noise
        # for near vectors, and the square root makes that noise large.
        diff = snap.matrix - q
        squares: np.ndarray[Any, np.dtype[np.float32]] = np.einsum("ij,ij->i", diff, diff)
        distances: np.ndarray[Any, np.dtype[np.float64]] = np.sqrt(squares.astype(np.float64))
        return -distances
    dots = (snap.matrix @ q).astype(np.float64)
    if distance == "inner_product":
        return dots
    scale = snap.norms * float(np.linalg.norm(q.astype(np.float64)))
    return np.divide(dots, scale, out=np.zeros_like(dots), where=scale > 0)


def clear_of_ties(
    snapshots: list[Snapshot],
    chosen: list[np.ndarray[Any, np.dtype[np.intp]]],
    query: Sequence[float],
    distance: DistanceType,
    needed: int,
) -> bool:
    """Whether ``needed`` of the chosen items score clearly above the weakest vector these
    snapshots hold. They hold the nearest vectors a KNN returned: any vector it left out scores
    no higher than that weakest one, so it cannot tie with (or beat) the page's last item."""
    weakest = math.inf
    best_of_items = []
    for snap, positions in zip(snapshots, chosen, strict=True):
        if not len(snap.owners):
            continue
        rows = similarities(snap, query, distance)
        weakest = min(weakest, float(rows.min()))
        best = np.full(len(snap.keys), -np.inf)
        np.maximum.at(best, snap.owners, rows)
        best_of_items.append(best[positions])
    scores = np.sort(np.concatenate(best_of_items))[::-1] if best_of_items else np.zeros(0)
    if len(scores) < needed or needed <= 0:
        return len(scores) >= needed
    edge = float(scores[needed - 1])
    # The module ranks in float32: a margin well above its rounding.
    return edge - weakest > TIE_MARGIN * max(1.0, abs(edge))


def rank(
    op: SearchOp,
    snapshots: list[Snapshot],
    chosen: list[np.ndarray[Any, np.dtype[np.intp]]],
    places: list[tuple[int, int]],
    query: Sequence[float],
    distance: DistanceType = "cosine",
) -> list[tuple[float | None, tuple[int, int]]]:
    """The best of an item's fields, highest first (ties in place order); then offset and
    limit; items with no vector fill up to ``limit`` after them, as ``InMemoryStore`` does."""
    per_namespace = []
    for snap, positions in zip(snapshots, chosen, strict=True):
        best = np.full(len(snap.keys), -np.inf)
        if len(snap.owners):
            np.maximum.at(best, snap.owners, similarities(snap, query, distance))
        per_namespace.append(best[positions])
    scores = np.concatenate(per_namespace) if per_namespace else np.zeros(0)
    has_vector = scores > -np.inf
    scored = np.flatnonzero(has_vector)
    order = scored[np.argsort(-scores[scored], kind="stable")]
    kept: list[tuple[float | None, tuple[int, int]]] = [
        (float(scores[j]), places[j]) for j in order[op.offset : op.offset + op.limit]
    ]
    if len(kept) < op.limit:
        scoreless = np.flatnonzero(~has_vector)[: op.limit - len(kept)]
        kept += [(None, places[j]) for j in scoreless]
    return kept


def page_of_namespaces(op: ListNamespacesOp, namespaces: Iterable[Namespace]) -> list[Namespace]:
    """``list_namespaces``: the namespaces that match every condition, cut at ``max_depth``,
    sorted, then offset and limit (as ``InMemoryStore``)."""
    conditions = op.match_conditions or ()
    kept = [ns for ns in namespaces if all(_matches(c, ns) for c in conditions)]
    ordered = sorted({ns[: op.max_depth] for ns in kept} if op.max_depth is not None else kept)
    return ordered[op.offset : op.offset + op.limit]


def _matches(condition: MatchCondition, namespace: Namespace) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise ValueError(f"Unsupported match type: {condition.match_type}")
    return all(wanted == "*" or label == wanted for label, wanted in pairs)


_COMPARISONS: Final = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _passes(value: dict[str, Any], conditions: dict[str, Any] | None) -> bool:
    return not conditions or all(_compare(value.get(k), v) for k, v in conditions.items())


def _compare(found: Any, wanted: Any) -> bool:
    """``InMemoryStore``'s matching (equality, nested dicts and lists, ``$`` operators), except
    that an order comparison with a missing or non-numeric value is False, not an error."""
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_operator(found, op, operand) for op, operand in wanted.items())
        return isinstance(found, dict) and all(_compare(found.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, (list, tuple)):
        return (
            isinstance(found, (list, tuple))
            and len(found) == len(wanted)
            and all(_compare(f, w) for f, w in zip(found, wanted, strict=True))
        )
    return bool(found == wanted)


def _operator(found: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return bool(found == operand)
    if operator == "$ne":
        return bool(found != operand)
    compare = _COMPARISONS.get(operator)
    if compare is None:
        raise ValueError(f"Unsupported operator: {operator}")
    try:
        return bool(compare(float(found), float(operand)))
    except (TypeError, ValueError):
        return False
