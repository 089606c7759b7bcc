"""Circuit breaker per model, on an injected clock.

closed --(failure_threshold failures within window_s)--> open
open   --(recovery_s elapsed)--> half-open: one probe call is let through
half-open --probe succeeds--> closed;  --probe fails--> open again
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5
    window_s: float = 60.0
    recovery_s: float = 60.0


class CircuitBreaker:
    """Counts failures in a sliding window; thread-safe."""

    def __init__(self, settings: BreakerSettings, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._probing = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` at the current time."""
        with self._lock:
            return self._state(self._clock())

    def _state(self, now: float) -> str:
        if self._opened_at is None:
            return "closed"
        if now - self._opened_at >= self.settings.recovery_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time."""
        with self._lock:
            state = self._state(self._clock())
            if state == "closed":
                return True
            if state == "open" or self._probing:
                return False
            self._probing = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._failures.clear()
            self._opened_at = None
            self._probing = False

    def record_failure(self) -> None:
        with self._lock:
            now = self._clock()
            if self._opened_at is not None:
                # a failed probe (or a late failure while open): stay open, restart recovery
                self._opened_at = now
                self._probing = False
                return
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.settings.window_s:
                self._failures.popleft()
            if len(self._failures) >= self.settings.failure_threshold:
                self._opened_at = now
                self._failures.clear()

    def release_probe(self) -> None:
        """Give the half-open probe slot back when the probe call was never made."""
        with self._lock:
            self._probing = False
