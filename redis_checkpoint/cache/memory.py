"""The in-memory tier that answers while Redis is unavailable: a bounded LRU with TTLs.

It only ever holds what was written during an outage and is emptied when Redis answers again:
entries mirrored earlier could have been invalidated by another process meanwhile, and a cache
that serves a stale answer is worse than one that misses.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["MemoryTier"]


@dataclass
class _Entry:
    payload: bytes
    expires_at: float | None
    base: str
    tag_keys: tuple[str, ...]


class MemoryTier:
    """Thread-safe LRU of ``redis key -> payload`` bounded by entries and bytes."""

    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("the memory tier needs max_entries >= 1 and max_bytes >= 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._tags: dict[str, set[str]] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def bytes_by_base(self) -> dict[str, int]:
        """Payload bytes held per namespace base (see :meth:`KeyLayout.base`)."""
        sizes: dict[str, int] = {}
        with self._lock:
            for entry in self._entries.values():
                sizes[entry.base] = sizes.get(entry.base, 0) + len(entry.payload)
        return sizes

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        found: list[bytes | None] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
                    self._drop(key)
                    entry = None
                if entry is not None:
                    self._entries.move_to_end(key)
                found.append(None if entry is None else entry.payload)
        return found

    def set(
        self, key: str, payload: bytes, ttl: float | None, base: str, tag_keys: Iterable[str] = ()
    ) -> None:
        if len(payload) > self.max_bytes:
            return
        expires_at = None if ttl is None else self._clock() + ttl
        tags = tuple(tag_keys)
        with self._lock:
            self._drop(key)
            self._entries[key] = _Entry(payload, expires_at, base, tags)
            self._bytes += len(payload)
            for tag in tags:
                self._tags.setdefault(tag, set()).add(key)
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def delete(self, keys: Iterable[str]) -> int:
        with self._lock:
            return sum(self._drop(key) for key in keys)

    def invalidate_tag(self, tag_key: str) -> int:
        with self._lock:
            return sum(self._drop(key) for key in list(self._tags.pop(tag_key, ())))

    def clear_namespace(self, base: str) -> int:
        with self._lock:
            doomed = [key for key, entry in self._entries.items() if entry.base == base]
            return sum(self._drop(key) for key in doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._tags.clear()
            self._bytes = 0

    def _drop(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._bytes -= len(entry.payload)
        for tag in entry.tag_keys:
            members = self._tags.get(tag)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._tags[tag]
        return True
