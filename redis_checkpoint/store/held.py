"""What a store's process holds of Redis: the snapshots of the namespaces it searched and the
items it read last. Searches rank over the snapshots; while Redis is away they, with the writes
made since (applied to them and owed, see owed.py), are what the store answers from."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import numpy as np
from langgraph.store.base import PutOp

from redis_checkpoint.store.owed import OwedWrites
from redis_checkpoint.store.search import (
    ItemRecord,
    Namespace,
    Snapshot,
    assemble,
    empty_snapshot,
    ttl_ms,
)

__all__ = ["HeldItems"]

#: Namespaces whose snapshot a process keeps (least recently searched go first).
MAX_SNAPSHOTS: Final = 256
#: Items read by ``get`` that a process keeps for a get while Redis is away.
MAX_RECENT_ITEMS: Final = 10_000

Slot = tuple[Namespace, str]
#: An item's packed vectors as rows (a CorruptEntryError naming the item if they do not fit).
Unpack = Callable[[Namespace, str, bytes], np.ndarray[Any, np.dtype[np.float32]]]


class HeldItems:
    """Bounded and thread-safe; a snapshot that holds owed writes is never dropped."""

    def __init__(self, dims: int, owed: OwedWrites, unpack: Unpack) -> None:
        self._dims = dims
        self._owed = owed
        self._unpack = unpack
        self._snapshots: OrderedDict[Namespace, Snapshot] = OrderedDict()
        self._recent: OrderedDict[Slot, ItemRecord] = OrderedDict()
        self._lock = threading.Lock()

    # -- snapshots ------------------------------------------------------------------------------

    def snapshots(self, namespaces: list[Namespace]) -> dict[Namespace, Snapshot | None]:
        with self._lock:
            return {ns: self._snapshots.get(ns) for ns in namespaces}

    def keep(self, snapshots: dict[Namespace, Snapshot]) -> None:
        """Keep these (just searched) as the most recent."""
        with self._lock:
            for ns, snap in snapshots.items():
                self._snapshots[ns] = snap
                self._snapshots.move_to_end(ns)
            self._trim()

    def drop(self, namespaces: list[Namespace]) -> None:
        """Written to: the next search reloads them."""
        with self._lock:
            for ns in namespaces:
                self._snapshots.pop(ns, None)

    def live(self, now: float) -> dict[Namespace, Snapshot]:
        """The snapshots held that have a live item."""
        with self._lock:
            held = dict(self._snapshots)
        return {
            ns: snap
            for ns, snap in held.items()
            if any(record.expiry_ms > now for record in snap.records.values())
        }

    # -- items ----------------------------------------------------------------------------------

    def remember(self, slot: Slot, record: ItemRecord | None) -> None:
        """What a get from Redis found (None: nothing)."""
        with self._lock:
            if record is None:
                self._recent.pop(slot, None)
                return
            self._recent[slot] = record
            self._recent.move_to_end(slot)
            if len(self._recent) > MAX_RECENT_ITEMS:
                self._recent.popitem(last=False)

    def get(self, slot: Slot, now: float) -> ItemRecord | None:
        """An item as this process last knew it, if it still lives: from its namespace's
        snapshot, else (when that is missing or was made from nothing during an outage) from
        the items read last."""
        with self._lock:
            snap = self._snapshots.get(slot[0])
            record = snap.records.get(slot[1]) if snap is not None else None
            if record is None and (snap is None or not snap.complete):
                record = self._recent.get(slot)
        return record if record is not None and record.expiry_ms > now else None

    # -- writes while Redis is away -------------------------------------------------------------

    def hold(self, writes: list[PutOp], vectors: dict[Slot, bytes], now: float) -> None:
        """Apply writes to the snapshots (their version b"": once Redis answers, the next
        search reloads them) and owe them to Redis."""
        by_namespace: dict[Namespace, list[PutOp]] = {}
        for op in writes:
            by_namespace.setdefault(op.namespace, []).append(op)
        with self._lock:
            for ns, ops in by_namespace.items():
                held = self._snapshots.get(ns)
                snap = held or empty_snapshot()
                records = dict(snap.records)
                counts = np.bincount(snap.owners, minlength=len(snap.keys))
                rows = np.split(snap.matrix, np.cumsum(counts)[:-1]) if len(snap.keys) else []
                blocks = dict(zip(snap.keys, rows, strict=True))
                place = max((r.place for r in records.values()), default=0.0)
                for op in ops:
                    self._recent.pop((ns, op.key), None)
                    packed = vectors.get((ns, op.key), b"")
                    blocks.pop(op.key, None)
                    if op.value is None:
                        records.pop(op.key, None)
                        continue
                    old = records.get(op.key)
                    ttl = ttl_ms(op)
                    place += 1
                    records[op.key] = ItemRecord(
                        dict(op.value),
                        old.created_ms if old else now,
                        now,
                        old.place if old else place,
                        ttl,
                        now + ttl if ttl else math.inf,
                    )
                    if packed:
                        blocks[op.key] = self._unpack(ns, op.key, packed)
                changed = assemble(b"", records, blocks, self._dims)
                changed.complete = held is not None and held.complete
                self._snapshots[ns] = changed
                self._snapshots.move_to_end(ns)
        self._owed.owe([(op, vectors.get((op.namespace, op.key), b"")) for op in writes])
        with self._lock:
            self._trim()

    def _trim(self) -> None:
        """Bound the snapshots, never dropping one that holds owed writes (under the lock)."""
        owing = self._owed.namespaces()
        for ns in list(self._snapshots):
            if len(self._snapshots) <= MAX_SNAPSHOTS:
                return
            if ns not in owing:
                del self._snapshots[ns]
