"""Synchronous gRPC client of the rerank sidecar."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._errors import (
    RerankError,
    RerankInputError,
    RerankProtocolError,
    RerankRejectedError,
    RerankServerError,
    RerankTimeoutError,
    RerankUnavailableError,
)
from ._proto.rerank.v1 import rerank_pb2, rerank_pb2_grpc
from ._reorder import as_page, get_hits, mark_page, reorder_page, validate_results
from ._text import TextSpec, as_text_template, extract_text

logger = logging.getLogger("rerank_client")

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_DOCUMENTS_PER_CALL = 1000
DEFAULT_MAX_BYTES_PER_CALL = 32 * 1024 * 1024
# Matches the server's default --max-request-bytes plus its slack, so responses
# that echo long texts are never cut by the 4 MiB gRPC default.
_MESSAGE_LIMIT = 65 * 1024 * 1024
_PROTO_OVERHEAD_BYTES = 16

DocumentInput = Union[str, tuple[str, str]]
"""A document: its text, or an ``(id, text)`` pair."""

_TRUNCATIONS = {
    None: rerank_pb2.TRUNCATION_UNSPECIFIED,
    "document_first": rerank_pb2.TRUNCATION_DOCUMENT_FIRST,
    "longest_first": rerank_pb2.TRUNCATION_LONGEST_FIRST,
}
_POOLINGS = {None: rerank_pb2.POOLING_UNSPECIFIED, "max": rerank_pb2.POOLING_MAX, "mean": rerank_pb2.POOLING_MEAN}


@dataclass(frozen=True)
class RerankResult:
    """One scored document: its position in the request, its id and its score.

    ``score`` is None for a document whose text was empty or whitespace only;
    the server does not score those and ranks them last.
    """

    index: int
    id: str
    score: float | None


class RerankClient:
    """Client of one rerank sidecar target.

    Args:
        target: gRPC target, for example ``"127.0.0.1:50051"`` or
            ``"dns:///reranker-headless:50051"``.
        timeout: Default deadline of each call in seconds, covering every RPC
            the call makes.
        max_documents_per_call: Documents per RPC; larger inputs are split into
            several RPCs whose results are merged. Keep it at or below the
            server's ``--max-documents``.
        max_bytes_per_call: Approximate request bytes per RPC, also a split point.
        credentials: Channel credentials for TLS; None uses a plaintext channel.
        channel_options: Extra gRPC channel options.

    The client is thread-safe; share one per process. ``close()`` releases the channel.
    """

    def __init__(self, target: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 max_documents_per_call: int = DEFAULT_MAX_DOCUMENTS_PER_CALL,
                 max_bytes_per_call: int = DEFAULT_MAX_BYTES_PER_CALL,
                 credentials: grpc.ChannelCredentials | None = None,
                 channel_options: Sequence[tuple[str, Any]] = ()) -> None:
        if timeout <= 0:
            raise RerankInputError(f"timeout must be positive seconds, got {timeout!r}")
        if max_documents_per_call < 1:
            raise RerankInputError(f"max_documents_per_call must be at least 1, got {max_documents_per_call!r}")
        self.target = target
        self.timeout = timeout
        self.max_documents_per_call = max_documents_per_call
        self.max_bytes_per_call = max_bytes_per_call
        self.fallbacks: dict[str, int] = {}
        options = [
            ("grpc.max_send_message_length", _MESSAGE_LIMIT),
            ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
            *channel_options,
        ]
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = rerank_pb2_grpc.RerankerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> RerankClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel. Calls after this fail with RerankUnavailableError."""
        self._channel.close()

    def __repr__(self) -> str:
        return f"RerankClient(target={self.target!r}, timeout={self.timeout!r})"

    # -- plain documents --------------------------------------------------------------------

    def rerank(self, query: str, documents: Sequence[DocumentInput], top_n: int | None = None, *,
               normalized: bool = False, truncation: Literal["document_first", "longest_first"] | None = None,
               pooling: Literal["max", "mean"] | None = None,
               timeout: float | None = None) -> list[RerankResult]:
        """Score documents against the query; return them sorted by score, highest first.

        Args:
            query: Search text; must not be blank.
            documents: Texts, or ``(id, text)`` pairs.
            top_n: Results to return; None returns all.
            normalized: Return scores passed through the model's activation
                instead of raw scores (logits for ms-marco cross-encoders).
            truncation: Override the server's cut of over-length pairs.
            pooling: Split long documents into chunks and pool their scores.
            timeout: Deadline in seconds for the whole call; default ``self.timeout``.

        Returns:
            One result per document (or ``top_n``), ties in input order, blank
            documents last with score None.

        Raises:
            RerankInputError: blank query, negative top_n, bad document.
            RerankRejectedError, RerankUnavailableError, RerankTimeoutError,
            RerankServerError, RerankProtocolError: see their docstrings.

        Example::

            client.rerank("how to descale a kettle",
                          ["Citric acid removes limescale.", "The museum reopens."], top_n=1)
        """
        results, _model = self._rerank(query, documents, top_n, normalized=normalized, truncation=truncation,
                                       pooling=pooling, timeout=timeout)
        return results

    def _rerank(self, query: str, documents: Sequence[DocumentInput], top_n: int | None, *, normalized: bool,
                truncation: str | None, pooling: str | None,
                timeout: float | None) -> tuple[list[RerankResult], str]:
        """Run :meth:`rerank` and also return the model name the server reported."""
        _check_query(query)
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0):
            raise RerankInputError(f"top_n must be an integer >= 0 or None, got {top_n!r}")
        if truncation not in _TRUNCATIONS:
            raise RerankInputError(f"truncation must be document_first, longest_first or None, got {truncation!r}")
        if pooling not in _POOLINGS:
            raise RerankInputError(f"pooling must be max, mean or None, got {pooling!r}")
        pairs = [_as_pair(document, position) for position, document in enumerate(documents)]
        if not pairs or top_n == 0:
            return [], ""

        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        results: list[RerankResult] = []
        model = ""
        for start, stop in self._split(pairs):
            request = rerank_pb2.RerankRequest(
                query=query,
                documents=[rerank_pb2.Document(id=doc_id, text=text) for doc_id, text in pairs[start:stop]],
                score_kind=rerank_pb2.SCORE_KIND_NORMALIZED if normalized else rerank_pb2.SCORE_KIND_RAW,
                truncation=_TRUNCATIONS[truncation],
                pooling=_POOLINGS[pooling],
            )
            response = self._call(self._stub.Rerank, request, deadline)
            model = response.model
            scores = validate_results(
                ((result.index, result.score if result.HasField("score") else None) for result in response.results),
                stop - start,
            )
            results.extend(RerankResult(start + offset, pairs[start + offset][0], score)
                           for offset, score in enumerate(scores))
        results.sort(key=lambda result: (result.score is None, -(result.score or 0.0), result.index))
        return (results if top_n is None else results[:top_n]), model

    # -- search pages -----------------------------------------------------------------------

    def rerank_page(self, page: object, query: str, fields: TextSpec, *, normalized: bool = False,
                    truncation: Literal["document_first", "longest_first"] | None = None,
                    timeout: float | None = None, fail_open: bool = False) -> dict[str, Any]:
        """Return a new search response with its hits sorted by rerank score.

        The input is never changed. Each hit keeps every key; ``_score`` becomes
        the rerank score and ``_rerank`` holds the first-stage score and rank.
        ``hits.max_score`` follows the new first hit; the rest of the response is
        untouched. Hits without text are not sent, keep their relative order
        after every scored hit, and get ``_score`` null. A page without hits
        comes back equal to the input, with no RPC.

        Args:
            page: OpenSearch or Elasticsearch search response (a dict, or a
                client response object with ``body``).
            query: Search text the page answers.
            fields: Where the text of each hit comes from: a ``_source`` dot
                path, a list of them, or a ``TextTemplate``.
            normalized: Put normalized scores in ``_score`` instead of raw ones.
            truncation: Override the server's cut of over-length pairs.
            timeout: Deadline in seconds; default ``self.timeout``.
            fail_open: On a sidecar failure (unreachable, timed out, queue full,
                internal error or an invalid response), return the page in its
                original order with ``_rerank.status`` ``"skipped"`` and the
                reason, log a WARNING and count it in ``self.fallbacks``,
                instead of raising. Input errors raise either way.

        Raises:
            RerankInputError: blank query, bad fields, or not a search response.
            RerankError subclasses on sidecar failures unless ``fail_open``.
        """
        source = as_page(page)
        hits = get_hits(source)
        _check_query(query)
        template = as_text_template(fields)
        if not hits:
            return _copy_page(source)

        texts = [extract_text(hit, template) for hit in hits]
        sent = [position for position, text in enumerate(texts) if text is not None]
        try:
            results, model = self._rerank(query, [(str(position), texts[position]) for position in sent], None,
                                          normalized=normalized, truncation=truncation, pooling=None,
                                          timeout=timeout)
        except RerankInputError:
            raise
        except RerankError as error:
            if not fail_open or (isinstance(error, RerankRejectedError) and error.code == "INVALID_ARGUMENT"):
                raise
            reason = f"{type(error).__name__}: {error}"
            self.fallbacks[type(error).__name__] = self.fallbacks.get(type(error).__name__, 0) + 1
            logger.warning("rerank skipped, page kept in first-stage order target=%s hits=%d reason=%s",
                           self.target, len(hits), reason)
            return mark_page(source, reason=reason, status="skipped")

        scores: list[float | None] = [None] * len(hits)
        for result in results:
            scores[sent[result.index]] = result.score
        return reorder_page(source, scores, score_kind="normalized" if normalized else "raw",
                            model=model)

    # -- service info -----------------------------------------------------------------------

    def check_health(self, timeout: float | None = None) -> bool:
        """Return True when the sidecar reports SERVING, False when NOT_SERVING.

        Raises:
            RerankUnavailableError: the target cannot be reached.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=""), deadline)
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def model_info(self, timeout: float | None = None) -> rerank_pb2.ModelInfo:
        """Return the served model's description and the server's request limits."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        return self._call(self._stub.GetModelInfo, rerank_pb2.GetModelInfoRequest(), deadline)

    # -- internals --------------------------------------------------------------------------

    def _split(self, pairs: list[tuple[str, str]]) -> list[tuple[int, int]]:
        """Cut the documents into runs that respect the per-call document and byte limits."""
        spans = []
        start = 0
        size = 0
        for position, (doc_id, text) in enumerate(pairs):
            item = len(text.encode("utf-8")) + len(doc_id) + _PROTO_OVERHEAD_BYTES
            full = position - start >= self.max_documents_per_call or size + item > self.max_bytes_per_call
            if position > start and full:
                spans.append((start, position))
                start, size = position, 0
            size += item
        spans.append((start, len(pairs)))
        return spans

    def _call(self, method: Any, request: Any, deadline: float) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RerankTimeoutError(f"deadline passed before calling {self.target}")
        try:
            response = method(request, timeout=remaining)
        except grpc.RpcError as error:
            raise _map_rpc_error(error, self.target) from error
        return response


def _map_rpc_error(error: grpc.RpcError, target: str) -> RerankError:
    """Map a gRPC status onto the client's exception tree; the one place that does so."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else "") or ""
    message = f"rerank call to {target} failed with {code.name}: {details}"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return RerankTimeoutError(message)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return RerankUnavailableError(message)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
                grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return RerankRejectedError(message, code=code.name, details=details)
    return RerankServerError(message, code=code.name, details=details)


def _check_query(query: object) -> None:
    if not isinstance(query, str) or not query.strip():
        raise RerankInputError(f"query must be a non-blank string, got {query!r:.80}")


def _as_pair(document: DocumentInput, position: int) -> tuple[str, str]:
    if isinstance(document, str):
        return "", document
    if (isinstance(document, tuple) and len(document) == 2
            and isinstance(document[0], str) and isinstance(document[1], str)):
        return document
    raise RerankInputError(
        f"documents[{position}] must be a text or an (id, text) pair of strings, got {document!r:.80}")


def _copy_page(page: Mapping[str, Any]) -> dict[str, Any]:
    import copy

    return copy.deepcopy(dict(page))


__all__ = ["DocumentInput", "RerankClient", "RerankResult"]
