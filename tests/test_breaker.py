"""Tests for routerlab.breaker on a fake clock."""

from __future__ import annotations

import threading

import pytest

from routerlab.breaker import BreakerSettings, CircuitBreaker
from routerlab.fakes import FakeClock

SETTINGS = BreakerSettings(failure_threshold=3, window_s=10.0, recovery_s=30.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(SETTINGS, clock)


def open_breaker(breaker: CircuitBreaker, clock: FakeClock) -> float:
    """Fail until the breaker opens; returns the time it opened."""
    for _ in range(SETTINGS.failure_threshold):
        breaker.record_failure()
    assert breaker.state == "open"
    return clock()


def test_defaults() -> None:
    assert BreakerSettings() == BreakerSettings(failure_threshold=5, window_s=60.0, recovery_s=60.0)


def test_starts_closed(breaker: CircuitBreaker) -> None:
    assert breaker.state == "closed"
    assert breaker.allow() and breaker.allow()  # closed: no limit on calls


def test_opens_at_threshold_within_window(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.record_failure()
    clock.advance(3)
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    clock.advance(3)
    breaker.record_failure()  # third failure within 10 s
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.advance(29.9)
    assert breaker.state == "open" and not breaker.allow()


def test_threshold_one_opens_on_first_failure(clock: FakeClock) -> None:
    b = CircuitBreaker(BreakerSettings(failure_threshold=1, window_s=5, recovery_s=5), clock)
    b.record_failure()
    assert b.state == "open" and not b.allow()


def test_failures_older_than_the_window_do_not_count(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.record_failure()  # t=1000
    clock.advance(6)
    breaker.record_failure()  # t=1006
    clock.advance(5)
    breaker.record_failure()  # t=1011: the first is 11 s old and drops out -> 2 in the window
    assert breaker.state == "closed" and breaker.allow()
    clock.advance(4)
    breaker.record_failure()  # t=1015: 1006, 1011, 1015 all within 10 s
    assert breaker.state == "open"


def test_slow_failures_never_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    for _ in range(20):
        breaker.record_failure()
        clock.advance(5.01)  # at most two failures in any 10 s window
        assert breaker.state == "closed"


def test_failure_exactly_window_old_still_counts(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.record_failure()
    clock.advance(5)
    breaker.record_failure()
    clock.advance(5)
    breaker.record_failure()  # the first is exactly window_s old: still inside
    assert breaker.state == "open"


def test_open_becomes_half_open_after_recovery(breaker: CircuitBreaker, clock: FakeClock) -> None:
    opened = open_breaker(breaker, clock)
    clock.advance(SETTINGS.recovery_s - 0.001)
    assert breaker.state == "open" and not breaker.allow()
    clock.now = opened + SETTINGS.recovery_s
    assert breaker.state == "half_open"


def test_only_one_probe_in_half_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_breaker(breaker, clock)
    clock.advance(SETTINGS.recovery_s)
    assert breaker.state == "half_open"
    assert breaker.state == "half_open"  # reading the state does not take the probe slot
    assert breaker.allow() is True
    assert breaker.allow() is False
    assert breaker.allow() is False
    clock.advance(1000)  # time alone does not free the slot
    assert breaker.state == "half_open" and breaker.allow() is False


def test_only_one_probe_under_concurrency(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_breaker(breaker, clock)
    clock.advance(SETTINGS.recovery_s)
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        ok = breaker.allow()
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True]


def test_probe_success_closes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_breaker(breaker, clock)
    clock.advance(SETTINGS.recovery_s)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow() and breaker.allow()
    # the failure count starts from zero again
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"


def test_probe_failure_reopens_and_restarts_recovery(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_breaker(breaker, clock)
    clock.advance(SETTINGS.recovery_s)
    assert breaker.allow()
    clock.advance(5)
    breaker.record_failure()  # the probe failed at t = opened + 35
    failed_at = clock()
    assert breaker.state == "open" and not breaker.allow()
    clock.now = failed_at + SETTINGS.recovery_s - 0.001  # recovery counts from the probe failure
    assert breaker.state == "open" and not breaker.allow()
    clock.now = failed_at + SETTINGS.recovery_s
    assert breaker.state == "half_open"
    assert breaker.allow() is True  # a new probe is allowed
    assert breaker.allow() is False


def test_one_probe_failure_is_enough_to_reopen(clock: FakeClock) -> None:
    b = CircuitBreaker(BreakerSettings(failure_threshold=5, window_s=60, recovery_s=10), clock)
    for _ in range(5):
        b.record_failure()
    clock.advance(10)
    assert b.allow()
    b.record_failure()  # one failure, far below the threshold, but it was the probe
    assert b.state == "open"


def test_late_failure_while_open_restarts_recovery(breaker: CircuitBreaker, clock: FakeClock) -> None:
    opened = open_breaker(breaker, clock)
    clock.advance(20)
    breaker.record_failure()  # a call that went out before the breaker opened fails late
    clock.now = opened + SETTINGS.recovery_s
    assert breaker.state == "open"
    clock.now = opened + 20 + SETTINGS.recovery_s
    assert breaker.state == "half_open"


def test_release_probe_frees_the_slot(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_breaker(breaker, clock)
    clock.advance(SETTINGS.recovery_s)
    assert breaker.allow() is True
    assert breaker.allow() is False
    breaker.release_probe()
    assert breaker.state == "half_open"  # releasing does not change the state
    assert breaker.allow() is True
    assert breaker.allow() is False


def test_release_probe_when_closed_is_harmless(breaker: CircuitBreaker) -> None:
    breaker.release_probe()
    assert breaker.state == "closed" and breaker.allow()


def test_release_probe_does_not_open_an_open_breaker_early(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_breaker(breaker, clock)
    breaker.release_probe()
    assert breaker.state == "open" and not breaker.allow()


def test_success_while_closed_clears_the_failure_count(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()  # only one failure since the success
    assert breaker.state == "closed"
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "open"
