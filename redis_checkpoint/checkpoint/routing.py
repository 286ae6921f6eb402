"""Where each Call goes: Redis, or the in-memory tier while Redis is away (no I/O here).

:meth:`Router.run` drives one operation of the core: it routes each of its Calls, serves it from
memory while the breaker is open, writes back what the memory tier took once Redis returns, and
counts it all. It yields only :class:`Send` requests - "send this Call to Redis, give me the
replies or throw me the error" - so the sync and async savers are a ten-line loop each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from redis.exceptions import NoScriptError, ResponseError

from redis_checkpoint.breaker import CircuitBreaker
from redis_checkpoint.checkpoint.core import Call, Command, Emit, SaverCore
from redis_checkpoint.checkpoint.memory import MemoryTier
from redis_checkpoint.client import is_unavailable_error
from redis_checkpoint.errors import CorruptEntryError, RedisUnavailableError
from redis_checkpoint.metrics import Metrics

log = logging.getLogger("redis_checkpoint.checkpoint")
T = TypeVar("T")
COMPONENT = "checkpoint"


@dataclass
class Send:
    """A request to the driver: send ``call`` to Redis."""

    call: Call


class Route(Enum):
    REDIS = "redis"
    REPLAY_THEN_REDIS = "replay"
    MEMORY = "memory"


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

    # -- driving an operation ------------------------------------------------------------------

    def run(self, name: str, op: Generator[Call | Emit, Any, T]) -> Generator[Send | Emit, Any, T]:
        """Run ``op``; what it emits (list results) passes through to the driver."""
        start, fallback_before, outcome = time.perf_counter(), self.fallback_calls, "ok"
        try:
            item = next(op)
            while True:
                if isinstance(item, Emit):
                    yield item
                    item = op.send(None)
                else:
                    item = op.send((yield from self._execute(item)))
        except StopIteration as stop:
            if name == "get_tuple":
                found = stop.value is not None
                self.metrics.lookups(COMPONENT, name, int(found), int(not found))
            return stop.value  # type: ignore[no-any-return]
        except BaseException:
            outcome = "error"
            raise
        finally:
            if outcome == "ok" and self.fallback_calls != fallback_before:
                outcome = "fallback"
            self.metrics.observe_operation(name, time.perf_counter() - start, outcome)

    def _execute(self, call: Call) -> Generator[Send, Any, list[Any]]:
        route = self.route()
        if route is Route.REPLAY_THEN_REDIS and not (yield from self._replay()):
            route = Route.MEMORY
        if route is Route.MEMORY:
            return self.in_memory(call)
        try:
            replies: list[Any] = yield Send(call)
        except Exception as exc:
            if self.failed(exc):
                return self.in_memory(call, exc)
            raise
        self.succeeded(call, replies)
        return replies

    def _replay(self) -> Generator[Send, Any, bool]:
        """Write back the threads the memory tier took during the outage; False if Redis fails."""
        assert self.memory is not None
        plan = []
        for thread_id, deleted, members, pairs in self.memory.take_dirty():
            op = self.core.restore(
                thread_id, members, pairs, replace=deleted, kind="admin", register=True
            )
            plan.append((thread_id, deleted, next(op)))
        done = 0
        try:
            for _, _, call in plan:
                yield Send(call)
                done += 1
                self.metrics.replayed(COMPONENT, 1)
        except Exception as exc:
            if not self.failed(exc):
                log.error("writing back the in-memory threads failed; will retry: %r", exc)
            for thread_id, deleted, _ in plan[done:]:
                self.memory.restore_dirty(thread_id, deleted)
            return False
        finally:
            self._replaying = False
            self._publish()
        self.breaker.record_success()
        log.warning("wrote back %d threads taken in memory during the outage", len(plan))
        return True

    def probe(self) -> Generator[Send, Any, bool]:
        """A health check: PING Redis through the saver's own client whatever the breaker says.

        An answer closes the breaker and writes back what the memory tier took (the same replay
        the next call would do); a connection error counts as a failure. True when Redis
        answered and nothing is left to write back.
        """
        try:
            yield Send(Call([Command("PING", (), (), False)], "admin"))
        except Exception as exc:
            self.failed(exc)
            return False
        if self.breaker.state != "closed":
            self.breaker.record_success()
            log.warning("Redis at %s is reachable again (health check)", self.url)
            self._publish()
        if self.memory is None or not self.memory.pending:
            return True
        with self._lock:
            if self._replaying:
                return False  # a caller is writing the tier back right now
            self._replaying = True
        return (yield from self._replay())

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

    def sent(self, calls: Sequence[Call]) -> None:
        """One round trip carrying these Calls."""
        self.round_trips += 1
        for call in calls:
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

    def batch(
        self, calls: Sequence[Call]
    ) -> Generator[list[Command] | None, Any, list[list[Any] | Exception]]:
        """One round trip for several Calls: yields the commands to send (the driver sends back
        their replies), or None to have the scripts loaded after a NOSCRIPT. Returns, per Call,
        its replies or the error it raised."""
        self.sent(calls)
        replies = yield [command for call in calls for command in call.commands]
        results, retry = self.split_replies(calls, replies)
        if retry:
            yield None
            again_calls = [calls[i] for i in retry]
            self.sent(again_calls)
            replies = yield [command for call in again_calls for command in call.commands]
            again, _ = self.split_replies(again_calls, replies)
            for i, result in zip(retry, again, strict=True):
                results[i] = result
        return results

    def split_replies(
        self, calls: Sequence[Call], replies: Sequence[Any]
    ) -> tuple[list[list[Any] | Exception], list[int]]:
        """A batch's replies per Call (or the error it raised), and the Calls to send again
        once the scripts are loaded."""
        results: list[list[Any] | Exception] = []
        retry: list[int] = []
        start = 0
        for call in calls:
            own = list(replies[start : start + len(call.commands)])
            start += len(call.commands)
            try:
                if not self.check_replies(call, own):
                    retry.append(len(results))
                    own_result: list[Any] | Exception = NoScriptError("scripts did not load")
                else:
                    own_result = own
            except Exception as exc:
                own_result = exc
            results.append(own_result)
        return results, retry

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

    def _publish(self) -> None:
        active = self.breaker.state != "closed"
        pending = self.memory.pending if self.memory is not None else 0
        self.metrics.set_fallback(COMPONENT, active, pending)
