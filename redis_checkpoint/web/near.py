"""An optional near cache: entries this process read from Redis, reused for a short while.

A hit on Redis costs one round trip on redis.asyncio, which is several times the whole cost of a
trivial endpoint. With ``local_ttl`` > 0 the middleware keeps what it read for that many seconds
(never past the response's own freshness), bounded in entries and bytes, least recently used
out first.

Other processes' writes reach it over one pub/sub channel (:class:`Invalidations`): a process
that invalidates after a write publishes, and every other process empties its near cache when
the message arrives (on loopback, well under a millisecond after the write's invalidation). A
process whose subscription is down cannot hear them, so it uses no near cache until it has
subscribed again. An unsafe request handled by this process empties this process's near cache
at once, so a client never reads its own write stale from the process that made it. On a client
without pub/sub (redis.asyncio's cluster client) the near cache falls back to ``local_ttl``:
another process's write is then seen within that many seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from redis_checkpoint.client import describe_client
from redis_checkpoint.failures import access_error
from redis_checkpoint.web.entry import StoredResponse, VaryMarker

__all__ = ["Invalidations", "NearCache"]

log = logging.getLogger("redis_checkpoint.web")

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


class Invalidations:
    """One pub/sub channel that empties every other process's near cache after a write."""

    def __init__(self, near: NearCache | None, channel: str) -> None:
        self.near = near
        self.channel = channel
        self.origin = os.urandom(8).hex().encode()  # our own messages are not news to us
        self.listening = False
        self.supported = True
        self._task: asyncio.Task[None] | None = None

    @property
    def usable(self) -> bool:
        """The near cache may serve: other processes' writes reach it, or cannot (no pub/sub)."""
        return self.listening or not self.supported

    def start(self, client: Any) -> None:
        """Subscribe in the background (once; call from the event loop that serves requests)."""
        if self._task is not None or not self.supported or self.near is None:
            return
        if not callable(getattr(client, "pubsub", None)):
            self.supported = False
            log.warning("this Redis client has no pub/sub: the near cache is bounded by its TTL")
            return
        self._task = asyncio.get_running_loop().create_task(self._listen(client))

    async def publish(self, client: Any) -> None:
        await client.publish(self.channel, self.origin)

    async def _listen(self, client: Any) -> None:
        near = self.near
        assert near is not None
        delay = 0.05
        refused = False  # said once: retrying every few seconds must not flood the log
        while True:
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        # What was read before we could hear invalidations may be stale.
                        near.clear()
                        self.listening = True
                        delay = 0.05
                    elif message["type"] == "message" and message["data"] != self.origin:
                        near.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                denied = access_error(exc, describe_client(client))
                if denied is not None and not refused:
                    # Not an outage, and not heard otherwise: the near cache just stays off.
                    log.error("near cache off until pub/sub is allowed: %s", denied)
                    refused = True
                elif self.listening:
                    log.warning("near-cache invalidations unsubscribed (%r); retrying", exc)
            finally:
                self.listening = False
                near.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
