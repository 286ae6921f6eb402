"""One thread as the in-memory tier holds it: the index and hash of its two keys in Python,
with the helpers the saver's scripts share (chains of blobs, keyframes, pruning, TTL), so that
``memory.py`` runs each script on it as Lua runs on Redis."""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis_checkpoint.checkpoint import codec
from redis_checkpoint.checkpoint.journal import Delta
from redis_checkpoint.checkpoint.keys import SEP
from redis_checkpoint.errors import CorruptEntryError
from redis_checkpoint.steps import Call

THREAD_TTL = b"t"
HISTORY_LIMIT = b"h"
#: What Python adds to a stored byte string (the object's header), to a hash field (its key's
#: and value's headers, the dict's slot) and to an index member (its header, the list's slot):
#: the tier's budgets count memory, not only payload bytes (``benchmarks/tier_soak.py``).
BYTES_OVERHEAD = 33
FIELD_OVERHEAD = 2 * BYTES_OVERHEAD + 48
MEMBER_OVERHEAD = BYTES_OVERHEAD + 8
#: Checkpoints a history limit pruned whose garbage is not yet collected (see scripts.py's PUT).
PRUNED_UNCOLLECTED = b"g"
#: The least number of pruned checkpoints a put collects the garbage of at once.
GARBAGE_BATCH = 8
THREAD_ID = b"id"


@dataclass
class ThreadState:
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
    # Its part of the tier's owed_bytes: its size while held for Redis, else 0.
    counted: int = 0

    def zadd(self, member: bytes) -> None:
        i = bisect.bisect_left(self.members, member)
        if i == len(self.members) or self.members[i] != member:
            self.members.insert(i, member)
            self.size += len(member) + MEMBER_OVERHEAD
        if self.changes is not None:
            self.changes.add_member(member)

    def hset(self, name: bytes, value: bytes) -> None:
        old = self.data.get(name)
        self.size += len(value) - (len(old) if old is not None else -len(name) - FIELD_OVERHEAD)
        self.data[name] = value
        if self.changes is not None:
            self.changes.set(name, value)

    def hdel(self, name: bytes) -> None:
        old = self.data.pop(name, None)
        if old is not None:
            self.size -= len(old) + len(name) + FIELD_OVERHEAD
        if self.changes is not None:
            self.changes.remove(name)

    def zrem(self, member: bytes) -> None:
        # During an outage no change is noted: the write-back drops the member from Redis's
        # index with its record (RESTORE), and a kept record's member is trimmed by the next put.
        i = bisect.bisect_left(self.members, member)
        if i < len(self.members) and self.members[i] == member:
            del self.members[i]
            self.size -= len(member) + MEMBER_OVERHEAD

    def recount(self) -> None:
        """The size from scratch (after a backlog was applied)."""
        self.size = sum(len(k) + len(v) + FIELD_OVERHEAD for k, v in self.data.items()) + sum(
            len(m) + MEMBER_OVERHEAD for m in self.members
        )

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
        head = namespace_head(member)
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
        return list(dict.fromkeys(namespace_head(m) for m in self.members))

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
        newest = {namespace_head(m): m for m in self.members}
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
        for name in [*dead, PRUNED_UNCOLLECTED]:
            self.hdel(name)
        return len(self.members)

    def owe_garbage(self, pruned: int) -> int:
        """The scripts' HINCRBY of field 'g': checkpoints pruned since the last collection."""
        count = int(self.data.get(PRUNED_UNCOLLECTED, b"0")) + pruned
        self.hset(PRUNED_UNCOLLECTED, str(count).encode())
        return count

    @staticmethod
    def _orphan_writes(
        name: bytes, kept: set[bytes], reach: set[bytes], newest: dict[bytes, bytes]
    ) -> bool:
        owner = b"c" + name[1:]
        if owner in kept or name in reach:
            return False
        # Writes of a checkpoint newer than its namespace's newest: its put is on the way.
        return newest.get(namespace_head(owner), owner) > owner

    def ttl(self, default_ms: int) -> int:
        ms = int(self.data.get(THREAD_TTL, default_ms))
        self.expires_at = time.monotonic() + ms / 1000 if ms > 0 else None
        return ms


def namespace_head(member: bytes) -> bytes:
    """``c`` SEP ns SEP: what every checkpoint member of that namespace starts with."""
    return member[: member.index(SEP, 2) + 1]
