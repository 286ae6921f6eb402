from __future__ import annotations

import threading

import pytest

from redis_checkpoint.breaker import CircuitBreaker
from redis_checkpoint.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def transitions() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, transitions: list[tuple[str, str, str]]) -> CircuitBreaker:
    return CircuitBreaker(
        "test",
        failure_threshold=3,
        recovery_timeout=1.0,
        max_recovery_timeout=5.0,
        clock=clock,
        on_transition=lambda *t: transitions.append(t),
    )


def state(breaker: CircuitBreaker) -> str:
    # Plain str: mypy would otherwise narrow the Literal across assertions.
    return breaker.state


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    assert state(breaker) == "open"


def test_starts_closed_and_allows(breaker: CircuitBreaker) -> None:
    assert state(breaker) == "closed"
    assert breaker.allow_request()
    assert breaker.failures == 0
    assert breaker.opened_count == 0


def test_opens_after_consecutive_failures(
    breaker: CircuitBreaker, transitions: list[tuple[str, str, str]]
) -> None:
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) == "closed"
    assert breaker.failures == 2
    breaker.record_failure()
    assert state(breaker) == "open"
    assert breaker.opened_count == 1
    assert not breaker.allow_request()
    assert transitions == [("test", "closed", "open")]


def test_success_resets_consecutive_count(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    assert breaker.failures == 0
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) == "closed"


def test_open_waits_recovery_timeout_then_allows_exactly_one_probe(
    breaker: CircuitBreaker, clock: FakeClock, transitions: list[tuple[str, str, str]]
) -> None:
    _open(breaker)
    clock.advance(0.75)
    assert not breaker.allow_request()
    assert state(breaker) == "open"
    clock.advance(0.25)
    assert breaker.allow_request()  # the probe
    assert state(breaker) == "half_open"
    assert not breaker.allow_request()
    assert not breaker.allow_request()
    assert transitions[-1] == ("test", "open", "half_open")


def test_probe_success_closes_and_resets(
    breaker: CircuitBreaker, clock: FakeClock, transitions: list[tuple[str, str, str]]
) -> None:
    _open(breaker)
    clock.advance(1.0)
    assert breaker.allow_request()
    breaker.record_failure()  # re-open with 2 s
    clock.advance(2.0)
    assert breaker.allow_request()
    breaker.record_success()
    assert state(breaker) == "closed"
    assert breaker.failures == 0
    assert breaker.current_recovery_timeout == 1.0
    assert breaker.allow_request()
    assert breaker.allow_request()
    # Next outage starts again from the initial 1 s.
    _open(breaker)
    clock.advance(1.0)
    assert breaker.allow_request()
    assert [t[2] for t in transitions] == [
        "open",
        "half_open",
        "open",
        "half_open",
        "closed",
        "open",
        "half_open",
    ]


def test_probe_failure_doubles_timeout_up_to_max(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    expected = [1.0, 2.0, 4.0, 5.0, 5.0]
    for timeout in expected:
        assert breaker.current_recovery_timeout == timeout
        clock.advance(timeout - 0.25)
        assert not breaker.allow_request()
        clock.advance(0.25)
        assert breaker.allow_request()
        assert state(breaker) == "half_open"
        breaker.record_failure()
        assert state(breaker) == "open"
    assert breaker.opened_count == 1 + len(expected)


def test_late_failure_while_open_does_not_extend(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.advance(0.5)
    breaker.record_failure()  # from a request started before opening
    clock.advance(0.5)
    assert breaker.allow_request()
    assert breaker.opened_count == 1


def test_lost_probe_is_replaced_after_max_recovery_timeout(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    _open(breaker)
    clock.advance(1.0)
    assert breaker.allow_request()  # probe never reports back
    clock.advance(4.75)
    assert not breaker.allow_request()
    clock.advance(0.25)
    assert breaker.allow_request()
    assert not breaker.allow_request()


def test_callback_may_reenter_breaker(clock: FakeClock) -> None:
    seen: list[str] = []
    holder: list[CircuitBreaker] = []

    def on_transition(name: str, old: str, new: str) -> None:
        seen.append(holder[0].state)  # would deadlock if called under the lock

    b = CircuitBreaker(failure_threshold=1, clock=clock, on_transition=on_transition)
    holder.append(b)
    b.record_failure()
    assert seen == ["open"]


def test_only_one_probe_across_threads(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.advance(1.0)
    barrier = threading.Barrier(16)
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        allowed = breaker.allow_request()
        with lock:
            results.append(allowed)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


def test_from_settings(clock: FakeClock) -> None:
    settings = Settings(
        breaker_failure_threshold=2,
        breaker_recovery_timeout=0.5,
        breaker_max_recovery_timeout=3.0,
    )
    calls: list[tuple[str, str, str]] = []
    b = CircuitBreaker.from_settings(
        settings, name="cache", on_transition=lambda *t: calls.append(t), clock=clock
    )
    assert b.name == "cache"
    assert b.failure_threshold == 2
    assert b.recovery_timeout == 0.5
    assert b.max_recovery_timeout == 3.0
    b.record_failure()
    b.record_failure()
    assert calls == [("cache", "closed", "open")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold=0 must be >= 1"),
        ({"recovery_timeout": 0}, "recovery_timeout=0 must be > 0"),
        (
            {"recovery_timeout": 2.0, "max_recovery_timeout": 1.0},
            "max_recovery_timeout=1.0 must be >= recovery_timeout=2.0",
        ),
    ],
)
def test_invalid_arguments(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_the_documented_defaults() -> None:
    """3 consecutive failures open it; it waits 1 s, doubling up to 30 s (docs/outages.md)."""
    b = CircuitBreaker()
    assert (b.name, b.failure_threshold, b.recovery_timeout, b.max_recovery_timeout) == (
        "redis",
        3,
        1.0,
        30.0,
    )
    assert CircuitBreaker.from_settings(Settings()).name == "redis"
    fixed = CircuitBreaker(recovery_timeout=2.0, max_recovery_timeout=2.0)  # equal is allowed
    assert fixed.max_recovery_timeout == 2.0


def test_from_settings_uses_the_given_clock(clock: FakeClock) -> None:
    b = CircuitBreaker.from_settings(Settings(breaker_failure_threshold=1), clock=clock)
    b.record_failure()
    assert state(b) == "open" and not b.allow_request()
    clock.advance(Settings().breaker_recovery_timeout)  # only this clock's time passes
    assert b.allow_request() and state(b) == "half_open"
