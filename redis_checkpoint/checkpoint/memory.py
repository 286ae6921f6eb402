"""The in-memory tier: the saver's scripts run in Python on a bounded copy of recent threads.

While Redis is healthy the tier mirrors what this process writes and reads, thread by thread
(least recently used threads are dropped past a byte budget). While Redis is away, the same Calls
run here instead, so a conversation goes on from where it was; threads changed meanwhile are
*owed* to Redis and are never dropped until they are written back, one thread at a time
(:meth:`ThreadMemoryTier.take` hands one out, :meth:`ThreadMemoryTier.written_back` reports the
outcome). With a journal, every change an outage write makes is appended to it, and fsynced
before the write is acknowledged (by the router's :class:`~redis_checkpoint.steps.SyncJournal`),
so a process killed meanwhile loses nothing: the next one adopts what it owed. What the tier holds
owed (or unconfirmed) is kept under ``max_owed_bytes``: an outage write that would go over it is
refused, so a long outage ends in back-pressure instead of the OOM killer.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis_checkpoint.checkpoint import codec
from redis_checkpoint.checkpoint.journal import Delta, Journal
from redis_checkpoint.checkpoint.keys import SEP
from redis_checkpoint.checkpoint.thread import (
    BYTES_OVERHEAD,
    GARBAGE_BATCH,
    HISTORY_LIMIT,
    THREAD_ID,
    THREAD_TTL,
    ThreadState,
    namespace_head,
)
from redis_checkpoint.errors import RedisUnavailableError
from redis_checkpoint.steps import Call, Command

_BACKLOG_LIMIT = 64
# A list's or tuple's header, a number object, and a mirrored Call's objects (its Commands, their
# key tuples, the backlog entry): counted so that the budget holds in real memory.
_SEQUENCE_OVERHEAD = 56
_NUMBER_SIZE = 28
_CALL_OVERHEAD = 200
#: Budget of the bytes the tier may hold owed to Redis (``fallback_max_owed_bytes``): some
#: 30,000 chat turns (see the option's docstring).
DEFAULT_MAX_OWED_BYTES = 256 * 1024 * 1024
#: The scripts that add data to a thread: the writes the owed budget may refuse. The other
#: writes (TTL, history limit, DEL) add a few bytes at most, or free some.
_GROWING = frozenset({"put", "put_writes"})


@dataclass
class _Owed:
    """What a thread owes Redis: the changes a crashed process journaled (adopted), then this
    process's own outage changes (its full state is written back in any case)."""

    own: Delta = field(default_factory=Delta)
    adopted: Delta | None = None

    def absorb(self, later: _Owed) -> None:
        """``later`` (owed since this was taken) on top of this."""
        self.own.merge(later.own)


#: :meth:`ThreadMemoryTier.take` of a thread another caller is writing back right now.
BUSY = object()


class OwedBudgetReached(RedisUnavailableError):
    """An outage write refused: it would take the tier over ``max_owed_bytes``."""


