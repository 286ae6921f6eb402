"""The in-memory tier: the saver's scripts run in Python on a bounded copy of recent threads.

While Redis is healthy the tier mirrors what this process writes and reads, thread by thread
(least recently used threads are dropped past a byte budget). While Redis is away, the same Calls
run here instead, so a conversation goes on from where it was; threads changed meanwhile are
*owed* to Redis and are never dropped until they are written back, one thread at a time
(:meth:`ThreadMemoryTier.take` hands one out, :meth:`ThreadMemoryTier.written_back` reports the
outcome). With a journal, every change an outage write makes is appended to it (fsynced) before
the write returns, so a process killed meanwhile loses nothing: the next one adopts what it owed.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis_checkpoint.checkpoint import codec
from redis_checkpoint.checkpoint.journal import Delta, Journal
from redis_checkpoint.checkpoint.keys import SEP
from redis_checkpoint.errors import CorruptEntryError, RedisUnavailableError
from redis_checkpoint.steps import Call, Command

THREAD_TTL = b"t"
HISTORY_LIMIT = b"h"
_BACKLOG_LIMIT = 64
THREAD_ID = b"id"


@dataclass
class _Thread:
    keys: tuple[str, str]
    members: list[bytes] = field(default_factory=list)
    data: dict[bytes, bytes] = field(default_factory=dict)
    expires_at: float | None = None
    size: int = 0
    # Calls mirrored while Redis was healthy, applied only when the thread is first needed here:
    # mirroring then costs an append on the hot path.
    backlog: list[tuple[Call, Sequence[Any]]] = field(default_factory=list)
    # While an outage write runs: what it changes (the journal's record of it).
    changes: Delta | None = None

    def zadd(self, member: bytes) -> None:
        i = bisect.bisect_left(self.members, member)
        if i == len(self.members) or self.members[i] != member:
            self.members.insert(i, member)
            self.size += len(member)
        if self.changes is not None:
            self.changes.add_member(member)

    def hset(self, name: bytes, value: bytes) -> None:
        old = self.data.get(name)
        self.size += len(value) - (len(old) if old is not None else -len(name))
        self.data[name] = value
        if self.changes is not None:
            self.changes.set(name, value)

    def hdel(self, name: bytes) -> None:
        old = self.data.pop(name, None)
        if old is not None:
            self.size -= len(old) + len(name)
        if self.changes is not None:
            self.changes.remove(name)

    def zrem(self, member: bytes) -> None:
        # During an outage no change is noted: the write-back drops the member from Redis's
        # index with its record (RESTORE), and a kept record's member is trimmed by the next put.
        i = bisect.bisect_left(self.members, member)
        if i < len(self.members) and self.members[i] == member:
            del self.members[i]
            self.size -= len(member)

    def with_prefix(self, prefix: bytes) -> list[bytes]:
        upper = prefix[:-1] + bytes([prefix[-1] + 1])
        lo = bisect.bisect_left(self.members, prefix)
        hi = bisect.bisect_left(self.members, upper)
        return self.members[lo:hi]

    def writes_of(self, member: bytes) -> bytes | None:
        return self.data.get(b"w" + member[1:])

    def blob_fields(self, member: bytes, record: list[Any]) -> list[bytes]:
        head = b"b" + member[1 : member.index(SEP, 2) + 1]
        return [head + channel + SEP + token for channel, token in codec.shown_blobs(record)]

    def chain(self, name: bytes, out: list[bytes], seen: set[bytes]) -> None:
        current: bytes | None = name
        while current is not None and current not in seen:
            seen.add(current)
            blob = self.data.get(current)
            out += [current, blob or b""]
            if blob and blob[:1] == b"R":
                writes = codec.list_ref(blob)[0]
                if writes not in seen:
                    seen.add(writes)
                    out += [writes, self.data.get(writes) or b""]
            current = codec.list_base(blob) if blob else None

    def referred_ok(self, blob: bytes) -> bool:
        field, refs = codec.list_ref(blob)
        raw = self.data.get(field)
        if not raw or raw[:1] not in (b"W", b"X", b"M"):
            return False
        have = {codec.short_digest(frame) for frame in codec.split_frames(raw)}
        return all(digest in have for digest, _ in refs)

    def is_member(self, member: bytes) -> bool:
        i = bisect.bisect_left(self.members, member)
        return i < len(self.members) and self.members[i] == member

    def keyframe_path(self, member: bytes, record: list[Any]) -> tuple[list[bytes], bytes | None]:
        """The scripts' keyframe_path: members up to a keyed record's keyframe, and its raw."""
        path: list[bytes] = []
        head = _namespace_head(member)
        raw = None
        for _ in range(codec.record_depth(record)):
            if record[1] is None:
                return path, None
            path.append(head + record[1])
            raw = self.data.get(path[-1])
            if raw is None:
                return path, None
            record = self.record(path[-1])
        return path, raw

    def add_keyframe(
        self, member: bytes, record: list[Any], out: list[bytes], seen: set[bytes]
    ) -> bytes | None:
        path, raw = self.keyframe_path(member, record)
        if raw is None:
            return None
        if path[-1] not in seen:
            seen.add(path[-1])
            out += [path[-1], raw]
        return path[-1]

    def record(self, member: bytes) -> list[Any]:
        raw = self.data[member]
        try:
            fields = codec.unpack(raw)
            if not isinstance(fields, list) or fields[0] not in codec.RECORD_FORMATS:
                raise ValueError
            return fields
        except Exception:
            raise CorruptEntryError(
                f"{self.keys[1]} field {member!r}", "checkpoint record is unreadable"
            ) from None

    # -- the scripts' pruning: trim_namespace, collect_garbage ----------------------------------

    def history_limit(self, default: bytes) -> int:
        return int(self.data.get(HISTORY_LIMIT, default))

    def namespace_heads(self) -> list[bytes]:
        return list(dict.fromkeys(_namespace_head(m) for m in self.members))

    def trim_namespace(self, head: bytes, keep_count: int) -> int:
        """Keep the namespace's newest ``keep_count`` checkpoints and their DeltaChannel
        ancestors in the index; returns how many left it."""
        members = self.with_prefix(head)
        if len(members) <= keep_count:
            return 0
        keep: set[bytes] = set()
        for member in reversed(members[len(members) - keep_count :]):
            current: bytes | None = member
            while current is not None and current not in keep:
                keep.add(current)
                if current not in self.data:
                    break
                record = self.record(current)
                has_counters = record[7].get(b"counters_since_delta_snapshot") is not None
                current = head + record[1] if has_counters and record[1] else None
        dead = [m for m in members if m not in keep]
        for member in dead:
            self.zrem(member)
        return len(dead)

    def collect_garbage(self) -> int:
        """The scripts' collect_garbage: drop what no checkpoint in the index reaches."""
        reach: set[bytes] = set()
        kept = set(self.members)
        needed: set[bytes] = set()
        newest = {_namespace_head(m): m for m in self.members}
        for member in self.members:
            if member in self.data:
                record = self.record(member)
                chain: list[bytes] = []
                for name in self.blob_fields(member, record):
                    self.chain(name, chain, reach)
                needed.update(self.keyframe_path(member, record)[0])
        dead = []
        for name in self.data:
            kind = name[:2]
            if (
                (kind == b"b" + SEP and name not in reach)
                or (kind == b"w" + SEP and self._orphan_writes(name, kept, reach, newest))
                or (kind == b"c" + SEP and name not in kept and name not in needed)
                or kind == b"r" + SEP
            ):
                dead.append(name)
        for name in dead:
            self.hdel(name)
        return len(self.members)

    @staticmethod
    def _orphan_writes(
        name: bytes, kept: set[bytes], reach: set[bytes], newest: dict[bytes, bytes]
    ) -> bool:
        owner = b"c" + name[1:]
        if owner in kept or name in reach:
            return False
        # Writes of a checkpoint newer than its namespace's newest: its put is on the way.
        return newest.get(_namespace_head(owner), owner) > owner

    def ttl(self, default_ms: int) -> int:
        ms = int(self.data.get(THREAD_TTL, default_ms))
        self.expires_at = time.monotonic() + ms / 1000 if ms > 0 else None
        return ms


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


