"""gRPC servicer: maps rerank.v1 messages onto the engine and errors onto status codes."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from rerank_client._proto.rerank.v1 import rerank_pb2, rerank_pb2_grpc

from .batcher import BatcherStoppedError, JobDroppedError, QueueFullError
from .engine import Engine, RerankOptions, validate_request
from .errors import InvalidRequestError, NotReadyError
from .logs import REQUEST_ID_KEY, request_id_from
from .metrics import ServerMetrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TRUNCATIONS = {
    rerank_pb2.TRUNCATION_DOCUMENT_FIRST: "document_first",
    rerank_pb2.TRUNCATION_LONGEST_FIRST: "longest_first",
}
_POOLINGS = {rerank_pb2.POOLING_UNSPECIFIED: None, rerank_pb2.POOLING_MAX: "max", rerank_pb2.POOLING_MEAN: "mean"}
_SCORE_KINDS = (rerank_pb2.SCORE_KIND_UNSPECIFIED, rerank_pb2.SCORE_KIND_RAW, rerank_pb2.SCORE_KIND_NORMALIZED)


class DrainingError(NotReadyError):
    """The server stopped admitting calls after SIGTERM (UNAVAILABLE)."""


def _status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """Map a domain error onto its gRPC status and the message sent to the caller."""
    if isinstance(error, InvalidRequestError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, QueueFullError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
    if isinstance(error, (NotReadyError, BatcherStoppedError)):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    if isinstance(error, JobDroppedError):
        if error.reason == "deadline":
            return grpc.StatusCode.DEADLINE_EXCEEDED, str(error)
        return grpc.StatusCode.CANCELLED, str(error)
    return grpc.StatusCode.INTERNAL, "internal error while scoring; the server log has the details"


def _rejection_reason(error: BaseException) -> str | None:
    """Return the ``rerank_rejected_requests`` reason of an error raised before scoring, else None."""
    if isinstance(error, InvalidRequestError):
        # documents[12].text -> documents.text, so label values stay few.
        return "invalid_" + re.sub(r"\[\d+\]", "", error.field)
    if isinstance(error, QueueFullError):
        return f"queue_full_{error.resource}"
    if isinstance(error, (DrainingError, BatcherStoppedError)):
        return "draining"
    if isinstance(error, NotReadyError):
        return "not_ready"
    return None


def _log_level(code: grpc.StatusCode) -> int:
    """Overload is degraded service (WARNING); other caller-side outcomes are INFO."""
    return logging.WARNING if code is grpc.StatusCode.RESOURCE_EXHAUSTED else logging.INFO


class RerankerService(rerank_pb2_grpc.RerankerServicer):
    """Serves rerank.v1.Reranker. Until :meth:`attach` gives it an engine, calls get UNAVAILABLE.

    Args:
        max_in_flight: Rerank calls admitted at once; past it a call gets
            RESOURCE_EXHAUSTED before its documents are tokenized. None: no limit.
    """

    def __init__(self, *, metrics: ServerMetrics | None, default_truncation: str, model_name: str,
                 max_in_flight: int | None = None) -> None:
        self._engine: Engine | None = None
        self._metrics = metrics
        self._default_truncation = default_truncation
        self._model_name = model_name
        self._accepting = True
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._in_flight_changed = threading.Condition()
        self._last_activity = time.monotonic()

    def attach(self, engine: Engine) -> None:
        self._engine = engine

    def stop_accepting(self) -> None:
        """Make new calls fail with UNAVAILABLE while in-flight ones finish (drain)."""
        with self._in_flight_changed:
            self._accepting = False

    def wait_drained(self, timeout: float, quiet_s: float) -> bool:
        """Wait until no Rerank call is in flight and none arrived or finished for ``quiet_s`` seconds.

        While waiting, every new call gets UNAVAILABLE in band, so callers
        learn of the drain from a status they can retry elsewhere. The quiet time
        also follows the last finished call, because its caller may send the next
        one at once. Returns False when ``timeout`` seconds pass first.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._in_flight_changed:
            while True:
                remaining = deadline - time.monotonic()
                if not self._in_flight_changed.wait_for(lambda: self._in_flight == 0, timeout=max(0.0, remaining)):
                    return False
                quiet_for = time.monotonic() - self._last_activity
                if quiet_for >= quiet_s:
                    return True
                if remaining <= 0:
                    return False
                self._in_flight_changed.wait(timeout=min(quiet_s - quiet_for, remaining))

    @property
    def in_flight(self) -> int:
        """Rerank calls admitted and not yet finished."""
        return self._in_flight

    def _ready_engine(self) -> Engine:
        if not self._accepting:
            raise DrainingError("server is draining; retry on another replica")
        if self._engine is None:
            raise NotReadyError(f"model {self._model_name!r} is still loading; retry when health is SERVING")
        return self._engine

    def _admit(self) -> Engine:
        """Count one Rerank call in and return the engine.

        Raises DrainingError after :meth:`stop_accepting`, NotReadyError before the model
        is loaded, and QueueFullError when the in-flight limit is reached. The drain check
        and the count share one lock, so :meth:`wait_drained` cannot miss a call admitted
        just before the drain began.
        """
        with self._in_flight_changed:
            engine = self._ready_engine()
            if self._max_in_flight is not None and self._in_flight >= self._max_in_flight:
                raise QueueFullError("requests", self._in_flight, 1, self._max_in_flight)
            self._in_flight += 1
        if self._metrics is not None:
            self._metrics.in_flight.inc()
        return engine

    def _release(self) -> None:
        with self._in_flight_changed:
            self._in_flight -= 1
            self._last_activity = time.monotonic()
            self._in_flight_changed.notify_all()
        if self._metrics is not None:
            self._metrics.in_flight.dec()

    def _handle(self, method: str, context: grpc.ServicerContext, call: Callable[[str], T]) -> T:
        """Run one RPC: time it, count it by status, log it, and map errors to statuses.

        The request id is the caller's ``x-request-id`` metadata (cleaned) or a new
        one. It goes back to the caller in the trailing metadata and onto every log line.
        """
        self._last_activity = time.monotonic()
        request_id = request_id_from(context.invocation_metadata() or ())
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return call(request_id)
        except Exception as error:  # noqa: BLE001 - every error becomes a status, unknown ones INTERNAL
            code, message = _status_of(error)
            reason = _rejection_reason(error)
            if self._metrics is not None and reason is not None:
                self._metrics.rejected.labels(reason=reason).inc()
            if code is grpc.StatusCode.INTERNAL:
                logger.exception("%s failed request_id=%s", method, request_id)
            else:
                logger.log(_log_level(code), "%s rejected request_id=%s code=%s message=%s", method, request_id,
                           code.name, message)
            context.abort(code, message)
            raise  # unreachable: abort raises
        finally:
            elapsed = time.perf_counter() - started
            if self._metrics is not None:
                self._metrics.requests.labels(method=method, code=code.name).inc()
                if method == "Rerank" and code is grpc.StatusCode.OK:
                    self._metrics.request_time.observe(elapsed)

    def Rerank(self, request: rerank_pb2.RerankRequest, context: grpc.ServicerContext) -> rerank_pb2.RerankResponse:
        return self._handle("Rerank", context, lambda request_id: self._admitted_rerank(request, context, request_id))

    def _admitted_rerank(self, request: rerank_pb2.RerankRequest, context: grpc.ServicerContext,
                         request_id: str) -> rerank_pb2.RerankResponse:
        engine = self._admit()
        try:
            return self._rerank(engine, request, context, request_id)
        finally:
            self._release()

    def GetModelInfo(self, request: rerank_pb2.GetModelInfoRequest,
                     context: grpc.ServicerContext) -> rerank_pb2.ModelInfo:
        return self._handle("GetModelInfo", context, lambda request_id: self._model_info())

    def _rerank(self, engine: Engine, request: rerank_pb2.RerankRequest, context: grpc.ServicerContext,
                request_id: str) -> rerank_pb2.RerankResponse:
        texts = [document.text for document in request.documents]
        top_n = request.top_n if request.HasField("top_n") else None
        validate_request(request.query, texts, top_n, request.ByteSize(), engine.limits)
        options = _options(request, self._default_truncation)

        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        outcome = engine.rerank(request.query, texts, options, deadline=deadline, is_active=context.is_active)

        response = rerank_pb2.RerankResponse(
            model=engine.model.name,
            score_kind=rerank_pb2.SCORE_KIND_NORMALIZED if options.normalized else rerank_pb2.SCORE_KIND_RAW,
        )
        for ranked in outcome.ranked:
            document = request.documents[ranked.index]
            result = response.results.add(index=ranked.index, id=document.id)
            if ranked.score is not None:
                result.score = ranked.score
            if request.return_documents:
                result.text = document.text
        usage = outcome.usage
        response.usage.CopyFrom(rerank_pb2.Usage(
            pairs_scored=usage.pairs_scored, tokens=usage.tokens, documents_truncated=usage.documents_truncated,
            tokens_truncated=usage.tokens_truncated, queries_truncated=usage.queries_truncated,
            cache_hits=usage.cache_hits,
        ))
        logger.debug(
            "Rerank request_id=%s documents=%d pairs=%d tokens=%d truncated=%d cache_hits=%d",
            request_id, len(texts), usage.pairs_scored, usage.tokens, usage.documents_truncated, usage.cache_hits,
        )
        return response

    def _model_info(self) -> rerank_pb2.ModelInfo:
        engine = self._ready_engine()
        model = engine.model
        limits = engine.limits
        default = {value: key for key, value in _TRUNCATIONS.items()}[self._default_truncation]
        return rerank_pb2.ModelInfo(
            model=model.name, max_length=model.max_length, num_labels=model.num_labels,
            activation=model.activation, backend=model.backend, device=str(model.device),
            model_kind=model.model_kind, default_truncation=default,
            limits=rerank_pb2.Limits(
                max_documents_per_request=limits.max_documents, max_document_bytes=limits.max_document_bytes,
                max_request_bytes=limits.max_request_bytes, max_query_bytes=limits.max_query_bytes,
                max_document_chars=limits.max_document_chars,
            ),
        )


