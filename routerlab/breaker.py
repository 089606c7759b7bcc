"""Circuit breaker per model, on an injected clock.

closed --(failure_threshold failures within window_s)--> open
closed --(a failure with a retry-after of c seconds)--> open for c seconds
closed --(a refused key, a missing model: disable)--> open for disable_s
open   --(its cooldown elapsed: recovery_s, c or disable_s)--> half-open: one probe call is let through
half-open --probe succeeds--> closed;  --probe fails--> open again (recovery_s, or its retry-after)
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
    disable_s: float = 300.0  # how long a tier whose key or model is refused stays open


class CircuitBreaker:
    """Counts failures in a sliding window; thread-safe."""

    def __init__(self, settings: BreakerSettings, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._cooldown = settings.recovery_s  # how long the current opening lasts
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
        if now - self._opened_at >= self._cooldown:
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

    def record_failure(self, cooldown_s: float | None = None) -> None:
        """Count a failure; ``cooldown_s`` (a provider's retry-after) opens the breaker for that long."""
        with self._lock:
            now = self._clock()
            if self._opened_at is not None:
                # a failed probe (or a late failure while open): stay open, restart recovery
                self._open(now, cooldown_s if cooldown_s and cooldown_s > 0 else self.settings.recovery_s)
                return
            if cooldown_s is not None and cooldown_s > 0:
                self._open(now, cooldown_s)
                return
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.settings.window_s:
                self._failures.popleft()
            if len(self._failures) >= self.settings.failure_threshold:
                self._open(now, self.settings.recovery_s)

    def disable(self) -> None:
        """Open now for ``disable_s`` (the tier's key was refused or its model is gone)."""
        with self._lock:
            self._open(self._clock(), self.settings.disable_s)

    def _open(self, now: float, cooldown: float) -> None:
        if self._opened_at is not None and not self._probing:  # already open: keep the later end
            if self._opened_at + self._cooldown >= now + cooldown:
                return
        self._opened_at = now
        self._cooldown = cooldown
        self._failures.clear()
        self._probing = False

    def release_probe(self) -> None:
        """Give the half-open probe slot back when the probe call was never made."""
        with self._lock:
            self._probing = False
