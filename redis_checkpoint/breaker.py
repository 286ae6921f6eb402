"""A small circuit breaker that stops hammering a Redis that is down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]
CLOSED: BreakerState = "closed"
OPEN: BreakerState = "open"
HALF_OPEN: BreakerState = "half_open"

TransitionCallback = Callable[[str, str, str], None]


class CircuitBreaker:
    """Closed -> open after consecutive failures; one probe at a time when half open.

    Thread-safe, and only ever holds its lock for a few assignments, so it
    is also safe to call from asyncio code. ``on_transition(name, old, new)``
    runs after the lock is released, so it may call back into the breaker.
    """

    def __init__(
        self,
        name: str = "redis",
        *,
        failure_threshold: int = 3,
        recovery_timeout: float = 1.0,
        max_recovery_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionCallback | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold={failure_threshold!r} must be >= 1")
        if recovery_timeout <= 0:
            raise ValueError(f"recovery_timeout={recovery_timeout!r} must be > 0")
        if max_recovery_timeout < recovery_timeout:
            raise ValueError(
                f"max_recovery_timeout={max_recovery_timeout!r} must be >= "
                f"recovery_timeout={recovery_timeout!r}"
            )
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.max_recovery_timeout = max_recovery_timeout
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._state: BreakerState = CLOSED
        self._failures = 0
        self._opened_count = 0
        self._opened_at = 0.0
        self._probe_started_at = 0.0
        self._current_timeout = recovery_timeout

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        name: str = "redis",
        on_transition: TransitionCallback | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> CircuitBreaker:
        return cls(
            name,
            failure_threshold=settings.breaker_failure_threshold,
            recovery_timeout=settings.breaker_recovery_timeout,
            max_recovery_timeout=settings.breaker_max_recovery_timeout,
            clock=clock,
            on_transition=on_transition,
        )

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    @property
    def opened_count(self) -> int:
        """How many times the breaker has opened."""
        return self._opened_count

    @property
    def current_recovery_timeout(self) -> float:
        """Seconds the breaker waits in open before the next probe."""
        return self._current_timeout

    def allow_request(self) -> bool:
        """Whether the caller may try Redis now.

        In half_open exactly one caller (the probe) gets True and must report
        back with record_success/record_failure.
        """
        transition: tuple[str, str] | None = None
        with self._lock:
            state = self._state
            if state == CLOSED:
                return True
            now = self._clock()
            if state == OPEN:
                if now - self._opened_at < self._current_timeout:
                    return False
                self._state = HALF_OPEN
                self._probe_started_at = now
                transition = (OPEN, HALF_OPEN)
            else:
                # A probe whose caller never reported back (crashed, cancelled)
                # would wedge the breaker; hand out a new one after a long wait.
                if now - self._probe_started_at < self.max_recovery_timeout:
                    return False
                self._probe_started_at = now
                return True
        self._notify(transition)
        return True

    def record_success(self) -> None:
        transition: tuple[str, str] | None = None
        with self._lock:
            self._failures = 0
            self._current_timeout = self.recovery_timeout
            if self._state != CLOSED:
                transition = (self._state, CLOSED)
                self._state = CLOSED
        self._notify(transition)

    def record_failure(self) -> None:
        transition: tuple[str, str] | None = None
        with self._lock:
            if self._state == CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    transition = (CLOSED, OPEN)
                    self._open()
            elif self._state == HALF_OPEN:
                self._current_timeout = min(self._current_timeout * 2, self.max_recovery_timeout)
                transition = (HALF_OPEN, OPEN)
                self._open()
            # Already open: a late failure from before opening changes nothing.
        self._notify(transition)

    def _open(self) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        self._opened_count += 1

    def _notify(self, transition: tuple[str, str] | None) -> None:
        if transition is not None and self._on_transition is not None:
            self._on_transition(self.name, transition[0], transition[1])

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self._state!r}, "
            f"failures={self._failures}, opened_count={self._opened_count})"
        )