class ThreadMemoryTier:
    """Recent threads in process memory, executing the saver's Calls like Redis would."""

    def __init__(
        self,
        max_bytes: int = 64 * 1024 * 1024,
        on_evict: Callable[[str], None] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self._on_evict = on_evict
        self.journal = journal
        self._threads: OrderedDict[str, _Thread] = OrderedDict()
        self._dirty: dict[str, _Owed] = {}  # thread id -> what it owes Redis
        self._in_flight: dict[str, _Owed] = {}  # taken for a write-back not yet answered
        self._waiters: dict[str, list[Callable[[], None]]] = {}  # called once it is answered
        # Per shard: threads whose last writes no replica confirmed (WAIT fell short); they stay
        # here, and are written back if that shard fails before a later WAIT confirms them.
        self._unconfirmed: dict[str, set[str]] = {}
        self._size = 0
        self._lock = threading.RLock()

    # -- bookkeeping ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

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

    def _thread(self, thread_id: str, keys: tuple[str, str], create: bool) -> _Thread | None:
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
            thread = self._threads[thread_id] = _Thread(keys)
        if thread is not None:
            self._threads.move_to_end(thread_id)
            if thread.backlog:
                self._apply_backlog(thread_id, thread)
        return thread

    def _apply_backlog(self, thread_id: str, thread: _Thread) -> None:
        backlog, thread.backlog = thread.backlog, []
        self._size -= thread.size
        thread.size = sum(len(k) + len(v) for k, v in thread.data.items()) + sum(
            len(m) for m in thread.members
        )
        self._size += thread.size
        for call, replies in backlog:
            if call.kind == "write":
                for command in call.commands:
                    self._command(thread_id, command, outage=False)
            else:
                for command, reply in zip(call.commands, replies, strict=True):
                    if command.script and reply:
                        self._absorb(thread_id, command, reply)

    def _drop(self, thread_id: str) -> None:
        thread = self._threads.pop(thread_id, None)
        if thread is not None:
            self._size -= thread.size

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
            or any(thread_id in threads for threads in self._unconfirmed.values())
        )

    # -- execution -------------------------------------------------------------------------------

    def execute(self, call: Call, *, outage: bool) -> list[Any]:
        """Run a Call here. With ``outage`` the changes are kept for replay to Redis."""
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
            mark = journal.appended if journal is not None else 0
            replies = [self._command(call.thread_id or "", c, outage) for c in call.commands]
            self._shrink()
        if journal is not None and journal.appended != mark:
            journal.sync()  # outside the lock: concurrent callers share one fdatasync
        return replies

    def mirror(self, call: Call, replies: Sequence[Any]) -> None:
        """Keep a copy of what a Call did on Redis: writes are replayed, reads absorbed."""
        if call.kind == "admin" or call.thread_id is None:
            return
        with self._lock:
            thread_id = call.thread_id
            thread = self._threads.get(thread_id)
            if thread is None:
                keys = call.commands[0].keys
                thread = self._threads[thread_id] = _Thread((keys[0], keys[-1]))
            else:
                self._threads.move_to_end(thread_id)
            weight = _weight([c.args for c in call.commands] if call.kind == "write" else replies)
            thread.backlog.append((call, replies))
            thread.size += weight
            self._size += weight
            if len(thread.backlog) >= _BACKLOG_LIMIT:
                # Repeated reads bring the same fields again: applying them counts them once.
                self._apply_backlog(thread_id, thread)
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

    # -- replication ------------------------------------------------------------------------------

    def unconfirmed(self, shard: str, thread_ids: Sequence[str]) -> None:
        """These threads' last writes reached the shard's primary but not enough replicas."""
        with self._lock:
            self._unconfirmed.setdefault(shard, set()).update(thread_ids)

    def holds_unconfirmed(self, shard: str) -> bool:
        return bool(self._unconfirmed.get(shard))

    def confirmed(self, shard: str) -> None:
        """A WAIT on the shard was answered by enough replicas: every earlier write is there."""
        if shard in self._unconfirmed:
            with self._lock:
                self._unconfirmed.pop(shard, None)

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
            self.journal.append(thread_id, changes, sync=False)  # synced by execute

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

    def _script_get(self, thread: _Thread, args: list[bytes]) -> Any:
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

    def _script_list(self, thread: _Thread, args: list[bytes]) -> Any:
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

    def _script_put(self, thread: _Thread, args: list[bytes]) -> Any:
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
            pruned = thread.trim_namespace(_namespace_head(args[0]), limit)
            if pruned:
                thread.collect_garbage()
        return [1, thread.ttl(int(args[2])), created, pruned]

    def _script_put_writes(self, thread: _Thread, args: list[bytes]) -> Any:
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

    def _script_history(self, thread: _Thread, args: list[bytes]) -> Any:
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

    def _script_limit_history(self, thread: _Thread, args: list[bytes]) -> Any:
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

    def _script_ttl(self, thread: _Thread, args: list[bytes]) -> Any:
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


def _namespace_head(member: bytes) -> bytes:
    """``c`` SEP ns SEP: what every checkpoint member of that namespace starts with."""
    return member[: member.index(SEP, 2) + 1]


def _weight(obj: Any) -> int:
    """Roughly the bytes an object holds (the tier's budget is counted in these)."""
    if isinstance(obj, (bytes, str)):
        return len(obj)
    if not isinstance(obj, (list, tuple)):
        return 8
    total = 8
    for item in obj:  # flat argument lists mostly: no call per bytes or number
        kind = type(item)
        if kind is bytes or kind is str:
            total += len(item)
        elif kind is int or item is None:
            total += 8
        else:
            total += _weight(item)
    return total
