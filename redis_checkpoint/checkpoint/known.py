"""What this process knows Redis already holds, so that a write sends less and a read fetches less.

The core (``core.py``) plans each operation; :class:`KnownState` remembers, per thread, what the
earlier operations of this process stored or read: the last version of each list channel (the
next version stores only its new items), the list-channel writes sent per checkpoint (a list blob
refers to them instead of storing the items again), the inline bytes and record of the last
checkpoint (its child reuses them and is compressed against it), when the thread was last
registered and under which runs it was indexed. Every cache is bounded (least recently used
entries dropped first) and shared by every thread using one saver, under one lock. Forgetting
is always safe: the scripts check what a write builds on, and the core resends it whole when
Redis lacks it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from redis_checkpoint.checkpoint import codec
from redis_checkpoint.checkpoint.keys import writes_field

K = TypeVar("K")
V = TypeVar("V")
TK = TypeVar("TK", bound=tuple[Any, ...])  # a key that starts with the thread id
# Writes and lists are matched to the next checkpoint's put, which follows within moments: the
# last ~1000 checkpoints' worth (a few MB at most) covers hundreds of concurrent conversations.
_RECENT_CHECKPOINTS = 1024
# A thread's runs whose index entries this process keeps alive as the thread is written.
_RUNS_PER_THREAD = 16

#: (thread, escaped namespace): the caches kept per namespace of a thread.
ThreadNs = tuple[str, bytes]
#: (thread, escaped namespace, escaped checkpoint id): the caches kept per checkpoint.
CheckpointKey = tuple[str, bytes, bytes]


@dataclass
class StoredList:
    """A list channel's version as stored: its blob field and all its items."""

    field: bytes
    items: list[bytes]


class _SentList(NamedTuple):
    """A list blob with items a put stored because the writes adding them were not known yet."""

    channel: str
    field: bytes
    digest: bytes  # of the blob as stored: a later rewrite replaces exactly that
    base: bytes
    start: int
    items: list[bytes]  # the new items


class _SentWrite(NamedTuple):
    """A write this process sent, as a list blob of the next checkpoint may refer to it."""

    sort_key: tuple[str, str, int]
    frame: bytes
    position: int  # in the frame
    channel: str
    payload: bytes  # its msgpack value

    def adds(self, new: list[bytes]) -> bool:
        """Whether the items a reader takes from this write (codec.write_items) are ``new``,
        compared as bytes: the write is the list of them, or the one item and not a list."""
        if self.payload == codec.msgpack_list(new):
            return True
        return len(new) == 1 and self.payload == new[0] and not codec.is_array(self.payload)

    def ref(self) -> tuple[bytes, int]:
        return codec.short_digest(self.frame), self.position


