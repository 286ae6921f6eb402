"""An optional near cache: entries this process read from Redis, reused for a short while.

A hit on Redis costs one round trip on redis.asyncio, which is several times the whole cost of a
trivial endpoint. With ``local_ttl`` > 0 the middleware keeps what it read for that many seconds
(never past the response's own freshness), bounded in entries and bytes, least recently used
out first. The price is bounded staleness across processes: an invalidation made in another
process reaches this one's near cache only when its copy ages out (at most ``local_ttl``
seconds). An unsafe request handled by this process empties this process's near cache at once,
so a client never reads its own write stale from the process that made it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from redis_checkpoint.web.entry import StoredResponse, VaryMarker

__all__ = ["NearCache"]

Entry = StoredResponse | VaryMarker


class NearCache:
    def __init__(
        self,
        ttl: float,
        max_entries: int = 1024,
        max_bytes: int = 32 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl > 0 or max_entries < 1 or max_bytes < 1:
            raise ValueError("local_ttl must be > 0, and the near cache's bounds >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, int, Entry]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return found[2]

    def put(self, key: str, entry: Entry) -> None:
        size = len(entry.body) if isinstance(entry, StoredResponse) else 64
        if size > self.max_bytes:
            return
        self._drop(key)
        self._entries[key] = (self._clock() + self.ttl, size, entry)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self._bytes -= found[1]
