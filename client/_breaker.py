"""Circuit breaker that stops calling a failing sidecar for a while.

A search service that calls a hung or overloaded sidecar pays the full
deadline on every search. The breaker counts consecutive sidecar failures and,
after `CircuitBreaker.failure_threshold` of them, opens: calls fail at once
with `RerankCircuitOpenError` and send no RPC. After
`CircuitBreaker.reset_timeout_s` it lets one trial call through (half-open).
A success closes it again, and a failure opens it for another reset timeout.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Literal, Protocol

from ._errors import RerankInputError

__all__ = ["BreakerState", "CircuitBreaker", "Clock"]

BreakerState = Literal["closed", "open", "half_open"]


class Clock(Protocol):
    """Monotonic clock in seconds, such as `time.monotonic`."""

    def __call__(self) -> float: ...


class CircuitBreaker:
    """Thread-safe circuit breaker shared by every call of one client.

    Args:
        failure_threshold: Consecutive failed calls that open the breaker.
        reset_timeout_s: Seconds the breaker stays open before it lets one
            trial call through.
        clock: Monotonic clock in seconds; tests pass a fake one.

    One instance may be shared by several clients of the same sidecar, sync
    and async alike. Its methods hold a lock for a few operations only and
    never await.
    """

    def __init__(self, *, failure_threshold: int = 5, reset_timeout_s: float = 5.0,
                 clock: Clock = time.monotonic) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise RerankInputError(f"failure_threshold must be an integer >= 1, got {failure_threshold!r}")
        if (isinstance(reset_timeout_s, bool) or not isinstance(reset_timeout_s, (int, float))
                or not math.isfinite(reset_timeout_s) or reset_timeout_s <= 0):
            raise RerankInputError(f"reset_timeout_s must be a positive number of seconds, got {reset_timeout_s!r}")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = float(reset_timeout_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_started_at: float | None = None

    def __repr__(self) -> str:
        return (f"CircuitBreaker(state={self.state!r}, failure_threshold={self.failure_threshold}, "
                f"reset_timeout_s={self.reset_timeout_s})")

    @property
    def state(self) -> BreakerState:
        """``"closed"`` (calls pass), ``"open"`` (calls fail at once) or ``"half_open"`` (one trial may pass)."""
        with self._lock:
            return self._state(self._clock())

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    def allow(self) -> bool:
        """Return whether a call may be sent now; in the half-open state only one trial at a time may."""
        with self._lock:
            now = self._clock()
            state = self._state(now)
            if state == "closed":
                return True
            if state == "open":
                return False
            # A trial whose outcome was never recorded (the caller was
            # cancelled) must not block every later call, so a trial older
            # than one reset timeout no longer counts as in flight.
            if self._trial_started_at is not None and now - self._trial_started_at < self.reset_timeout_s:
                return False
            self._trial_started_at = now
            return True

    def retry_after_s(self) -> float:
        """Return the seconds until an open breaker lets a trial call through, 0.0 when it would now."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())

    def record_success(self) -> None:
        """Close the breaker and clear the failure count."""
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_started_at = None

    def record_failure(self) -> None:
        """Count a sidecar failure; open the breaker at the threshold, or again after a failed trial."""
        with self._lock:
            now = self._clock()
            self._failures += 1
            if self._opened_at is not None or self._failures >= self.failure_threshold:
                self._opened_at = now
            self._trial_started_at = None

    def _state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if now - self._opened_at < self.reset_timeout_s:
            return "open"
        return "half_open"
