"""Value objects for the client's retry and keepalive settings."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ._errors import RerankInputError

__all__ = ["Keepalive", "RetryPolicy"]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """When and how often a failed RPC is sent again.

    Only an RPC that failed with UNAVAILABLE is retried: the sidecar sent no
    response, and Rerank has no side effects, so sending it again is safe.
    With several replicas the retry goes to the next one, because the
    ``round_robin`` policy picks the next ready connection for each RPC.
    DEADLINE_EXCEEDED is never retried, since the call's deadline is spent, and
    neither is RESOURCE_EXHAUSTED (a full queue), so that retries do not add
    load to an overloaded sidecar.

    A retry is sent only when, after the backoff, at least `min_attempt_s`
    of the call's deadline is left. A retry never extends the deadline.

    Attributes:
        max_attempts: RPCs per request, the first one included; 1 turns
            retries off.
        initial_backoff_s: Wait before the first retry, in seconds.
        max_backoff_s: Upper bound of the wait between attempts.
        multiplier: Growth of the wait from one retry to the next.
        min_attempt_s: Minimum time left before the deadline for a retry to be sent.
    """

    max_attempts: int = 3
    initial_backoff_s: float = 0.025
    max_backoff_s: float = 0.25
    multiplier: float = 2.0
    min_attempt_s: float = 0.02

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise RerankInputError(f"RetryPolicy.max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        for name in ("initial_backoff_s", "max_backoff_s", "min_attempt_s"):
            _check_seconds(f"RetryPolicy.{name}", getattr(self, name))
        if not _is_number(self.multiplier) or self.multiplier < 1:
            raise RerankInputError(f"RetryPolicy.multiplier must be a number >= 1, got {self.multiplier!r}")

    def backoff_s(self, retry: int) -> float:
        """Return the wait before retry number `retry` (1 for the first), with jitter.

        The wait is drawn between half and all of the exponential backoff, so
        that clients that failed together do not retry together.
        """
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))
        return ceiling * random.uniform(0.5, 1.0)


@dataclass(frozen=True, kw_only=True)
class Keepalive:
    """HTTP/2 keepalive pings that detect a dead sidecar connection.

    A sidecar that vanished without closing its TCP connections (a node lost,
    a network partition) leaves the channel waiting for each call's deadline.
    Pings every `time_s` find such a connection dead after `timeout_s`, and the
    channel then reconnects or, with replicas, stops picking that replica.

    NOTE: By default a gRPC server counts a ping as bad when it comes less
    than 5 minutes after the previous one with no data sent in between. After
    2 bad pings it closes the connection with GOAWAY ``too_many_pings`` (gRPC
    Core ``doc/keepalive.md``). Rerank calls are short and send data, so pings
    every `time_s` while calls are in flight stay within that policy. If the
    sidecar's log shows ``too_many_pings``, raise `time_s` or relax the
    server's ``grpc.http2.min_recv_ping_interval_without_data_ms``.

    Attributes:
        time_s: Seconds between pings on a connection with calls in flight.
        timeout_s: Seconds to wait for a ping's reply before the connection is
            closed.
        permit_without_calls: Also ping idle connections. The sidecar must
            allow this (gRPC server option
            ``grpc.keepalive_permit_without_calls``); a gRPC server that does
            not closes the connection with GOAWAY ``too_many_pings``.
    """

    time_s: float = 30.0
    timeout_s: float = 10.0
    permit_without_calls: bool = False

    def __post_init__(self) -> None:
        _check_seconds("Keepalive.time_s", self.time_s, positive=True)
        _check_seconds("Keepalive.timeout_s", self.timeout_s, positive=True)
        if not isinstance(self.permit_without_calls, bool):
            raise RerankInputError(
                f"Keepalive.permit_without_calls must be a bool, got {self.permit_without_calls!r}")

    def channel_options(self) -> list[tuple[str, int]]:
        """Return the gRPC channel options that set these pings."""
        return [
            ("grpc.keepalive_time_ms", round(self.time_s * 1000)),
            ("grpc.keepalive_timeout_ms", round(self.timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", int(self.permit_without_calls)),
        ]


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_seconds(name: str, value: object, *, positive: bool = False) -> None:
    if not _is_number(value) or value < 0 or (positive and value == 0):
        least = "positive" if positive else "non-negative"
        raise RerankInputError(f"{name} must be a {least} number of seconds, got {value!r}")
