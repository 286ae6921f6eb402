"""Where each Call goes: Redis, or the in-memory tier while Redis is away (no I/O here).

The sync and async savers ask :meth:`Router.route` before a Call, report how Redis answered,
and run :meth:`Router.replay_plan`'s Calls to write back what the tier took meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from redis_checkpoint.breaker import CircuitBreaker
from redis_checkpoint.checkpoint.core import Call, SaverCore
from redis_checkpoint.checkpoint.memory import MemoryTier
from redis_checkpoint.client import is_unavailable_error
from redis_checkpoint.errors import CorruptEntryError, RedisUnavailableError
from redis_checkpoint.metrics import Metrics

log = logging.getLogger("redis_checkpoint.checkpoint")
COMPONENT = "checkpoint"


class Route(Enum):
    REDIS = "redis"
    REPLAY_THEN_REDIS = "replay"
    MEMORY = "memory"


@dataclass
class ReplayItem:
    thread_id: str
    deleted: bool
    call: Call


class Router:
    def __init__(
        self,
        core: SaverCore,
        breaker: CircuitBreaker,
        memory: MemoryTier | None,
        metrics: Metrics,
        url: str,
    ) -> None:
        self.core = core
        self.breaker = breaker
        self.memory = memory
        self.metrics = metrics
        self.url = url
        self.round_trips = 0
        self.fallback_calls = 0
        self._replaying = False
        self._lock = threading.Lock()

    # -- deciding ------------------------------------------------------------------------------

    def route(self) -> Route:
        if self._replaying:
            # Another caller is writing the tier back: Redis may still lack its threads.
            return Route.MEMORY if self.memory is not None else Route.REDIS
        if not self.breaker.allow_request():
            return Route.MEMORY
        if self.memory is not None and self.memory.pending:
            with self._lock:
                if self._replaying:
                    return Route.MEMORY
                self._replaying = True
            return Route.REPLAY_THEN_REDIS
        return Route.REDIS

    # -- reporting -----------------------------------------------------------------------------

    def sent(self, call: Call) -> None:
        self.round_trips += 1
        for command in call.commands:
            self.metrics.round_trip(COMPONENT, command.name)

    def succeeded(self, call: Call, replies: Sequence[Any]) -> None:
        was_open = self.breaker.state != "closed"
        self.breaker.record_success()
        if was_open:
            log.warning("Redis at %s is reachable again", self.url)
            self._publish()
        if self.memory is not None:
            self.memory.mirror(call, replies)

    def failed(self, exc: BaseException) -> bool:
        """Count a failure; True when it means 'Redis is away' and the tier should answer."""
        if not is_unavailable_error(exc):
            return False
        before = self.breaker.state
        self.breaker.record_failure()
        if before == "closed" and self.breaker.state == "open":
            log.warning("Redis at %s is unavailable (%s); serving from memory", self.url, exc)
        self._publish()
        return True

    def in_memory(self, call: Call, cause: BaseException | None = None) -> list[Any]:
        if self.memory is None or call.kind == "admin":
            raise RedisUnavailableError(
                f"Redis at {self.url} is unavailable"
                + ("" if self.memory is None else " and this operation spans threads")
            ) from cause
        self.fallback_calls += 1
        replies = self.memory.execute(call, outage=True)
        self._publish()
        return replies

    def check_replies(self, call: Call, replies: Sequence[Any]) -> bool:
        """Raise script errors; False when a script must be loaded and the Call sent again."""
        retry = False
        for command, reply in zip(call.commands, replies, strict=True):
            if isinstance(reply, NoScriptError):
                retry = True
            elif isinstance(reply, ResponseError):
                raise self.translate(reply, command.keys) from reply
            elif isinstance(reply, Exception):
                raise reply
        return not retry

    def translate(self, exc: ResponseError, keys: Sequence[str]) -> Exception:
        message = str(exc)
        if "CORRUPT" in message:
            detail = message[message.index("CORRUPT") :].split(" script:")[0]
            return CorruptEntryError(keys[-1] if keys else "?", detail)
        return exc

    # -- write-back after an outage ------------------------------------------------------------

    def replay_plan(self) -> list[ReplayItem]:
        assert self.memory is not None
        items = []
        for thread_id, deleted, members, pairs in self.memory.take_dirty():
            op = self.core.restore(
                thread_id, members, pairs, replace=deleted, kind="admin", register=True
            )
            items.append(ReplayItem(thread_id, deleted, next(op)))
        return items

    def replay_done(self, item: ReplayItem) -> None:
        self.metrics.replayed(COMPONENT, 1)

    def replay_finished(self, leftover: Sequence[ReplayItem]) -> None:
        assert self.memory is not None
        for item in leftover:
            self.memory.restore_dirty(item.thread_id, item.deleted)
        self._replaying = False
        if not leftover:
            log.warning("wrote back the checkpoints taken in memory during the outage")
        self._publish()

    def _publish(self) -> None:
        active = self.breaker.state != "closed"
        pending = self.memory.pending if self.memory is not None else 0
        self.metrics.set_fallback(COMPONENT, active, pending)
