"""Domain errors of the server. ``service.py`` maps each onto one gRPC status code."""

from __future__ import annotations


class InvalidRequestError(ValueError):
    """The request breaks a documented rule or limit (INVALID_ARGUMENT).

    The message names the field, the value and the limit.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class NotReadyError(RuntimeError):
    """The model is not loaded and warmed up yet, or the server is draining (UNAVAILABLE)."""
