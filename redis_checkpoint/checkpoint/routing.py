"""Where each Call goes: Redis, or the in-memory tier while its shard is away (no I/O here).

A call's path goes one way: the face (``saver.py``, ``aio.py``) hands the core's plan to
:meth:`Router.run`; the router sends each Call through the driver to Redis, or runs it on the
in-memory tier while its shard is away; the replies go back to the plan. The router alone decides
about the tier: it routes each Call to the shard that holds its thread (the one server, or the
cluster node of its hash slot, found by the ``locate`` it is built with), serves it from memory
while that shard's breaker is open, writes a thread back before the first call that takes it to
Redis again, and counts it all. It yields only requests to the driver (steps of ``steps.py``):
:class:`Dispatch` ("send these Calls, give me each one's replies or error"), :class:`Refresh`
("reread the cluster's slot map"), :class:`AwaitWriteBack`, :class:`SyncJournal` ("make the
outage journal durable this far": an outage write is acknowledged only after it) and
:class:`Sleep`; and per batch on a shard's held connection (:meth:`Router.batch`), its commands,
or :class:`LoadScripts` after a NOSCRIPT. What a driver must know of the tier it asks the router
(:meth:`Router.when_written_back`, :meth:`Router.may_reopen`, :attr:`Router.owes`), so the sync
and async savers are a short loop each.

Write-backs go thread by thread: a thread is taken from the tier (nobody else may write it back
or send it to Redis meanwhile; a call for it goes to memory), written, and released. Other
threads carry on against Redis, so nothing re-dirties a thread in a loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.exceptions import AskError, MovedError, NoScriptError, ResponseError

from redis_checkpoint.breaker import CircuitBreaker
from redis_checkpoint.checkpoint.core import SaverCore
from redis_checkpoint.checkpoint.journal import Delta
from redis_checkpoint.checkpoint.memory import BUSY, OwedBudgetReached, ThreadMemoryTier
from redis_checkpoint.checkpoint.scripts import SCRIPTS
from redis_checkpoint.errors import CorruptEntryError, RedisUnavailableError
from redis_checkpoint.failures import access_error, is_unavailable_error
from redis_checkpoint.metrics import Metrics
from redis_checkpoint.steps import (
    AwaitWriteBack,
    Call,
    Command,
    Dispatch,
    Emit,
    LoadScripts,
    Refresh,
    Sleep,
    SyncJournal,
)

log = logging.getLogger("redis_checkpoint.checkpoint")
T = TypeVar("T")
COMPONENT = "checkpoint"
#: Threads a call that reached Redis writes back on the way, besides its own: the write-back
#: of an outage spreads over the calls after it instead of stalling one of them.
WRITE_BACK_CHUNK = 32
_PING = Command("PING", (), (), False)
_LOAD_SCRIPTS = LoadScripts(tuple(SCRIPTS.values()))


@dataclass(eq=False)
class Shard:
    """One primary the saver talks to, with its own breaker: an outage of one cluster node
    sends only the threads whose slots it serves to memory."""

    name: str
    breaker: CircuitBreaker
    # No WAIT before this (monotonic) time: the last one fell short, and each would block.
    wait_paused_until: float = 0.0


Step = Dispatch | Refresh | Sleep | AwaitWriteBack | SyncJournal


@dataclass
class WriteBackReport:
    """What closing a saver (or a flush) left in memory."""

    left: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)


class Router:
    """Takes each Call of a plan to its shard, or to the in-memory tier (see above)."""

    def __init__(
        self,
        core: SaverCore,
        breaker: CircuitBreaker,
        memory: ThreadMemoryTier | None,
        metrics: Metrics,
        url: str,
        *,
        locate: Callable[[str], str] | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 0.1,
    ) -> None:
        self.core = core
        self.default = Shard("redis", breaker)
        self.shards: dict[str, Shard] = {}
        self.memory = memory
        self.metrics = metrics
        self.url = url
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = max(1, int(wait_timeout * 1000))
        #: On a cluster: the map from a key to the name of the node serving its slot.
        self.locate = locate
        self.round_trips = 0
        self.fallback_calls = 0
        self.write_backs = 0  # threads written back (one restore each)
        self.threads_written_back: set[str] = set()  # since the tier last owed nothing
        self.replication_shortfalls = 0
        self._flushing = False
        self._refreshing = False
        self._last_refresh = 0.0
        self._lock = threading.Lock()

    # -- shards --------------------------------------------------------------------------------

    def shard_for(self, key: str) -> Shard:
        if self.locate is None:
            return self.default
        try:
            name = self.locate(key)
        except Exception:  # slot not covered (a node is gone and the map says so)
            name = "?"
        shard = self.shards.get(name)
        if shard is None:
            with self._lock:
                shard = self.shards.get(name)
                if shard is None:
                    template = self.default.breaker
                    shard = self.shards[name] = Shard(
                        name,
                        CircuitBreaker(
                            f"{template.name}@{name}",
                            failure_threshold=template.failure_threshold,
                            recovery_timeout=template.recovery_timeout,
                            max_recovery_timeout=template.max_recovery_timeout,
                            clock=template._clock,
                            on_transition=template._on_transition,
                        ),
                    )
        return shard

    def _shard_of(self, call: Call) -> Shard:
        return self.shard_for(call.commands[0].keys[0] if call.commands[0].keys else "")

    def _shard_of_thread(self, thread_id: str) -> Shard:
        return self.shard_for(self.core.keys(thread_id).idx)

    def all_shards(self) -> list[Shard]:
        return list(self.shards.values()) if self.locate is not None else [self.default]

    @property
    def breaker_state(self) -> str:
        """The worst state among the shards' breakers."""
        states = {shard.breaker.state for shard in self.all_shards()}
        for state in ("open", "half_open"):
            if state in states:
                return state
        return "closed"

    def _refresh_due(self) -> bool:
        """One slot-map refresh at a time, at most once per breaker recovery timeout."""
        if self.locate is None:
            return False
        with self._lock:
            now = time.monotonic()
            if self._refreshing or now - self._last_refresh < self.default.breaker.recovery_timeout:
                return False
            self._refreshing = True
            self._last_refresh = now
            return True

    def _refresh(self) -> Generator[Step, Any, None]:
        try:
            yield Refresh()
        except Exception as exc:  # no node answered: route by the map we have
            log.debug("refreshing the cluster slot map failed: %r", exc)
        finally:
            with self._lock:
                self._refreshing = False

    # -- driving an operation ------------------------------------------------------------------

    def run(self, name: str, op: Generator[Call | Emit, Any, T]) -> Generator[Step | Emit, Any, T]:
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

    def _execute(self, call: Call) -> Generator[Step, Any, list[Any]]:
        shard = self._shard_of(call)
        if shard.breaker.state != "closed" and self._refresh_due():
            yield from self._refresh()  # the slot may have moved to a promoted replica
            shard = self._shard_of(call)
        while not shard.breaker.allow_request():
            if not (yield from self._await_write_back(call)):
                return (yield from self.in_memory(call))
            shard = self._shard_of(call)  # its outcome closed the breaker, or opened it again
        memory = self.memory
        if memory is not None and memory.owes:
            if call.thread_id is None:
                # Spans threads: Redis must hold every thread first.
                yield from self.write_back(limit=None)
            else:
                owed = memory.take(call.thread_id)
                while owed is BUSY:
                    # Its write-back is in flight: Redis lacks the thread until it is answered,
                    # and serving it from memory meanwhile would owe it once more.
                    yield AwaitWriteBack(call.thread_id)
                    owed = memory.take(call.thread_id)
                if isinstance(owed, Delta):
                    errors = yield from self._write_back_batch([(call.thread_id, owed)])
                    if errors:
                        if is_unavailable_error(errors[0]):
                            return (yield from self.in_memory(call, errors[0]))
                        raise self.refusal(errors[0])
        for attempt in (0, 1):
            result = (yield from self._send_calls([(call, shard)]))[0]
            if isinstance(result, (MovedError, AskError)) and attempt == 0:
                # The slot moved (a failover, a reshard): reread the map and go there.
                yield from self._refresh()
                shard = self._shard_of(call)
                continue
            break
        if isinstance(result, Exception):
            if self.failed(shard, result):
                return (yield from self.in_memory(call, result))
            raise self.refusal(result)
        self.succeeded(shard, call, result)
        if memory is not None and memory.dirty and not self._flushing:
            yield from self.write_back(limit=WRITE_BACK_CHUNK)
        return result

    def when_written_back(self, thread_id: str, callback: Callable[[], None]) -> bool:
        """For a driver's :class:`AwaitWriteBack`: call ``callback`` (from whichever thread)
        once the thread's write-back in flight is answered; False (and no call) when none is."""
        memory = self.memory
        return memory is not None and memory.when_written_back(thread_id, callback)

    def _await_write_back(self, call: Call) -> Generator[Step, Any, bool]:
        """A call the breaker turns away while its thread's write-back is in flight (the
        breaker's probe took it): wait for that to be answered; True when there was one.
        Served from memory meanwhile, the call would owe the thread again, and the outage would
        write it back twice (LangGraph sends a thread's writes concurrently)."""
        memory = self.memory
        if memory is None or call.thread_id is None or not memory.owes:
            return False
        return bool((yield AwaitWriteBack(call.thread_id)))

    # -- writing back --------------------------------------------------------------------------

    @property
    def owes(self) -> bool:
        """Whether the in-memory tier holds threads still to be written back to Redis."""
        return self.memory is not None and self.memory.owes

    def write_back(self, limit: int | None, force: bool = False) -> Generator[Step, Any, None]:
        """Write back owed threads whose shard answers (all shards with ``force``), in round
        trips of WRITE_BACK_CHUNK threads; ``limit``: at most that many threads in all."""
        memory = self.memory
        if memory is None:
            return
        with self._lock:
            if self._flushing:
                return
            self._flushing = True
        tried: set[str] = set()  # once per flush: a failed thread is owed again, not retaken

        def accept(thread_id: str) -> bool:
            if thread_id in tried:
                return False
            return force or self._shard_of_thread(thread_id).breaker.state == "closed"

        try:
            while limit is None or len(tried) < limit:
                left = WRITE_BACK_CHUNK if limit is None else limit - len(tried)
                taken = memory.take_many(min(WRITE_BACK_CHUNK, left), accept)
                if not taken:
                    break
                tried.update(thread_id for thread_id, _ in taken)
                yield from self._write_back_batch(taken)
        finally:
            with self._lock:
                self._flushing = False

    def _write_back_batch(
        self, taken: Sequence[tuple[str, Delta]]
    ) -> Generator[Step, Any, list[Exception]]:
        """Send the taken threads' restores (one round trip per shard); each thread is released
        as written, or owed again. Returns the errors."""
        assert self.memory is not None
        items = []
        for thread_id, payload in taken:
            op = self.core.restore(
                thread_id,
                sorted(payload.members),
                [part for pair in payload.fields.items() for part in pair],
                replace=payload.cleared,
                kind="admin",
                register=True,
                removed=sorted(payload.removed),
            )
            call = next(op)
            items.append((call, self._shard_of(call)))
        try:
            results = yield from self._send_calls(items)
        except BaseException:
            for thread_id, _ in taken:
                self.memory.written_back(thread_id, ok=False)
            raise
        errors: list[Exception] = []
        failed: set[str] = set()
        for (thread_id, _), (_, shard), result in zip(taken, items, results, strict=True):
            if isinstance(result, Exception):
                errors.append(result)
                if shard.name not in failed:
                    failed.add(shard.name)
                    if not self.failed(shard, result):
                        log.error("writing back thread %r failed: %r", thread_id, result)
                self.memory.written_back(thread_id, ok=False)
                continue
            self.succeeded(shard, None, result)
            self.write_backs += 1
            self.threads_written_back.add(thread_id)
            self.metrics.replayed(COMPONENT, 1)
            self.memory.written_back(thread_id, ok=True)
        if not self.memory.owes and self.threads_written_back:
            log.warning(
                "wrote back %d threads taken in memory while Redis at %s was away "
                "(%d write-backs in all)",
                len(self.threads_written_back),
                self.url,
                self.write_backs,
            )
            self.threads_written_back = set()
        self._publish()
        return errors

    def close(self, timeout: float) -> Generator[Step, Any, WriteBackReport]:
        """Write back everything owed, trying every shard whatever its breaker says, until done
        or ``timeout`` seconds have passed (a failover may need a few); report what is left."""
        report = WriteBackReport()
        memory = self.memory
        if memory is None:
            return report
        deadline = time.monotonic() + timeout
        while memory.owes:
            if self.locate is not None:
                yield from self._refresh()
            yield from self.write_back(limit=None, force=True)
            remaining = deadline - time.monotonic()
            if not memory.owes or remaining <= 0:
                break
            yield Sleep(min(0.2, remaining))
        report.left = memory.owed_threads()
        report.unconfirmed = memory.unconfirmed_threads()
        return report

    def probe(self) -> Generator[Step, Any, bool]:
        """A health check: PING every shard through the saver's own connections whatever the
        breakers say. An answer closes a breaker and writes back what the tier owes that shard;
        True when every shard answered and nothing is owed."""
        if self.locate is not None:
            yield from self._refresh()
        shards = self.all_shards() or [self.default]
        results = yield Dispatch([(Call([_PING], "admin"), shard) for shard in shards])
        answered = True
        for shard, result in zip(shards, results, strict=True):
            if isinstance(result, Exception):
                if not self.failed(shard, result):
                    raise self.refusal(result)
                answered = False
            elif shard.breaker.state != "closed":
                self.succeeded(shard, None, result)
                log.warning("Redis at %s is reachable again (health check)", self.url)
        yield from self.write_back(limit=None)
        return answered and not (self.memory is not None and self.memory.owes)

    # -- reporting -----------------------------------------------------------------------------

    def sent(self, calls: Sequence[Call]) -> None:
        """One round trip carrying these Calls."""
        self.round_trips += 1
        for call in calls:
            for command in call.commands:
                self.metrics.round_trip(COMPONENT, command.name)

    def succeeded(self, shard: Shard, call: Call | None, replies: Sequence[Any]) -> None:
        breaker = shard.breaker
        if breaker.state != "closed":
            breaker.record_success()
            log.warning("Redis at %s (%s) is reachable again", self.url, shard.name)
            self._publish()
        else:
            breaker.record_success()
        if call is not None and self.memory is not None:
            self.memory.mirror(call, replies)

    def failed(self, shard: Shard, exc: BaseException) -> bool:
        """Count a failure; True when it means 'Redis is away' and the tier should answer."""
        if not is_unavailable_error(exc):
            return False
        breaker = shard.breaker
        before = breaker.state
        breaker.record_failure()
        if before == "closed" and breaker.state == "open":
            log.warning(
                "Redis at %s (%s) is unavailable (%s); serving from memory",
                self.url,
                shard.name,
                exc,
            )
        if self.memory is not None:
            self.memory.shard_failed(shard.name)
        self._publish()
        return True

    def setup_failed(self, exc: Exception) -> None:
        """A driver's setup could not reach Redis: start on the in-memory tier if Redis is away,
        else raise (a refused password or ACL as RedisAuthError)."""
        if is_unavailable_error(exc) and self.memory is not None:
            self.failed(self.default, exc)
            return
        denied = self.refusal(exc)
        if denied is exc:
            raise exc
        raise denied from exc

    def refusal(self, exc: Exception) -> Exception:
        """What to raise for an error that is not an outage: Redis refusing the password or the
        ACL as a RedisAuthError naming the cause, anything else as it is."""
        denied = access_error(exc, self.url)
        if denied is None or denied is exc:
            return exc
        denied.__cause__ = exc
        return denied

    def in_memory(
        self, call: Call, cause: BaseException | None = None
    ) -> Generator[Step, Any, list[Any]]:
        """Serve a Call from the tier; a write it journaled is acknowledged once
        :class:`SyncJournal` has made it durable."""
        memory = self.memory
        if memory is None or call.kind == "admin":
            raise RedisUnavailableError(
                f"Redis at {self.url} is unavailable"
                + ("" if memory is None else " and this operation spans threads")
            ) from cause
        self.fallback_calls += 1
        try:
            replies, upto = memory.execute_unsynced(call, outage=True)
        except OwedBudgetReached as exc:
            self.metrics.refused(COMPONENT)
            raise RedisUnavailableError(f"Redis at {self.url} is unavailable, and {exc}") from exc
        self._publish()
        if upto and memory.journal is not None and memory.journal.unsynced(upto):
            yield SyncJournal(memory.journal, upto)
        return replies

    # -- one round trip ------------------------------------------------------------------------

    def may_reopen(self, shard: Shard) -> bool:
        """Whether a driver may send again on a new connection after the shard's held one
        dropped. A reopened connection may reach another server (a restarted or promoted
        primary): not silently while writes of this shard wait for replicas to confirm them."""
        memory = self.memory
        return memory is None or not memory.holds_unconfirmed(shard.name)

    def _send_calls(
        self, items: list[tuple[Call, Shard]]
    ) -> Generator[Step, Any, list[list[Any] | Exception]]:
        """Send Calls in one go, each to its shard. On a cluster a Call's commands on other
        slots (the thread registry) go to their own node: for a thread's Call those are best
        effort (its next write registers it again), for a Call spanning threads they are not."""
        if self.locate is None:
            return list((yield Dispatch(items)))
        parts: list[tuple[Call, Shard]] = []
        plan: list[list[tuple[int, list[int], bool]]] = []  # per Call: (part, positions, own)
        for call, shard in items:
            groups: dict[str, tuple[Shard, list[int]]] = {}
            for i, command in enumerate(call.commands):
                target = self.shard_for(command.keys[0]) if command.keys else shard
                groups.setdefault(target.name, (target, []))[1].append(i)
            pieces = []
            for name, (target, positions) in groups.items():
                own = name == shard.name
                if not own and call.thread_id is not None and target.breaker.state != "closed":
                    # Best effort to a node that is away: not worth waiting on.
                    self.core.known.forget_registration(call.thread_id)
                    continue
                part = (
                    call
                    if len(groups) == 1
                    else Call(
                        [call.commands[i] for i in positions],
                        call.kind if own else "admin",
                        call.thread_id if own else None,
                    )
                )
                pieces.append((len(parts), positions, own))
                parts.append((part, target))
            plan.append(pieces)
        results = yield Dispatch(parts)
        out: list[list[Any] | Exception] = []
        for (call, _), pieces in zip(items, plan, strict=True):
            replies: list[Any] = [None] * len(call.commands)
            outcome: list[Any] | Exception = replies
            for index, positions, own in pieces:
                result = results[index]
                if isinstance(result, Exception):
                    if own or call.thread_id is None or isinstance(result, (MovedError, AskError)):
                        outcome = result
                        break
                    # A registry update on another node: redone by the thread's next write.
                    self.failed(parts[index][1], result)
                    self.core.known.forget_registration(call.thread_id)
                    continue
                for i, reply in zip(positions, result, strict=True):
                    replies[i] = reply
            out.append(outcome)
        return out

    def batch(
        self, calls: Sequence[Call], shard: Shard
    ) -> Generator[list[Command] | LoadScripts, Any, list[list[Any] | Exception]]:
        """One round trip to ``shard`` for several Calls: yields the commands to send on the
        shard's held connection (the driver sends back their replies), or :class:`LoadScripts`
        to have the scripts loaded on it after a NOSCRIPT. Returns, per Call, its replies or the
        error it raised. With ``wait_replicas``, a round trip that writes ends with a WAIT; a
        shortfall keeps its threads in memory."""
        results, retry = yield from self._exchange(calls, shard)
        if retry:
            yield _LOAD_SCRIPTS
            again_calls = [calls[i] for i in retry]
            again, _ = yield from self._exchange(again_calls, shard)
            for i, result in zip(retry, again, strict=True):
                results[i] = result
        return results

    def _exchange(
        self, calls: Sequence[Call], shard: Shard
    ) -> Generator[list[Command], Any, tuple[list[list[Any] | Exception], list[int]]]:
        self.sent(calls)
        commands = [command for call in calls for command in call.commands]
        writes = [c.thread_id for c in calls if c.kind != "read" and c.thread_id is not None]
        wait = bool(self.wait_replicas and writes)
        skip_wait = wait and time.monotonic() < shard.wait_paused_until
        if wait and not skip_wait:
            commands.append(Command("WAIT", (), (self.wait_replicas, self.wait_timeout_ms), False))
        replies = yield commands
        if wait:
            acked = -1 if skip_wait else replies.pop()
            self._replicated(shard, writes, acked)
        return self.split_replies(calls, replies)

    def _replicated(self, shard: Shard, thread_ids: list[str], acked: Any) -> None:
        if isinstance(acked, int) and acked >= self.wait_replicas:
            if self.memory is not None:
                self.memory.confirmed(shard.name)
            return
        self.replication_shortfalls += 1
        if acked != -1:
            # WAIT blocks for its timeout while replicas lag: don't pay that on every write.
            shard.wait_paused_until = time.monotonic() + self.default.breaker.recovery_timeout
            log.warning(
                "Redis at %s (%s): %s of %d replicas confirmed a write within %d ms; "
                "keeping the threads in memory until they do",
                self.url,
                shard.name,
                acked,
                self.wait_replicas,
                self.wait_timeout_ms,
            )
        if self.memory is not None:
            self.memory.unconfirmed(shard.name, thread_ids)

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
        if "WRONGTYPE" in message:
            # Something else wrote a key of another type where the saver keeps a thread.
            named = ", ".join(repr(key) for key in keys) or "?"
            detail = f"a key of another type than the saver writes (WRONGTYPE) among {named}"
            return CorruptEntryError(keys[0] if keys else "?", detail)
        return exc

    def _publish(self) -> None:
        active = self.breaker_state != "closed"
        pending = self.memory.pending if self.memory is not None else 0
        self.metrics.set_fallback(COMPONENT, active, pending)