class ThreadMemoryTier:
    """Recent threads in process memory, executing the saver's Calls like Redis would."""

    def __init__(
        self,
        max_bytes: int = 64 * 1024 * 1024,
        on_evict: Callable[[str], None] | None = None,
        journal: Journal | None = None,
        max_owed_bytes: int = DEFAULT_MAX_OWED_BYTES,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_owed_bytes = max_owed_bytes
        self._on_evict = on_evict
        self.journal = journal
        self._threads: OrderedDict[str, ThreadState] = OrderedDict()
        self._dirty: dict[str, _Owed] = {}  # thread id -> what it owes Redis
        self._in_flight: dict[str, _Owed] = {}  # taken for a write-back not yet answered
        self._waiters: dict[str, list[Callable[[], None]]] = {}  # called once it is answered
        # Per shard: threads whose last writes no replica confirmed (WAIT fell short); they stay
        # here, and are written back if that shard fails before a later WAIT confirms them.
        self._unconfirmed: dict[str, set[str]] = {}
        self._size = 0
        self._owed_size = 0  # sizes of the threads _held keeps (see _recount)
        self.refused_writes = 0  # outage writes refused by max_owed_bytes
        self._lock = threading.RLock()

    # -- bookkeeping ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def owed_bytes(self) -> int:
        """Bytes of the threads held for Redis (owed, or unconfirmed by replicas): what
        ``max_owed_bytes`` bounds. Mirrored threads are under ``max_bytes`` instead."""
        return self._owed_size

    @property
    def pending(self) -> int:
        """Threads changed while Redis was away and not yet written back."""
        with self._lock:
            return len(self._dirty.keys() | self._in_flight.keys())

    @property
    def owes(self) -> bool:
        """Whether any thread is still to be written back (cheap: read on every call)."""
        return bool(self._dirty) or bool(self._in_flight)

    @property
    def dirty(self) -> bool:
        """Whether a thread waits to be taken for a write-back."""
        return bool(self._dirty)

    def owed_threads(self) -> list[str]:
        with self._lock:
            return sorted(self._dirty.keys() | self._in_flight.keys())

    def unconfirmed_threads(self) -> list[str]:
        with self._lock:
            return sorted(set().union(*self._unconfirmed.values()))

    def __contains__(self, thread_id: str) -> bool:
        return thread_id in self._threads

    def _thread(self, thread_id: str, keys: tuple[str, str], create: bool) -> ThreadState | None:
        thread = self._threads.get(thread_id)
        if (
            thread is not None
            and thread.expires_at is not None
            and thread.expires_at <= time.monotonic()
            and not self._held(thread_id)
        ):
            self._drop(thread_id)
            thread = None
        if thread is None and create:
            thread = self._threads[thread_id] = ThreadState(keys)
        if thread is not None:
            self._threads.move_to_end(thread_id)
            if thread.backlog:
                self._apply_backlog(thread_id, thread)
        return thread

    def _apply_backlog(self, thread_id: str, thread: ThreadState) -> None:
        backlog, thread.backlog = thread.backlog, []
        self._size -= thread.size
        thread.recount()
        self._size += thread.size
        for call, replies in backlog:
            if call.kind == "write":
                for command in call.commands:
                    self._command(thread_id, command, outage=False)
            else:
                for command, reply in zip(call.commands, replies, strict=True):
                    if command.script and reply:
                        self._absorb(thread_id, command, reply)
        self._recount(thread_id)

    def _drop(self, thread_id: str) -> None:
        thread = self._threads.pop(thread_id, None)
        if thread is not None:
            self._size -= thread.size
            self._owed_size -= thread.counted

    def _shrink(self) -> None:
        if self._size <= self.max_bytes:
            return  # the usual case: no copy of the thread list on every call
        for thread_id in list(self._threads):
            if self._size <= self.max_bytes:
                break
            if not self._held(thread_id):
                self._drop(thread_id)
                if self._on_evict is not None:
                    self._on_evict(thread_id)

    def _held(self, thread_id: str) -> bool:
        """Owed to Redis, or not yet confirmed by replicas: never dropped."""
        return (
            thread_id in self._dirty
            or thread_id in self._in_flight
            or (
                bool(self._unconfirmed)  # empty unless wait_replicas fell short: every mirror asks
                and any(thread_id in threads for threads in self._unconfirmed.values())
            )
        )

    def _recount(self, thread_id: str) -> None:
        """Bring owed_bytes up to date for one thread, after its size or whether it is held
        changed: each thread remembers what it adds, so calling this again is harmless."""
        thread = self._threads.get(thread_id)
        if thread is not None:
            counted = thread.size if self._held(thread_id) else 0
            self._owed_size += counted - thread.counted
            thread.counted = counted

    def _check_budget(self, thread_id: str, call: Call) -> None:
        """Refuse an outage write that could take owed_bytes over max_owed_bytes, before it
        changes anything. Counted: the write's arguments (what it can add; the member twice:
        index and hash), and the whole thread if this write is the first to make it owed."""
        growth = sum(
            _weight(c.args) + _weight(c.args[0])
            for c in call.commands
            if c.script and c.name in _GROWING
        )
        if not growth:
            return
        thread = self._threads.get(thread_id)
        if thread is not None and not self._held(thread_id):
            growth += thread.size
        if self._owed_size + growth <= self.max_owed_bytes:
            return
        self.refused_writes += 1
        raise OwedBudgetReached(
            f"the in-memory tier holds {self._owed_size} bytes of threads owed to Redis; this "
            f"write to thread {thread_id!r} (up to {growth} bytes more) would go over "
            f"fallback_max_owed_bytes={self.max_owed_bytes}, so outage writes are refused until "
            "Redis answers and the owed threads are written back (reads are still answered)"
        )

    # -- execution -------------------------------------------------------------------------------

    def execute(self, call: Call, *, outage: bool) -> list[Any]:
        """Run a Call here. With ``outage`` the changes are kept for replay to Redis (and with a
        journal, durable on return)."""
        replies, upto = self.execute_unsynced(call, outage=outage)
        if upto and self.journal is not None:
            self.journal.sync(upto)
        return replies

    def execute_unsynced(self, call: Call, *, outage: bool) -> tuple[list[Any], int]:
        """:meth:`execute`, leaving the journal's fdatasync to the caller: the replies, and how
        far the journal must be synced (``journal.sync(upto)``) before the write may be
        acknowledged; 0 when it journaled nothing. An outage write over ``max_owed_bytes`` is
        refused (:class:`OwedBudgetReached`) with nothing changed."""
        if call.kind == "admin":
            raise LookupError("cross-thread operations need Redis")
        journal = self.journal
        with self._lock:
            owed = self._dirty.get(call.thread_id or "")
            adopted = owed is not None and owed.adopted is not None
            if outage and adopted and call.thread_id not in self._threads:
                # Only its outage changes are here, not what they build on: answering would
                # fork the conversation from nothing.
                raise RedisUnavailableError(
                    f"thread {call.thread_id!r} was changed by a process that ended while "
                    "Redis was away (adopted from the fallback journal); it needs Redis"
                )
            if outage:
                self._check_budget(call.thread_id or "", call)
            mark = journal.appended if journal is not None else 0
            replies = [self._command(call.thread_id or "", c, outage) for c in call.commands]
            self._shrink()
            # Read under the lock: at least the end of this call's records.
            upto = journal.appended if journal is not None else 0
        return replies, (upto if upto != mark else 0)

    def mirror(self, call: Call, replies: Sequence[Any]) -> None:
        """Keep a copy of what a Call did on Redis: writes are replayed, reads absorbed."""
        if call.kind == "admin" or call.thread_id is None:
            return
        with self._lock:
            thread_id = call.thread_id
            thread = self._threads.get(thread_id)
            if thread is None:
                keys = call.commands[0].keys
                thread = self._threads[thread_id] = ThreadState((keys[0], keys[-1]))
            else:
                self._threads.move_to_end(thread_id)
            weight = _weight([c.args for c in call.commands] if call.kind == "write" else replies)
            weight += _CALL_OVERHEAD * (1 + len(call.commands))
            thread.backlog.append((call, replies))
            thread.size += weight
            self._size += weight
            if len(thread.backlog) >= _BACKLOG_LIMIT:
                # Repeated reads bring the same fields again: applying them counts them once.
                self._apply_backlog(thread_id, thread)
            self._recount(thread_id)
            self._shrink()

    # -- writing back ----------------------------------------------------------------------------

    def take(self, thread_id: str) -> Delta | object | None:
        """The write-back a thread owes (now in flight: report it with :meth:`written_back`),
        None when it owes nothing, or :data:`BUSY` while another caller is writing it back."""
        with self._lock:
            if thread_id in self._in_flight:
                return BUSY
            owed = self._dirty.pop(thread_id, None)
            if owed is None:
                return None
            self._in_flight[thread_id] = owed
            return self._payload(thread_id, owed)

    def take_many(self, limit: int, accept: Callable[[str], bool]) -> list[tuple[str, Delta]]:
        """Up to ``limit`` owed threads that ``accept`` (their shard answers), taken as by take."""
        with self._lock:
            chosen = [t for t in self._dirty if t not in self._in_flight and accept(t)][:limit]
            out = []
            for thread_id in chosen:
                owed = self._in_flight[thread_id] = self._dirty.pop(thread_id)
                out.append((thread_id, self._payload(thread_id, owed)))
            return out

    def _payload(self, thread_id: str, owed: _Owed) -> Delta:
        """What to write: the thread as the tier holds it, the adopted changes over it (Redis
        has never seen them; the tier may have mirrored older values since), then this process's
        own outage changes (deletions; the rest is in the thread already)."""
        payload = Delta()
        thread = self._threads.get(thread_id)
        if thread is not None:
            if thread.backlog:
                self._apply_backlog(thread_id, thread)
            payload.members.update(thread.members)
            payload.fields.update(thread.data)
        if owed.adopted is not None:
            payload.merge(owed.adopted)
        payload.merge(owed.own)
        return payload

    def when_written_back(self, thread_id: str, callback: Callable[[], None]) -> bool:
        """Call ``callback`` once the thread's write-back in flight is answered; False (and no
        call) when none is in flight any more."""
        with self._lock:
            if thread_id not in self._in_flight:
                return False
            self._waiters.setdefault(thread_id, []).append(callback)
            return True

    def written_back(self, thread_id: str, ok: bool) -> None:
        """The outcome of a taken thread's write-back: done, or owed again."""
        try:
            self._written_back(thread_id, ok)
        finally:
            with self._lock:
                waiters = self._waiters.pop(thread_id, [])
            for wake in waiters:
                wake()

    def _written_back(self, thread_id: str, ok: bool) -> None:
        with self._lock:
            owed = self._in_flight.pop(thread_id, None)
            if owed is None:
                return
            again = self._dirty.get(thread_id)  # changed in memory meanwhile
            if not ok:
                if again is not None:
                    owed.absorb(again)
                self._dirty[thread_id] = owed
                return
            self._recount(thread_id)  # no longer owed: off the budget
            if self.journal is not None and again is None:
                # One changed meanwhile keeps its records: a done record would cover new ones.
                self.journal.written_back([thread_id])
            self._settle()

    def _settle(self) -> None:
        if self.journal is not None and not self._dirty and not self._in_flight:
            self.journal.reset()  # everything it holds is in Redis

    def adopt(self, owed: dict[str, Delta]) -> None:
        """Take over what a crashed process's journal says its threads owe Redis."""
        with self._lock:
            for thread_id, delta in owed.items():
                entry = self._dirty.setdefault(thread_id, _Owed())
                if entry.adopted is None:
                    entry.adopted = delta
                else:
                    entry.adopted.merge(delta)
                self._recount(thread_id)

    # -- replication ------------------------------------------------------------------------------

    def unconfirmed(self, shard: str, thread_ids: Sequence[str]) -> None:
        """These threads' last writes reached the shard's primary but not enough replicas."""
        with self._lock:
            self._unconfirmed.setdefault(shard, set()).update(thread_ids)
            for thread_id in thread_ids:
                self._recount(thread_id)

    def holds_unconfirmed(self, shard: str) -> bool:
        return bool(self._unconfirmed.get(shard))

    def confirmed(self, shard: str) -> None:
        """A WAIT on the shard was answered by enough replicas: every earlier write is there."""
        if shard in self._unconfirmed:
            with self._lock:
                for thread_id in self._unconfirmed.pop(shard, ()):
                    self._recount(thread_id)

    def shard_failed(self, shard: str) -> None:
        """The shard's primary is gone: what it did not confirm may be lost, so write it back."""
        if shard in self._unconfirmed:
            with self._lock:
                for thread_id in self._unconfirmed.pop(shard, ()):
                    self._dirty.setdefault(thread_id, _Owed())

    def _absorb(self, thread_id: str, command: Command, reply: Any) -> None:
        thread = self._thread(thread_id, (command.keys[0], command.keys[1]), create=True)
        assert thread is not None
        before = thread.size
        if command.name == "get":
            entries, flat, keyframes = [[reply[0], reply[1], reply[3]]], reply[2], reply[4]
        elif command.name == "list":
            entries, flat, keyframes = reply[0], reply[1], reply[3]
        elif command.name == "history":
            entries, flat, keyframes = reply[0], reply[1], reply[2]
        else:
            return
        for member, raw, writes, *_ in entries:
            thread.zadd(member)
            thread.hset(member, raw)
            if writes:
                thread.hset(b"w" + member[1:], writes)
        # Fields only: a keyframe may be a pruned checkpoint's record (not in the index).
        for i in range(0, len(flat), 2):
            if flat[i + 1]:
                thread.hset(flat[i], flat[i + 1])
        for i in range(0, len(keyframes), 2):
            thread.hset(keyframes[i], keyframes[i + 1])
        self._size += thread.size - before
        self._recount(thread_id)

    def _command(self, thread_id: str, command: Command, outage: bool) -> Any:
        if not command.script:
            return self._plain(thread_id, command, outage)
        handler = getattr(self, f"_script_{command.name}")
        writes = command.name in ("put", "put_writes", "ttl", "limit_history")
        creates = command.name in ("put", "put_writes")
        thread = self._thread(thread_id, (command.keys[0], command.keys[1]), create=creates)
        if thread is None:
            return -2 if command.name in ("ttl", "limit_history") else None
        before = thread.size
        args = [a if isinstance(a, bytes) else str(a).encode() for a in command.args]
        if writes and outage:
            thread.changes = Delta()
            try:
                reply = handler(thread, args)
            finally:
                changes, thread.changes = thread.changes, None
            self._owe(thread_id, changes)
        else:
            reply = handler(thread, args)
        self._size += thread.size - before
        self._recount(thread_id)
        return reply

    def _owe(self, thread_id: str, changes: Delta) -> None:
        """An outage write changed the thread: owe it to Redis, and journal it (durable before
        the write returns). A journal that cannot be written fails the call (not acknowledged),
        and the change is still owed: this process writes it back if it lives."""
        owed = self._dirty.get(thread_id)
        if owed is None:
            owed = self._dirty[thread_id] = _Owed()
        owed.own.merge(changes)
        if changes and self.journal is not None:
            # Synced by the router's SyncJournal step (execute_unsynced says how far).
            self.journal.append(thread_id, changes, sync=False)

    def _plain(self, thread_id: str, command: Command, outage: bool) -> Any:
        if command.name == "DEL":
            thread = self._threads.get(thread_id)
            self._drop(thread_id)
            if outage:
                deleted = Delta()
                deleted.clear()
                self._owe(thread_id, deleted)
            return 0 if thread is None else 2
        # The thread registry lives in Redis only; locally the tier's threads are the registry.
        return 0

    # -- the scripts of scripts.py ---------------------------------------------------------------

    def _script_get(self, thread: ThreadState, args: list[bytes]) -> Any:
        ns, cid = args[0], args[1]
        if cid:
            member = b"c" + SEP + ns + SEP + cid
            if not thread.is_member(member):
                return None
        else:
            found = thread.with_prefix(b"c" + SEP + ns + SEP)
            if not found:
                return None
            member = found[-1]
        if member not in thread.data:
            return None
        flat: list[bytes] = []
        seen: set[bytes] = set(args[4:])
        record = thread.record(member)
        for name in thread.blob_fields(member, record):
            thread.chain(name, flat, seen)
        keyframes: list[bytes] = []
        thread.add_keyframe(member, record, keyframes, set())
        return [member, thread.data[member], flat, thread.writes_of(member), keyframes]

    def _script_list(self, thread: ThreadState, args: list[bytes]) -> Any:
        has_ns, ns, before, exact = args[0] == b"1", args[1], args[2], args[3]
        limit, cursor = int(args[4]), args[5]
        known = int(args[8])
        filters = {args[i]: args[i + 1] for i in range(9 + known, len(args), 2)}
        prefix = b"c" + SEP + ns + SEP if has_ns else b"c" + SEP
        candidates = thread.with_prefix(prefix)
        if has_ns and before:
            candidates = [m for m in candidates if m < prefix + before]
        if cursor:
            candidates = [m for m in candidates if m < cursor]
        found: list[Any] = []
        flat: list[bytes] = []
        seen: set[bytes] = set(args[9 : 9 + known])
        keyframes: list[bytes] = []
        kseen: set[bytes] = set()
        more = None
        for member in reversed(candidates):
            cid = member[member.index(SEP, 2) + 1 :]
            if (exact and cid != exact) or (before and cid >= before):
                continue
            if member not in thread.data:
                continue
            record = thread.record(member)
            meta = record[7]
            if any(
                v != b"?" and meta.get(k, b"null") != b"?" and meta.get(k, b"null") != v
                for k, v in filters.items()
            ):
                continue
            for name in thread.blob_fields(member, record):
                thread.chain(name, flat, seen)
            keyframe = thread.add_keyframe(member, record, keyframes, kseen)
            found.append([member, thread.data[member], thread.writes_of(member), keyframe])
            if limit and len(found) >= limit:
                more = member
                break
        return [found, flat, more, keyframes]

    def _script_put(self, thread: ThreadState, args: list[bytes]) -> Any:
        keyframe_gone = 0
        if args[4]:
            path, raw = thread.keyframe_path(args[0], codec.unpack(args[1]))
            keyframe_gone = int(raw is None or path[-1] != args[4])
        quads = [args[i : i + 4] for i in range(6, len(args), 4)]
        fresh = {name for name, _, _, _ in quads}
        missing = [
            name
            for name, _, base, _ in quads
            if base and base not in fresh and base not in thread.data
        ]
        if missing or keyframe_gone:
            return [0, missing, keyframe_gone]
        thread.hset(args[0], args[1])
        for name, blob, _, alternative in quads:
            reference = thread.data.get(b"r" + name[1:])
            if reference is not None:
                thread.hdel(b"r" + name[1:])
                if reference[:16] == codec.short_digest(blob):
                    blob = reference[16:]
            referred = blob[:1] != b"R" or thread.referred_ok(blob)
            thread.hset(name, blob if referred else alternative)
        created = int(THREAD_ID not in thread.data)
        thread.data.setdefault(THREAD_ID, args[3])
        thread.zadd(args[0])
        limit, pruned = thread.history_limit(args[5]), 0
        if limit > 0:
            pruned = thread.trim_namespace(namespace_head(args[0]), limit)
            if pruned and thread.owe_garbage(pruned) >= max(limit, GARBAGE_BATCH):
                thread.collect_garbage()
        return [1, thread.ttl(int(args[2])), created, pruned]

    def _script_put_writes(self, thread: ThreadState, args: list[bytes]) -> Any:
        if args[3]:
            current = thread.data.get(args[0], b"")
            if current and codec.is_legacy_writes(current):
                current = b"M" + len(current).to_bytes(4, "big") + current
            thread.hset(args[0], current + args[3])
        for i in range(4, len(args), 3):
            blob = thread.data.get(args[i])
            if blob is None:
                thread.hset(b"r" + args[i][1:], args[i + 1] + args[i + 2])
            elif codec.short_digest(blob) == args[i + 1]:
                thread.hset(args[i], args[i + 2])
        created = int(THREAD_ID not in thread.data)
        thread.data.setdefault(THREAD_ID, args[2])
        return [thread.ttl(int(args[1])), created]

    def _script_history(self, thread: ThreadState, args: list[bytes]) -> Any:
        ns, cid = args[0], args[1]
        target = self._script_get(thread, [ns, cid])
        if target is None:
            return [[], [], []]
        remaining = set(args[2:])
        parent = thread.record(target[0])[1]
        steps: list[Any] = []
        flat: list[bytes] = []
        seen: set[bytes] = set()
        keyframes: list[bytes] = []
        kseen: set[bytes] = set()
        while parent is not None and remaining:
            member = b"c" + SEP + ns + SEP + parent
            if not thread.is_member(member) or member not in thread.data:
                break
            record = thread.record(member)
            keyframe = thread.add_keyframe(member, record, keyframes, kseen)
            steps.append([member, thread.data[member], thread.writes_of(member), keyframe])
            if record[0] <= 3:
                triples = record[6]
                for i in range(0, len(triples), 3):
                    if triples[i + 2] not in (b"", codec.EMPTY_BLOB):
                        remaining.discard(triples[i])
            for channel, token in codec.shown_blobs(record):
                if channel not in remaining:
                    continue
                name = b"b" + SEP + ns + SEP + channel + SEP + token
                blob = thread.data.get(name)
                if blob and blob != codec.EMPTY_BLOB:
                    thread.chain(name, flat, seen)
                    remaining.discard(channel)
            parent = record[1]
        return [steps, flat, keyframes]

    def _script_limit_history(self, thread: ThreadState, args: list[bytes]) -> Any:
        if not thread.members:
            return -2
        if args[0]:
            thread.hset(HISTORY_LIMIT, args[0])
        else:
            thread.hdel(HISTORY_LIMIT)
        limit, gone = thread.history_limit(args[1]), 0
        if limit > 0:
            gone = sum(thread.trim_namespace(head, limit) for head in thread.namespace_heads())
            if gone:
                thread.collect_garbage()
        return gone

    def _script_ttl(self, thread: ThreadState, args: list[bytes]) -> Any:
        if not thread.members:
            return -2
        mode = args[0]
        if mode == b"pin":
            thread.hset(THREAD_TTL, b"0")
        elif mode == b"unpin":
            thread.hdel(THREAD_TTL)
        elif mode == b"set":
            thread.hset(THREAD_TTL, args[1])
        if mode != b"get":
            thread.ttl(int(args[2]))
        if thread.expires_at is None:
            return -1
        return max(0, int((thread.expires_at - time.monotonic()) * 1000))


def _weight(obj: Any) -> int:
    """Roughly the memory an object holds, Python's headers included (the tier's budgets are
    counted in these)."""
    if isinstance(obj, (bytes, str)):
        return len(obj) + BYTES_OVERHEAD
    if not isinstance(obj, (list, tuple)):
        return _NUMBER_SIZE
    total = _SEQUENCE_OVERHEAD
    for item in obj:  # flat argument lists mostly: no call per bytes or number
        kind = type(item)
        if kind is bytes or kind is str:
            total += len(item) + BYTES_OVERHEAD + 8
        elif kind is int or item is None:
            total += _NUMBER_SIZE + 8
        else:
            total += _weight(item) + 8
    return total
