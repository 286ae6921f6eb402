"""A crash-safe journal of what the in-memory tier takes while Redis is away.

Each saver opened with ``fallback_journal=<dir>`` appends to its own *segment* file there, and
holds an exclusive ``flock`` on it for as long as it lives. A segment whose lock can be taken
belongs to a process that is gone: the next saver opened on the directory (with the same key
prefix) *adopts* it, copying what it owes into its own segment before deleting it, so a crash
during adoption loses nothing either.

A segment is a header and then records, each ``length, crc32, body``. A change record carries a
thread's :class:`Delta`; a done record says everything journaled for the thread before it is in
Redis. :meth:`Journal.append` returns only once the record is on disk (``fdatasync``), or with
``sync=False`` a later :meth:`Journal.sync` does (the saver: the router's ``SyncJournal`` step, off
the event loop in the async saver), so the call that wrote it is acknowledged only then. A torn
last record (the process died inside an append) or a corrupt one ends what is read of a segment:
it was never acknowledged, or the disk is damaged (logged, counted, never a crash). The format
is this module's own: no pickle.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from redis_checkpoint.errors import FallbackJournalError

log = logging.getLogger(__name__)

MAGIC = b"redis_checkpoint journal 1\n"
SUFFIX = ".journal"
_FRAME = struct.Struct(">II")  # body length, crc32 of the body
_LENGTH = struct.Struct(">I")
_CHANGE, _DONE = b"C", b"D"
#: A segment past this size is rewritten with only what it still owes, on the next write-back.
COMPACT_BYTES = 8 * 1024 * 1024


@dataclass
class Delta:
    """What the tier changed in one thread, in order: later changes win."""

    cleared: bool = False
    members: set[bytes] = field(default_factory=set)
    fields: dict[bytes, bytes] = field(default_factory=dict)
    removed: set[bytes] = field(default_factory=set)

    def add_member(self, member: bytes) -> None:
        self.members.add(member)

    def set(self, name: bytes, value: bytes) -> None:
        self.fields[name] = value
        self.removed.discard(name)

    def remove(self, name: bytes) -> None:
        self.fields.pop(name, None)
        self.removed.add(name)

    def clear(self) -> None:
        self.cleared = True
        self.members.clear()
        self.fields.clear()
        self.removed.clear()

    def merge(self, later: Delta) -> None:
        if later.cleared:
            self.clear()
        self.members |= later.members
        for name, value in later.fields.items():
            self.set(name, value)
        for name in later.removed:
            self.remove(name)

    def __bool__(self) -> bool:
        return bool(self.cleared or self.members or self.fields or self.removed)


# -- the record format -----------------------------------------------------------------------


def _pack_items(out: list[bytes], items: Iterable[bytes]) -> None:
    items = list(items)
    out.append(_LENGTH.pack(len(items)))
    for item in items:
        out.append(_LENGTH.pack(len(item)))
        out.append(item)


def _record(kind: bytes, thread_id: str, delta: Delta | None = None) -> bytes:
    body = [kind]
    _pack_items(body, [thread_id.encode()])
    if delta is not None:
        body.append(b"\x01" if delta.cleared else b"\x00")
        _pack_items(body, sorted(delta.members))
        _pack_items(body, [part for pair in delta.fields.items() for part in pair])
        _pack_items(body, sorted(delta.removed))
    payload = b"".join(body)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def items(self) -> list[bytes]:
        (count,) = _LENGTH.unpack_from(self.data, self.at)
        self.at += 4
        out = []
        for _ in range(count):
            (size,) = _LENGTH.unpack_from(self.data, self.at)
            self.at += 4
            if self.at + size > len(self.data):
                raise ValueError("item runs past its record")
            out.append(self.data[self.at : self.at + size])
            self.at += size
        return out


def _parse(body: bytes) -> tuple[str, Delta | None]:
    reader = _Reader(body)
    reader.at = 1
    (thread,) = reader.items()
    if body[:1] == _DONE:
        return thread.decode(), None
    if body[:1] != _CHANGE:
        raise ValueError(f"unknown record kind {body[:1]!r}")
    delta = Delta(cleared=body[reader.at : reader.at + 1] == b"\x01")
    reader.at += 1
    delta.members.update(reader.items())
    pairs = reader.items()
    delta.fields.update(zip(pairs[::2], pairs[1::2], strict=True))
    delta.removed.update(reader.items())
    if reader.at != len(body):
        raise ValueError("trailing bytes in record")
    return thread.decode(), delta


def _header(key_prefix: str) -> bytes:
    prefix = key_prefix.encode()
    return MAGIC + _LENGTH.pack(len(prefix)) + prefix


@dataclass
class Segment:
    """What one segment file says: its key prefix, what each thread still owes Redis, how many
    bytes read cleanly and how many did not (a torn or corrupt tail)."""

    key_prefix: str
    owed: dict[str, Delta]
    good_bytes: int
    bad_bytes: int


def read_segment(path: str | os.PathLike[str]) -> Segment:
    """Fold a segment's records; ValueError if it is not a journal segment at all."""
    data = Path(path).read_bytes()
    return _fold(data, path)


