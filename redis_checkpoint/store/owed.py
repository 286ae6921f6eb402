"""The store's writes made while Redis was away, owed to it until written back.

The last write of each item is kept, in the order of writing. With a journal directory each one
is also appended to the saver's crash-safe journal (checkpoint/journal.py: one segment per
process, ``fdatasync`` before the call returns, adopted by the next store opened on the directory
when this process dies): a namespace is a journal unit (its tag), each item a field whose body
is the msgpack of the write (no pickle).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from langgraph.store.base import PutOp

from redis_checkpoint.cache import codec
from redis_checkpoint.checkpoint.journal import Delta, Journal
from redis_checkpoint.store.layout import StoreLayout
from redis_checkpoint.store.search import Namespace

__all__ = ["OwedWrite", "OwedWrites"]

log = logging.getLogger("redis_checkpoint.store")
#: A put (``value`` None: a delete) and its item's packed vectors (b"": none).
OwedWrite = tuple[PutOp, bytes]


class OwedWrites:
    """The owed writes of one store (thread-safe), and their journal when it has one."""

    def __init__(self, layout: StoreLayout, journal: Journal | None = None) -> None:
        self._layout = layout
        self.journal = journal
        self._writes: OrderedDict[tuple[Namespace, str], OwedWrite] = OrderedDict()
        self._lock = threading.Lock()
        self.unreadable = 0  # adopted writes that did not decode

    def __len__(self) -> int:
        return len(self._writes)

    def namespaces(self) -> set[Namespace]:
        with self._lock:
            return {namespace for namespace, _ in self._writes}

    def pending(self) -> list[OwedWrite]:
        with self._lock:
            return list(self._writes.values())

    def owe(self, writes: list[OwedWrite]) -> None:
        """Keep these writes (journaled and on disk before this returns, with a journal;
        FallbackJournalError when the disk refuses them)."""
        deltas: dict[Namespace, Delta] = {}
        with self._lock:
            for write in writes:
                op = write[0]
                slot = (op.namespace, op.key)
                self._writes[slot] = write
                self._writes.move_to_end(slot)
                if self.journal is not None:
                    delta = deltas.setdefault(op.namespace, Delta())
                    delta.set(op.key.encode(), _encode(write))
            for namespace, delta in deltas.items():
                assert self.journal is not None
                self.journal.append(self._layout.tag(namespace), delta, sync=False)
        if self.journal is not None:
            self.journal.sync()

    def settle(self, written: list[OwedWrite]) -> None:
        """These writes are in Redis: forget each unless written again since, and tell the
        journal which namespaces owe nothing more."""
        with self._lock:
            for write in written:
                slot = (write[0].namespace, write[0].key)
                if self._writes.get(slot) == write:
                    del self._writes[slot]
            if self.journal is None:
                return
            if not self._writes:
                self.journal.reset()
                return
            owing = {namespace for namespace, _ in self._writes}
            done = {w[0].namespace for w in written} - owing
            self.journal.written_back(self._layout.tag(namespace) for namespace in done)

    def adopt(self) -> int:
        """Take on what the journals of processes that died during an outage owe; returns how
        many writes."""
        if self.journal is None:
            return 0
        adopted = []
        for tag, delta in self.journal.adopt().items():
            namespace = self._layout.namespace(tag)
            for key, body in delta.fields.items():
                try:
                    adopted.append(_decode(namespace, key.decode(), body))
                except Exception:  # a journal of another version, or damaged: never a crash
                    log.exception("an adopted store write of %s does not decode", namespace)
                    self.unreadable += 1
        with self._lock:
            for write in adopted:
                slot = (write[0].namespace, write[0].key)
                self._writes.setdefault(slot, write)
        return len(adopted)

    def close(self) -> None:
        """Release the journal: removed if nothing is owed, else kept for the next store."""
        if self.journal is not None:
            self.journal.close()


def _encode(write: OwedWrite) -> bytes:
    op, packed = write
    body: dict[str, Any] = {"value": op.value, "index": op.index, "ttl": op.ttl, "vectors": packed}
    return codec.dumps(body)


def _decode(namespace: Namespace, key: str, body: bytes) -> OwedWrite:
    fields = codec.loads(body)
    index = fields["index"]
    op = PutOp(namespace, key, fields["value"], list(index) if index else index, fields["ttl"])
    return op, bytes(fields["vectors"])