class _ThreadKeyed(OrderedDict[TK, V]):
    """A cache bounded to ``limit`` entries (least recently used dropped first) whose keys
    start with the thread id, each thread's keys indexed: forgetting a thread (on every eviction
    from the memory tier) then costs its own entries, not a pass over the whole cache."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.of_thread: dict[str, set[TK]] = {}

    def put(self, key: TK, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        self.of_thread.setdefault(key[0], set()).add(key)
        while len(self) > self.limit:
            dropped, _ = self.popitem(last=False)
            keys = self.of_thread[dropped[0]]
            keys.discard(dropped)
            if not keys:
                del self.of_thread[dropped[0]]

    def forget(self, thread_id: str) -> None:
        for key in self.of_thread.pop(thread_id, ()):
            self.pop(key, None)


class KnownState:
    """The bounded caches of what Redis holds, as this process wrote or read it (see above)."""

    def __init__(self, ttl_ms: int = 0, limit: int = 4096) -> None:
        self.ttl_ms = ttl_ms
        self.limit = limit
        # The last list version this process wrote or read, per (thread, namespace) and channel:
        # the next version stores only its new items, and reads fetch only what is newer.
        self._lists: _ThreadKeyed[ThreadNs, dict[str, StoredList]] = _ThreadKeyed(limit)
        # The list-channel writes this process sent per checkpoint: the next checkpoint's list
        # blob refers to them instead of storing the same items again.
        self._sent_writes: _ThreadKeyed[CheckpointKey, list[_SentWrite]] = _ThreadKeyed(
            _RECENT_CHECKPOINTS
        )
        # The (version token, inline bytes) of each channel in the last checkpoint this process
        # stored per (thread, namespace); inline b"" for a blob.
        self._inline: _ThreadKeyed[ThreadNs, dict[bytes, tuple[bytes, bytes]]] = _ThreadKeyed(limit)
        # The list blobs with items that puts stored per parent checkpoint: when the parent's
        # writes arrive later, they turn such a blob into a reference.
        self._sent_lists: _ThreadKeyed[CheckpointKey, list[_SentList]] = _ThreadKeyed(
            _RECENT_CHECKPOINTS
        )
        # The last record this process stored per (thread, namespace): (its member, Keyframe(its
        # own depth, its keyframe's member and payload)), what its child may be compressed against.
        self._last_record: _ThreadKeyed[ThreadNs, tuple[bytes, codec.Keyframe]] = _ThreadKeyed(
            limit
        )
        # Registry expiry (ms) this process last wrote per thread; see registration().
        self._registered: OrderedDict[str, float] = OrderedDict()
        # Per thread, the runs whose index entry this process wrote, with its expiry (ms).
        self._runs: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    # -- the thread registry -------------------------------------------------------------------

    def registration(self, thread_id: str, force: bool = False) -> float | None:
        """The registry score to write for the thread (when its keys expire, ms; +inf: never),
        or None when this process registered it lately enough.

        ``ZADD GT`` only raises a score, so a thread pinned elsewhere (score +inf) stays
        visible. A write that finds its thread gone (deleted or expired, perhaps by another
        process) registers it again with ``force``.
        """
        now = time.time() * 1000
        with self._lock:
            known = None if force else self._registered.get(thread_id)
            if self.ttl_ms <= 0:
                if known is not None:
                    return None
                score: float = float("inf")
            else:
                if known is not None and known >= now + self.ttl_ms:
                    return None
                score = now + self.ttl_ms * 1.25
            _bounded_put(self._registered, thread_id, score, self.limit)
        return score

    def runs_due(self, thread_id: str, run_id: str, force: bool = False) -> list[tuple[str, float]]:
        """The run index entries (run, expiry ms) a write of ``run_id`` on the thread sends:
        its own when new or due (on registration()'s terms), and then the thread's other runs
        this process indexed that are due too, so that their entries live as long as the
        thread does while this process writes it."""
        now = time.time() * 1000
        with self._lock:
            runs = self._runs.get(thread_id)
            if runs is None:
                runs = {}
                _bounded_put(self._runs, thread_id, runs, self.limit)
            known = None if force else runs.get(run_id)
            if known is not None and (self.ttl_ms <= 0 or known >= now + self.ttl_ms):
                return []
            if self.ttl_ms <= 0:
                score, due = float("inf"), []
            else:
                score = now + self.ttl_ms * 1.25
                due = [run for run, at in runs.items() if run != run_id and at < now + self.ttl_ms]
            runs.pop(run_id, None)
            runs[run_id] = score
            for run in due:
                runs[run] = score
            while len(runs) > _RUNS_PER_THREAD:
                del runs[next(iter(runs))]
        return [(run_id, score), *((run, score) for run in due)]

    def forget_runs(self, run_ids: Sequence[str]) -> None:
        """Those runs' index entries were deleted."""
        with self._lock:
            for runs in self._runs.values():
                for run_id in run_ids:
                    runs.pop(run_id, None)

    def registered(self, thread_id: str, score: float) -> None:
        """The thread's TTL was set to expire at ``score`` (set_ttl writes the registry)."""
        with self._lock:
            self._registered[thread_id] = score

    def forget_registration(self, thread_id: str) -> None:
        """The registry (or run index) update was lost: the thread's next write sends it again."""
        with self._lock:
            self._registered.pop(thread_id, None)
            self._runs.pop(thread_id, None)

    def forget_thread(self, thread_id: str) -> None:
        """Everything known of the thread (deleted, pruned, or dropped by the memory tier)."""
        self.forget_threads({thread_id})

    def forget_threads(self, thread_ids: Set[str]) -> None:
        """Everything known of these threads (each thread's own entries, found by its keys)."""
        with self._lock:
            for thread_id in thread_ids:
                self._registered.pop(thread_id, None)
                self._runs.pop(thread_id, None)
                for cache in (
                    self._lists,
                    self._sent_writes,
                    self._sent_lists,
                    self._inline,
                    self._last_record,
                ):
                    cache.forget(thread_id)

    # -- list channels -------------------------------------------------------------------------

    def lists(self, thread_id: str, ns: bytes) -> dict[str, StoredList]:
        """The last version of each list channel of the namespace, by channel (a copy)."""
        with self._lock:
            return dict(self._lists.get((thread_id, ns), {}))

    def known_lists(self, thread_id: str, ns: bytes) -> dict[bytes, list[bytes]]:
        """The items of each list blob a read need not fetch, by blob field."""
        with self._lock:
            known = self._lists.get((thread_id, ns))
            return {stored.field: stored.items for stored in known.values()} if known else {}

    def remember_lists(self, thread_id: str, ns: bytes, lists: dict[str, StoredList]) -> None:
        if not lists:
            return
        with self._lock:
            merged = {**self._lists.get((thread_id, ns), {}), **lists}
            self._lists.put((thread_id, ns), merged)

    # A list's new items are usually what the parent checkpoint's tasks wrote. Whichever of the
    # put and the put_writes comes second stores only a reference to them (LangGraph may call
    # them in either order); each side decides and records under the lock, so one of them sees
    # the other.

    def list_blob(
        self,
        parent: CheckpointKey | None,
        channel: str,
        name: bytes,
        base: bytes,
        start: int,
        new: list[bytes],
    ) -> tuple[bytes, bytes]:
        """(blob, alternative) for a list: a reference to the parent's writes of ``new`` when
        this process sent them, with the items as the alternative the script stores if those
        writes are not in Redis yet; else the items, remembered for the writes to refer to."""
        if parent is None or not new:
            return codec.encode_list(base or None, start, new), b""
        # Deciding and remembering happen under one lock hold: a put_writes of the parent sees
        # either this list (and turns it into a reference) or is seen here.
        with self._lock:
            sent = [w for w in self._sent_writes.get(parent, ()) if w.channel == channel]
            refs = next(([w.ref()] for w in sent if w.adds(new)), None)
            if refs is None and 1 < len(sent) < 256:
                # Parallel tasks: each task's items, in the order LangGraph applies them.
                sent.sort(key=lambda w: w.sort_key)
                parts = [codec.write_items((codec.MSGPACK, w.payload)) or [] for w in sent]
                if [item for part in parts for item in part] == new:
                    refs = [w.ref() for w in sent]
            if refs is None:
                items_blob = codec.encode_list(base or None, start, new)
                stored = _SentList(channel, name, codec.short_digest(items_blob), base, start, new)
                merged = [*self._sent_lists.get(parent, ()), stored]
                self._sent_lists.put(parent, merged)
                return items_blob, b""
        # The items go along uncompressed: the script stores them only if the writes are not
        # in Redis yet.
        field_name = writes_field(parent[1], parent[2])
        reference = codec.encode_list_ref(base or None, start, field_name, refs)
        return reference, codec.encode_list(base or None, start, new, compress=False)

    def note_writes(
        self,
        key: CheckpointKey,
        task_id: str,
        task_path: str,
        frame: bytes,
        writes: list[tuple[int, str, tuple[str, bytes]]],
    ) -> list[bytes]:
        """Remember the list writes of a frame; returns (blob field, digest, R blob) for each
        list a put already stored with these items: the script swaps in the reference if the
        blob is still what was stored."""
        sent = [
            _SentWrite((task_path, task_id, idx), frame, i, channel, typed[1])
            for i, (idx, channel, typed) in enumerate(writes)
            if typed[0] == codec.MSGPACK
        ]
        if not sent:
            return []
        out: list[bytes] = []
        with self._lock:
            merged = [*self._sent_writes.get(key, ()), *sent]
            self._sent_writes.put(key, merged)
            for entry in self._sent_lists.get(key, ()):
                write = next(
                    (w for w in sent if w.channel == entry.channel and w.adds(entry.items)), None
                )
                if write is not None:
                    field_name = writes_field(key[1], key[2])
                    ref = [write.ref()]
                    blob = codec.encode_list_ref(entry.base or None, entry.start, field_name, ref)
                    out += [entry.field, entry.digest, blob]
        return out

    # -- the last checkpoint stored ------------------------------------------------------------

    def inline(self, thread_id: str, ns: bytes) -> dict[bytes, tuple[bytes, bytes]]:
        """(version token, inline bytes) by escaped channel, of the last checkpoint stored."""
        with self._lock:
            return self._inline.get((thread_id, ns), {})

    def last_record(self, thread_id: str, ns: bytes) -> tuple[bytes, codec.Keyframe] | None:
        """(member, keyframe) of the last record stored on the thread's namespace."""
        with self._lock:
            return self._last_record.get((thread_id, ns))

    def stored(
        self,
        thread_id: str,
        ns: bytes,
        inline: dict[bytes, tuple[bytes, bytes]],
        member: bytes,
        last: codec.Keyframe,
    ) -> None:
        """A put stored this checkpoint: its child reuses the inline bytes and the record."""
        with self._lock:
            self._inline.put((thread_id, ns), inline)
            self._last_record.put((thread_id, ns), (member, last))


def _bounded_put(cache: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """Set ``key`` as the most recent entry, dropping the least recent past ``limit``."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
