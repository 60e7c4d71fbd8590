"""Synchronous gRPC client of the rerank sidecar."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from ._blend import ScoreBlend
from ._core import (
    BaseClient,
    DocumentInput,
    Pooling,
    RerankPlan,
    RerankResult,
    Truncation,
    map_rpc_error,
    should_fail_open,
)
from ._errors import RerankError, RerankInputError
from ._proto.rerank.v1 import rerank_pb2
from ._reorder import as_page
from ._shadow import ShadowResult
from ._text import TextSpec

__all__ = ["DocumentInput", "RerankClient", "RerankResult"]


class RerankClient(BaseClient):
    """Client of one rerank sidecar target, or of several replicas.

    Args:
        target: gRPC target, for example ``"127.0.0.1:50051"`` or
            ``"dns:///reranker-headless:50051"`` (every address of the name is
            used), or a list of ``"ip:port"`` replicas. Calls are spread over
            the addresses with the ``round_robin`` policy unless
            `channel_options` sets ``grpc.service_config``.
        timeout: Default deadline of each call in seconds, covering every RPC
            the call makes, retries included.
        max_documents_per_call: Documents per RPC; larger inputs are split into
            several RPCs whose results are merged. Keep it at or below the
            server's ``--max-documents``.
        max_bytes_per_call: Approximate request bytes per RPC, also a split point.
        credentials: Channel credentials for TLS, for example
            ``grpc.ssl_channel_credentials(root_pem)``; None uses a plaintext
            channel.
        channel_options: Extra gRPC channel options, applied last.
        token: Bearer token sent as ``authorization: Bearer <token>`` metadata
            on every call. It never appears in the repr, logs or error
            messages. Sending it without `credentials` logs a WARNING, because
            the plaintext channel exposes it.
        fail_open: Default of the ``fail_open`` argument of the page methods.
        retry: When to resend an RPC that failed with UNAVAILABLE (see
            `RetryPolicy`); None sends each RPC once.
        breaker: A `CircuitBreaker` that skips calls while the sidecar keeps
            failing; None (the default) calls the sidecar every time.
        keepalive: HTTP/2 keepalive pings (see `Keepalive`); None turns them off.

    Failures raise these exceptions, all subclasses of `RerankError`, or with
    fail-open return the page in first-stage order marked ``"skipped"``:

    ==========================  ========================================  ==================
    Cause                       Exception                                 ``reason_code``
    ==========================  ========================================  ==================
    deadline passed             `RerankTimeoutError`                      ``timeout``
    sidecar unreachable         `RerankUnavailableError`                  ``unavailable``
    circuit breaker open        `RerankCircuitOpenError`                  ``circuit_open``
    request rejected, queue     `RerankRejectedError` (``code`` names     ``rejected``
    full, bad token             the gRPC status)
    internal server error       `RerankServerError`                       ``server_error``
    invalid response            `RerankProtocolError`                     ``protocol_error``
    invalid input               `RerankInputError`, raised even with      (never falls open)
                                fail-open, before any RPC
    ==========================  ========================================  ==================

    The client is thread-safe; share one per process. ``close()`` releases the channel.
    """

    def _open_channel(self, credentials: grpc.ChannelCredentials | None) -> Any:
        if credentials is None:
            return grpc.insecure_channel(self.target, options=self._channel_options)
        return grpc.secure_channel(self.target, credentials, options=self._channel_options)

    def __enter__(self) -> RerankClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel. Calls after this fail with RerankUnavailableError."""
        self._channel.close()

    # -- plain documents --------------------------------------------------------------------

    def rerank(self, query: str, documents: Sequence[DocumentInput], top_n: int | None = None, *,
               normalized: bool = False, truncation: Truncation | None = None,
               pooling: Pooling | None = None, timeout: float | None = None) -> list[RerankResult]:
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
            RerankServerError, RerankProtocolError: see the class docstring.

        Example::

            client.rerank("how to descale a kettle",
                          ["Citric acid removes limescale.", "The museum reopens."], top_n=1)
        """
        plan = self._plan_rerank(query, documents, top_n, normalized=normalized, truncation=truncation,
                                 pooling=pooling)
        results, _model = self._send(plan, self._deadline(timeout))
        return results

    # -- search pages -----------------------------------------------------------------------

    def rerank_page(self, page: object, query: str, fields: TextSpec, *, normalized: bool = False,
                    truncation: Truncation | None = None, timeout: float | None = None,
                    fail_open: bool | None = None, blend: ScoreBlend | None = None,
                    min_score: float | None = None) -> dict[str, Any]:
        """Return a new search response with its hits sorted by rerank score.

        The input is never changed. Each hit keeps every key; ``_score``
        becomes the rerank score (or the blended score) and ``_rerank`` contains
        the first-stage score and rank and the model's score. The page gets a
        ``_rerank`` status: ``"reranked"``, or ``"skipped"`` with ``reason`` and
        ``reason_code`` after a fail-open. ``hits.max_score`` follows the new
        first hit; the rest of the response is untouched. Hits without text
        are not sent, keep their relative order after every scored hit, and
        get ``_score`` null. A page without hits comes back equal to the
        input, with no RPC and no status. `rerank_client._reorder` documents
        these policies in full.

        Args:
            page: OpenSearch or Elasticsearch search response (a dict, or a
                client response object with ``body``).
            query: Search text the page answers.
            fields: Where the text of each hit comes from: a ``_source`` dot
                path, a list of them, or a ``TextTemplate``.
            normalized: Put normalized scores in ``_score`` instead of raw ones.
            truncation: Override the server's cut of over-length pairs.
            timeout: Deadline in seconds; default ``self.timeout``.
            fail_open: On a sidecar failure (unreachable, timed out, breaker
                open, request rejected, internal error or an invalid
                response), return the page in its original order with
                ``_rerank.status`` ``"skipped"``, log a WARNING and count it in
                ``self.fallbacks``, instead of raising. None uses the client's
                default. Input errors raise either way.
            blend: Make ``_score`` a weighted sum of the normalized first-stage
                and rerank scores (see `ScoreBlend`).
            min_score: Remove scored hits whose new ``_score`` is below this
                value; the page status counts them in ``hits_below_min_score``.

        Raises:
            RerankInputError: blank query, bad fields or options, or not a
                search response.
            RerankError subclasses on sidecar failures unless fail-open.
        """
        fail_open = self._resolve_fail_open(fail_open)
        plan = self._plan_page(page, query, fields, normalized=normalized, truncation=truncation, blend=blend,
                               min_score=min_score)
        try:
            results, model = self._send(plan.rerank, self._deadline(timeout))
        except RerankError as error:
            if not should_fail_open(error, fail_open):
                raise
            return self._fallback_page(plan.source, error)
        return self._finish_page(plan, results, model, normalized=normalized, blend=blend, min_score=min_score)

    def shadow_page(self, page: object, query: str, fields: TextSpec, *, top_k: int = 10,
                    normalized: bool = False, truncation: Truncation | None = None,
                    timeout: float | None = None) -> ShadowResult:
        """Rerank a page in shadow mode: serve the input page, and report the reranked order.

        A sidecar failure never raises here: the result then has ``reranked``
        None and the reason, and the failure is logged as a WARNING and
        counted in ``self.fallbacks``.

        Returns:
            A `ShadowResult` whose ``page`` is the input page itself and whose
            ``comparison`` contains Kendall's tau, Spearman's rho and the top-k
            overlap of the two orders.

        Raises:
            RerankInputError: as `rerank_page`.
        """
        source = as_page(page)
        try:
            reranked = self.rerank_page(source, query, fields, normalized=normalized, truncation=truncation,
                                        timeout=timeout, fail_open=False)
        except RerankInputError:
            raise
        except RerankError as error:
            return self._shadow_failure(source, error)
        return self._shadow_result(source, reranked, top_k)

    # -- service info -----------------------------------------------------------------------

    def check_health(self, timeout: float | None = None) -> bool:
        """Return True when the sidecar reports SERVING, False when NOT_SERVING.

        The check sends one RPC, with no retry and no circuit breaker, so it
        reports the state of the target as it is now, whether or not pages
        were reranked.

        Raises:
            RerankUnavailableError: the target cannot be reached; the message
                names it.
        """
        request = health_pb2.HealthCheckRequest(service="")
        response = self._call(self._health.Check, request, self._deadline(timeout), guarded=False)
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def model_info(self, timeout: float | None = None) -> rerank_pb2.ModelInfo:
        """Return the served model's description and the server's request limits."""
        request = rerank_pb2.GetModelInfoRequest()
        return self._call(self._stub.GetModelInfo, request, self._deadline(timeout), guarded=False)

    # -- internals --------------------------------------------------------------------------

    def _send(self, plan: RerankPlan | None, deadline: float) -> tuple[list[RerankResult], str]:
        if plan is None:
            return [], ""
        responses = [self._call(self._stub.Rerank, request, deadline) for _start, _stop, request in plan.requests]
        return self._collect(plan, responses)

    def _call(self, method: Any, request: Any, deadline: float, *, guarded: bool = True) -> Any:
        """Send one RPC, retrying by the retry policy, within the deadline."""
        attempt = 1
        while True:
            timeout = self._start_attempt(deadline, guarded)
            try:
                response = method(request, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as error:
                delay = self._retry_delay(error, attempt, deadline, guarded)
                if delay is None:
                    raise map_rpc_error(error, self.target) from error
            else:
                if guarded:
                    self._record_breaker(failed=False)
                return response
            time.sleep(delay)
            attempt += 1