def _fold(data: bytes, path: object) -> Segment:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise ValueError(f"{path} is not a redis_checkpoint journal segment")
    (size,) = _LENGTH.unpack_from(data, len(MAGIC))
    at = len(MAGIC) + 4 + size
    if at > len(data):
        raise ValueError(f"{path} has a torn header")
    try:
        prefix = data[len(MAGIC) + 4 : at].decode()
    except UnicodeDecodeError:
        raise ValueError(f"{path} has a damaged header") from None
    owed: dict[str, Delta] = {}
    while at < len(data):
        try:
            length, crc = _FRAME.unpack_from(data, at)
            body = data[at + _FRAME.size : at + _FRAME.size + length]
            if len(body) != length or zlib.crc32(body) != crc:
                raise ValueError("torn or corrupt record")
            thread_id, delta = _parse(body)
        except (struct.error, ValueError, UnicodeDecodeError):
            break
        at += _FRAME.size + length
        if delta is None:
            owed.pop(thread_id, None)
        else:
            owed.setdefault(thread_id, Delta()).merge(delta)
    return Segment(prefix, owed, at, len(data) - at)


# -- the journal ---------------------------------------------------------------------------


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class Journal:
    """This process's segment in ``directory``, for savers with ``key_prefix``.

    The segment file is created on the first append (a journal that never saw an outage leaves
    no file behind) and removed by :meth:`close` once it owes nothing.
    """

    def __init__(
        self, directory: str | os.PathLike[str], key_prefix: str, *, fsync: bool = True
    ) -> None:
        self.directory = Path(directory)
        self.key_prefix = key_prefix
        self.fsync = fsync
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise FallbackJournalError(
                f"cannot create the fallback journal directory {self.directory}: {exc}"
            ) from exc
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise FallbackJournalError(
                f"the fallback journal directory {self.directory} is not writable"
            )
        tag = hashlib.sha256(key_prefix.encode()).hexdigest()[:12]
        self._pattern = f"{tag}.*{SUFFIX}"
        self.path = self.directory / f"{tag}.{os.getpid()}.{secrets.token_hex(4)}{SUFFIX}"
        self._fd: int | None = None
        self._end = 0  # bytes of the segment known good
        self._owed: set[str] = set()
        self._closed = False
        # Bytes appended and bytes known on disk, over the journal's life: one fdatasync makes
        # durable what every caller appended before it (group commit).
        self._appended = self._synced = 0
        self._failed: OSError | None = None
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # taken before _lock, never after
        self.corrupt_bytes = 0  # read past in adopted segments (torn or damaged tails)

    @property
    def owed(self) -> frozenset[str]:
        """Threads with journaled changes not yet marked written back."""
        return frozenset(self._owed)

    @property
    def appended(self) -> int:
        """Bytes appended so far (a position to compare, not a size)."""
        return self._appended

    # -- writing ---------------------------------------------------------------------------

    def append(self, thread_id: str, delta: Delta, *, sync: bool = True) -> None:
        """Journal one outage write; durable on return, or with ``sync=False`` once
        :meth:`sync` returns. FallbackJournalError if the disk refuses it (the record is cut off
        again: the journal stays readable)."""
        with self._lock:
            if self._failed is not None:
                raise self._failure("an earlier fdatasync failed", self._failed)
            self._write([_record(_CHANGE, thread_id, delta)])
            self._owed.add(thread_id)
        if sync:
            self.sync()

    def sync(self, upto: int | None = None) -> None:
        """Make everything appended so far (or the first ``upto`` bytes, an :attr:`appended`
        read earlier) durable. Callers that arrive while an fdatasync runs share the next one.
        After a failed fdatasync the kernel may have dropped what it was given, so every later
        append fails too."""
        with self._lock:
            wanted = self._appended if upto is None else upto
        if not self.fsync:
            return
        with self._sync_lock:
            if self._synced >= wanted:
                return
            with self._lock:
                fd, reached = self._fd, self._appended
                if self._failed is not None:
                    raise self._failure("an earlier fdatasync failed", self._failed)
            if fd is None:
                return
            try:
                os.fdatasync(fd)
            except OSError as exc:
                with self._lock:
                    self._failed = exc
                raise self._failure("fdatasync failed", exc) from exc
            self._synced = reached

    def unsynced(self, upto: int) -> bool:
        """Whether :meth:`sync` up to ``upto`` has an fdatasync to make (or an earlier failure
        to raise); a cheap check that lets a driver skip the hop to a worker thread."""
        return self.fsync and self._synced < upto

    def _failure(self, what: str, exc: OSError) -> FallbackJournalError:
        return FallbackJournalError(
            f"the fallback journal {self.path} could not be written ({what}: {exc}); outage "
            "writes fail until the saver is opened again"
        )

    def written_back(self, thread_ids: Iterable[str]) -> None:
        """These threads' journaled changes are in Redis. Not synced on its own: a lost done
        record only makes the next process write the same changes back again."""
        with self._lock:
            done = [t for t in thread_ids if t in self._owed]
            if not done:
                return
            try:
                self._write([_record(_DONE, t) for t in done])
            except FallbackJournalError:
                # Harmless but for a second write-back of the same changes after a crash.
                log.warning("marking %d threads written back in the journal failed", len(done))
                return
            self._owed.difference_update(done)
            if not (self._end > COMPACT_BYTES and self._owed):
                return
        with self._sync_lock, self._lock:
            if self._end > COMPACT_BYTES and self._owed and not self._closed:
                self._compact()

    def reset(self) -> None:
        """Everything journaled is in Redis: cut the segment back to its header."""
        with self._sync_lock, self._lock:
            self._owed.clear()
            header = len(_header(self.key_prefix))
            if self._fd is None or self._closed or self._end <= header:
                return
            try:
                os.ftruncate(self._fd, header)
                if self.fsync:
                    os.fdatasync(self._fd)
            except OSError:
                # Harmless: the done records already say it; the next reset tries again.
                log.exception("cutting back the fallback journal %s failed", self.path)
                return
            self._end = header
            self._synced = self._appended

    def close(self) -> None:
        """Release the segment: removed when it owes nothing, else kept (and unlocked) for the
        next saver opened on the directory to adopt."""
        with self._sync_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fd is None:
                return
            if not self._owed:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        if self._closed:
            raise ValueError(f"the fallback journal {self.path} is closed")
        if self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                header = _header(self.key_prefix)
                os.write(fd, header)
                os.fsync(fd)
                _fsync_directory(self.directory)  # the file itself survives a crash
            except BaseException:
                os.close(fd)
                self.path.unlink(missing_ok=True)
                raise
            self._fd, self._end = fd, len(header)
        return self._fd

    def _write(self, records: list[bytes]) -> None:
        try:
            fd = self._open()
            data = memoryview(b"".join(records))
            at = self._end
            while data:
                written = os.pwrite(fd, data, at)
                data, at = data[written:], at + written
        except OSError as exc:
            self._cut()
            raise FallbackJournalError(
                f"the fallback journal {self.path} could not be written: {exc}"
            ) from exc
        self._appended += at - self._end
        self._end = at

    def _cut(self) -> None:
        """Drop a partly written record, so later records follow good ones."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._end)
        except OSError:
            log.exception("cutting back the fallback journal %s failed", self.path)

    def _compact(self) -> None:
        """Rewrite the segment with only what it owes: a long outage with write-backs going on
        would otherwise grow it without bound."""
        assert self._fd is not None
        segment = _fold(os.pread(self._fd, self._end, 0), self.path)
        spare = self.path.with_suffix(".compacting")
        fd = os.open(spare, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # locked before it takes the segment's name
            data = _header(self.key_prefix) + b"".join(
                _record(_CHANGE, t, d) for t, d in segment.owed.items()
            )
            os.write(fd, data)
            os.fsync(fd)
            os.replace(spare, self.path)
            _fsync_directory(self.directory)
        except BaseException:
            os.close(fd)
            spare.unlink(missing_ok=True)
            log.exception("compacting the fallback journal %s failed", self.path)
            return
        os.close(self._fd)
        self._fd, self._end = fd, len(data)
        self._owed = set(segment.owed)
        self._synced = self._appended  # the new file was synced whole

    # -- adopting ----------------------------------------------------------------------------

    def adopt(self) -> dict[str, Delta]:
        """What the segments of processes that are gone owe Redis: copied into this journal's
        own segment (synced), then their files removed."""
        owed: dict[str, Delta] = {}
        with self._lock:
            held = []
            try:
                for path, fd in self._orphans():
                    held.append((path, fd))
                    data = b""
                    while chunk := os.read(fd, 1 << 20):
                        data += chunk
                    try:
                        segment = _fold(data, path)
                    except ValueError as exc:
                        log.warning("not adopting %s: %s", path, exc)
                        continue
                    if segment.key_prefix != self.key_prefix:
                        continue  # another prefix that happens to share the tag
                    if segment.bad_bytes:
                        self.corrupt_bytes += segment.bad_bytes
                        log.warning(
                            "the fallback journal %s ends in %d unreadable bytes (a record "
                            "torn by a crash, never acknowledged, or a damaged disk)",
                            path,
                            segment.bad_bytes,
                        )
                    for thread_id, delta in segment.owed.items():
                        owed.setdefault(thread_id, Delta()).merge(delta)
                if owed:
                    self._write([_record(_CHANGE, t, d) for t, d in owed.items()])
                    self._owed.update(owed)
                    if self.fsync:
                        os.fdatasync(self._open())  # before the segments it copies go
                    self._synced = self._appended
                for path, _ in held:
                    path.unlink(missing_ok=True)
                if held:
                    _fsync_directory(self.directory)
            finally:
                for _, fd in held:
                    os.close(fd)
        if owed:
            log.warning(
                "adopted %d threads from the fallback journal at %s: a process wrote them while "
                "Redis was away and ended before writing them back",
                len(owed),
                self.directory,
            )
        return owed

    def _orphans(self) -> Iterator[tuple[Path, int]]:
        """Segments (and stale compaction files) of this prefix whose owner is gone, locked."""
        for path in sorted(self.directory.glob(self._pattern)):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # adopted or closed meanwhile
            if not _try_lock(fd):
                os.close(fd)
                continue
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # compacted or removed between open and lock: not what the name holds
                os.close(fd)
                continue
            yield path, fd
        for spare in self.directory.glob(self._pattern.replace(SUFFIX, ".compacting")):
            fd = os.open(spare, os.O_RDONLY)
            if _try_lock(fd):
                spare.unlink(missing_ok=True)  # the segment it was made from is still whole
            os.close(fd)
