"""Exceptions raised by the rerank client.

Every exception the client raises on purpose derives from `RerankError`, so a
caller that wants to fall back to the search engine's order can catch that one
class. The subclasses separate three kinds of failure:

- `RerankInputError`: the caller passed something invalid (a blank query, a bad
  field spec, a page that is not a search response). Retrying the same call
  fails the same way.
- `RerankProtocolError`: the rerank server's response breaks the rerank.v1
  contract. This is a bug in the server, not in the request.
- `RerankUnavailableError`, `RerankTimeoutError`, `RerankServerError` and
  `RerankRejectedError`: the call failed with a gRPC status.

Hierarchy::

    RerankError
    ├── RerankInputError (also a ValueError)
    ├── RerankProtocolError
    ├── RerankUnavailableError
    │   ├── RerankTimeoutError
    │   └── RerankCircuitOpenError
    ├── RerankServerError
    └── RerankRejectedError
"""

from __future__ import annotations

__all__ = [
    "RerankCircuitOpenError",
    "RerankError",
    "RerankInputError",
    "RerankProtocolError",
    "RerankRejectedError",
    "RerankServerError",
    "RerankTimeoutError",
    "RerankUnavailableError",
]


class RerankError(Exception):
    """Base class of every exception the rerank client raises on purpose."""


class RerankInputError(RerankError, ValueError):
    """Invalid input from the caller.

    Raised for an empty or blank query, an invalid field spec or text template,
    or a page that is not shaped like a search response. The message names the
    value and the rule it breaks. Repeating the call with the same input raises
    again, so fix the input rather than retry.
    """


class RerankProtocolError(RerankError):
    """Response from the rerank server that breaks the rerank.v1 contract.

    Raised when the number of results differs from the number of documents
    sent, when a result index is duplicated, missing, negative or out of
    range, or when a score is NaN or infinite. The message states the expected
    and the received values. This points to a bug in the server (or a version
    mismatch between client and server), not to a problem with the request.
    """


class RerankUnavailableError(RerankError):
    """Rerank server that could not be reached or is not ready to serve.

    Covers connection failures and the gRPC status UNAVAILABLE. The request may
    succeed if retried later, because Rerank has no side effects.
    """


class RerankTimeoutError(RerankUnavailableError):
    """Rerank call that did not finish before its deadline.

    Covers the gRPC status DEADLINE_EXCEEDED. It derives from
    `RerankUnavailableError` because a caller handles both the same way: fall
    back to the search engine's order, or retry later.
    """


class RerankCircuitOpenError(RerankUnavailableError):
    """Rerank call skipped because the client's circuit breaker is open.

    The breaker opens after a run of consecutive sidecar failures and lets no
    call through until its reset timeout has passed (see `CircuitBreaker`). No
    RPC was sent. It derives from `RerankUnavailableError`, so a caller that
    falls back on an unreachable sidecar falls back here too.
    """


class _StatusError(RerankError):
    """Error carrying the gRPC status name and details sent by the server."""

    def __init__(self, message: str, *, code: str, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details

    def __reduce__(self) -> tuple[object, ...]:
        # The keyword-only arguments are not in self.args, so the default
        # pickling would call __init__ without them and fail.
        return (_rebuild_status_error, (type(self), str(self), self.code, self.details))


def _rebuild_status_error(
    cls: type[_StatusError], message: str, code: str, details: str
) -> _StatusError:
    return cls(message, code=code, details=details)


class RerankServerError(_StatusError):
    """Rerank call that failed inside the server.

    Covers gRPC statuses such as INTERNAL and UNKNOWN. Attributes:

    - `code`: the gRPC status name, for example ``"INTERNAL"``.
    - `details`: the status details string sent by the server, or ``""``.
    """


class RerankRejectedError(_StatusError):
    """Rerank request that the server rejected.

    Covers the gRPC statuses INVALID_ARGUMENT (the request breaks a server
    limit or rule) and RESOURCE_EXHAUSTED (the server's queue is full).
    Attributes:

    - `code`: the gRPC status name, ``"INVALID_ARGUMENT"`` or
      ``"RESOURCE_EXHAUSTED"``.
    - `details`: the status details string sent by the server, which names the
      rule the request broke.
    """