def _options(request: rerank_pb2.RerankRequest, default_truncation: str) -> RerankOptions:
    if request.score_kind not in _SCORE_KINDS:
        raise InvalidRequestError("score_kind", f"score_kind {request.score_kind} is not a known ScoreKind; "
                                  "expected SCORE_KIND_UNSPECIFIED, SCORE_KIND_RAW or "
                                  "SCORE_KIND_NORMALIZED")
    if request.truncation != rerank_pb2.TRUNCATION_UNSPECIFIED and request.truncation not in _TRUNCATIONS:
        raise InvalidRequestError("truncation", f"truncation {request.truncation} is not a known Truncation; "
                                  "expected TRUNCATION_UNSPECIFIED, TRUNCATION_DOCUMENT_FIRST or "
                                  "TRUNCATION_LONGEST_FIRST")
    if request.pooling not in _POOLINGS:
        raise InvalidRequestError("pooling", f"pooling {request.pooling} is not a known Pooling; "
                                  "expected POOLING_UNSPECIFIED, POOLING_MAX or POOLING_MEAN")
    return RerankOptions(
        top_n=request.top_n if request.HasField("top_n") else None,
        normalized=request.score_kind == rerank_pb2.SCORE_KIND_NORMALIZED,
        truncation=_TRUNCATIONS.get(request.truncation, default_truncation),
        pooling=_POOLINGS[request.pooling],
    )

