"""Logic shared by the sync and async clients: every step except sending the RPC.

`BaseClient` stores the settings, builds the requests, checks the responses,
builds the pages and decides on retries, the circuit breaker and fail-open.
`RerankClient` and `AsyncRerankClient` add only the channel and the loop that
sends RPCs, so the two clients behave the same by construction.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import grpc
from grpc_health.v1 import health_pb2_grpc

from ._blend import ScoreBlend
from ._breaker import CircuitBreaker
from ._errors import (
    RerankCircuitOpenError,
    RerankError,
    RerankInputError,
    RerankProtocolError,
    RerankRejectedError,
    RerankServerError,
    RerankTimeoutError,
    RerankUnavailableError,
)
from ._options import Keepalive, RetryPolicy
from ._proto.rerank.v1 import rerank_pb2, rerank_pb2_grpc
from ._reorder import RERANK_KEY, _check_scoring, as_page, get_hits, mark_page, reorder_page, validate_results
from ._shadow import ShadowResult, compare_orders
from ._text import TextSpec, as_text_template, extract_text

logger = logging.getLogger("rerank_client")

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_DOCUMENTS_PER_CALL = 1000
DEFAULT_MAX_BYTES_PER_CALL = 32 * 1024 * 1024
# Matches the server's default --max-request-bytes plus its slack, so responses
# that echo long texts are never cut by the 4 MiB gRPC default.
MESSAGE_LIMIT = 65 * 1024 * 1024
_PROTO_OVERHEAD_BYTES = 16
# round_robin sends each RPC to the next ready address the resolver returned,
# so a retry after UNAVAILABLE goes to another replica. The gRPC default,
# pick_first, would keep every RPC on the first address.
_ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})

# Statuses that blame the request, not the sidecar. The sidecar responded, so
# for the circuit breaker they count as a success.
_REQUEST_FAULT_CODES = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE)

DocumentInput = Union[str, tuple[str, str]]
"""A document: its text, or an ``(id, text)`` pair."""

Truncation = Literal["document_first", "longest_first"]
Pooling = Literal["max", "mean"]

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


@dataclass(frozen=True)
class RerankPlan:
    """The RPCs that one rerank call sends: ``(start, stop, request)`` per slice of the documents."""

    pairs: list[tuple[str, str]]
    requests: list[tuple[int, int, rerank_pb2.RerankRequest]]
    top_n: int | None
    score_kind: int


@dataclass(frozen=True)
class PagePlan:
    """A page ready to rerank: its hits, the positions of the hits sent, and the RPCs."""

    source: Mapping[str, Any]
    hits: list[Mapping[str, Any]]
    sent: list[int]
    rerank: RerankPlan | None


class BaseClient:
    """Settings and pure steps of a rerank client; subclasses add the channel and the RPC loop.

    The constructor arguments are documented on `RerankClient`.
    """

    def __init__(self, target: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S,
                 max_documents_per_call: int = DEFAULT_MAX_DOCUMENTS_PER_CALL,
                 max_bytes_per_call: int = DEFAULT_MAX_BYTES_PER_CALL,
                 credentials: grpc.ChannelCredentials | None = None,
                 channel_options: Sequence[tuple[str, Any]] = (),
                 token: str | None = None,
                 fail_open: bool = False,
                 retry: RetryPolicy | None = RetryPolicy(),
                 breaker: CircuitBreaker | None = None,
                 keepalive: Keepalive | None = Keepalive()) -> None:
        _check_timeout(timeout)
        if isinstance(max_documents_per_call, bool) or not isinstance(max_documents_per_call, int) \
                or max_documents_per_call < 1:
            raise RerankInputError(f"max_documents_per_call must be at least 1, got {max_documents_per_call!r}")
        if not isinstance(fail_open, bool):
            raise RerankInputError(f"fail_open must be a bool, got {fail_open!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise RerankInputError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise RerankInputError(f"breaker must be a CircuitBreaker or None, got {type(breaker).__name__}")
        if keepalive is not None and not isinstance(keepalive, Keepalive):
            raise RerankInputError(f"keepalive must be a Keepalive or None, got {type(keepalive).__name__}")

        self.target = resolve_target(target)
        self.timeout = timeout
        self.max_documents_per_call = max_documents_per_call
        self.max_bytes_per_call = max_bytes_per_call
        self.fail_open = fail_open
        self.retry = retry
        self.breaker = breaker
        self.fallbacks: dict[str, int] = {}
        self.retries = 0
        self._stats_lock = threading.Lock()
        self._credentials = credentials
        self._metadata = _auth_metadata(token)
        self._channel_options = _build_channel_options(channel_options, keepalive)
        if token is not None and credentials is None:
            logger.warning("bearer token sent over a plaintext channel target=%s; pass credentials= for TLS",
                           self.target)
        self._channel = self._open_channel(credentials)
        self._stub = rerank_pb2_grpc.RerankerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _open_channel(self, credentials: grpc.ChannelCredentials | None) -> Any:
        """Create the gRPC channel: a plain one in the sync client, an asyncio one in the async client."""
        raise NotImplementedError

    def __repr__(self) -> str:
        # The token is left out on purpose: a repr ends up in logs.
        return (f"{type(self).__name__}(target={self.target!r}, timeout={self.timeout!r}, "
                f"fail_open={self.fail_open!r})")

    # -- plain documents --------------------------------------------------------------------

    def _plan_rerank(self, query: str, documents: Sequence[DocumentInput], top_n: int | None, *,
                     normalized: bool, truncation: str | None, pooling: str | None) -> RerankPlan | None:
        """Check the arguments and build the RPCs; None when there is nothing to send."""
        _check_query(query)
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0):
            raise RerankInputError(f"top_n must be an integer >= 0 or None, got {top_n!r}")
        if truncation not in _TRUNCATIONS:
            raise RerankInputError(f"truncation must be document_first, longest_first or None, got {truncation!r}")
        if pooling not in _POOLINGS:
            raise RerankInputError(f"pooling must be max, mean or None, got {pooling!r}")
        if not isinstance(normalized, bool):
            raise RerankInputError(f"normalized must be a bool, got {normalized!r}")
        pairs = [_as_pair(document, position) for position, document in enumerate(documents)]
        if not pairs or top_n == 0:
            return None

        score_kind = rerank_pb2.SCORE_KIND_NORMALIZED if normalized else rerank_pb2.SCORE_KIND_RAW
        requests = []
        for start, stop in self._split(pairs):
            request = rerank_pb2.RerankRequest(
                query=query,
                documents=[rerank_pb2.Document(id=doc_id, text=text) for doc_id, text in pairs[start:stop]],
                score_kind=score_kind,
                truncation=_TRUNCATIONS[truncation],
                pooling=_POOLINGS[pooling],
            )
            requests.append((start, stop, request))
        return RerankPlan(pairs=pairs, requests=requests, top_n=top_n, score_kind=score_kind)

    def _collect(self, plan: RerankPlan,
                 responses: Sequence[rerank_pb2.RerankResponse]) -> tuple[list[RerankResult], str]:
        """Check each response against its request and merge them into one ranking."""
        results: list[RerankResult] = []
        model = ""
        try:
            for (start, stop, _request), response in zip(plan.requests, responses):
                _check_score_kind(response.score_kind, plan.score_kind)
                scores = validate_results(
                    ((result.index, result.score if result.HasField("score") else None)
                     for result in response.results),
                    stop - start,
                )
                results.extend(RerankResult(start + offset, plan.pairs[start + offset][0], score)
                               for offset, score in enumerate(scores))
                model = response.model
        except RerankProtocolError:
            # A sidecar that breaks the contract fails every call the same way.
            self._record_breaker(failed=True)
            raise
        results.sort(key=lambda result: (result.score is None, -(result.score or 0.0), result.index))
        return (results if plan.top_n is None else results[:plan.top_n]), model

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

    # -- search pages -----------------------------------------------------------------------

    def _plan_page(self, page: object, query: str, fields: TextSpec, *, normalized: bool,
                   truncation: str | None, blend: ScoreBlend | None, min_score: float | None) -> PagePlan:
        """Check the page and the options, extract each hit's text and build the RPCs."""
        source = as_page(page)
        hits = get_hits(source)
        _check_query(query)
        template = as_text_template(fields)
        _check_scoring(blend, min_score)
        if not hits:
            return PagePlan(source=source, hits=hits, sent=[], rerank=None)

        texts = [extract_text(hit, template) for hit in hits]
        sent = [position for position, text in enumerate(texts) if text is not None]
        rerank = self._plan_rerank(query, [(str(position), texts[position]) for position in sent], None,
                                   normalized=normalized, truncation=truncation, pooling=None)
        return PagePlan(source=source, hits=hits, sent=sent, rerank=rerank)

    @staticmethod
    def _finish_page(plan: PagePlan, results: Sequence[RerankResult], model: str, *, normalized: bool,
                     blend: ScoreBlend | None, min_score: float | None) -> dict[str, Any]:
        """Map the results back onto the hits and build the reordered page."""
        if not plan.hits:
            # A page with no hits comes back equal to the input, without a status.
            return copy.deepcopy(dict(plan.source))
        scores: list[float | None] = [None] * len(plan.hits)
        for result in results:
            scores[plan.sent[result.index]] = result.score
        return reorder_page(plan.source, scores, score_kind="normalized" if normalized else "raw", model=model,
                            blend=blend, min_score=min_score)

    def _resolve_fail_open(self, fail_open: bool | None) -> bool:
        if fail_open is None:
            return self.fail_open
        if not isinstance(fail_open, bool):
            raise RerankInputError(f"fail_open must be a bool or None, got {fail_open!r}")
        return fail_open

    def _fallback_page(self, source: Mapping[str, Any], error: RerankError) -> dict[str, Any]:
        """Count and log a failed rerank and return the page in first-stage order, marked skipped."""
        reason = f"{type(error).__name__}: {error}"
        code = reason_code(error)
        self._count_fallback(error)
        logger.warning("rerank skipped, page kept in first-stage order target=%s hits=%d reason_code=%s reason=%s",
                       self.target, len(get_hits(source)), code, reason)
        return mark_page(source, reason=reason, status="skipped", reason_code=code)

    def _count_fallback(self, error: RerankError) -> None:
        name = type(error).__name__
        with self._stats_lock:
            self.fallbacks[name] = self.fallbacks.get(name, 0) + 1

    # -- shadow mode ------------------------------------------------------------------------

    @staticmethod
    def _shadow_result(source: Mapping[str, Any], reranked: dict[str, Any], top_k: int) -> ShadowResult:
        order = [hit[RERANK_KEY]["first_stage_rank"] for hit in reranked["hits"]["hits"]]
        return ShadowResult(page=source, reranked=reranked, order=order,
                            comparison=compare_orders(order, top_k), reason=None, reason_code=None)

    def _shadow_failure(self, source: Mapping[str, Any], error: RerankError) -> ShadowResult:
        reason = f"{type(error).__name__}: {error}"
        code = reason_code(error)
        self._count_fallback(error)
        logger.warning("shadow rerank failed, page served unchanged target=%s reason_code=%s reason=%s",
                       self.target, code, reason)
        return ShadowResult(page=source, reranked=None, order=None, comparison=None, reason=reason,
                            reason_code=code)

    # -- calls: deadline, retries and the circuit breaker -----------------------------------

    def _deadline(self, timeout: float | None) -> float:
        if timeout is not None:
            _check_timeout(timeout)
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _start_attempt(self, deadline: float, guarded: bool) -> float:
        """Return the seconds left for the next RPC, or raise when none may be sent."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RerankTimeoutError(f"deadline passed before calling {self.target}")
        if guarded and self.breaker is not None and not self.breaker.allow():
            raise RerankCircuitOpenError(
                f"circuit breaker open after {self.breaker.failure_threshold} consecutive sidecar failures; "
                f"no call sent to {self.target}, next trial in {self.breaker.retry_after_s():.1f} s")
        return remaining

    def _retry_delay(self, error: grpc.RpcError, attempt: int, deadline: float, guarded: bool) -> float | None:
        """Record a failed RPC and return the wait before retrying it, or None to give up."""
        code = _code_of(error)
        # CANCELLED comes from this side (the channel closed, the caller gave
        # up), so it is no evidence about the sidecar.
        if guarded and code is not grpc.StatusCode.CANCELLED:
            self._record_breaker(failed=code not in _REQUEST_FAULT_CODES)
        if not guarded or self.retry is None or code is not grpc.StatusCode.UNAVAILABLE:
            return None
        if attempt >= self.retry.max_attempts:
            return None
        delay = self.retry.backoff_s(attempt)
        if deadline - time.monotonic() - delay < self.retry.min_attempt_s:
            return None
        if self.breaker is not None and self.breaker.state == "open":
            return None
        with self._stats_lock:
            self.retries += 1
        logger.debug("rerank retry target=%s attempt=%d code=%s delay_ms=%.0f",
                     self.target, attempt + 1, code.name, delay * 1000)
        return delay

    def _record_breaker(self, *, failed: bool) -> None:
        if self.breaker is None:
            return
        if failed:
            self.breaker.record_failure()
        else:
            self.breaker.record_success()


def resolve_target(target: str | Sequence[str]) -> str:
    """Return the gRPC target string for one target or a list of ``host:port`` replicas.

    A list of IPv4 (or of bracketed IPv6) addresses becomes one ``ipv4:`` (or
    ``ipv6:``) target with every address. Host names cannot go in such a
    list; name them with one ``dns:///name:port`` target, whose resolver
    returns every address of the name.
    """
    if isinstance(target, str):
        if not target.strip():
            raise RerankInputError("target must be a gRPC target such as '127.0.0.1:50051', got an empty string")
        return target
    if not isinstance(target, Sequence) or not target:
        raise RerankInputError(f"target must be a string or a non-empty list of 'host:port' strings, got {target!r}")

    schemes = set()
    for address in target:
        schemes.add(_address_scheme(address))
    if len(schemes) > 1:
        raise RerankInputError(f"target mixes IPv4 and IPv6 addresses, which one gRPC target cannot: {target!r}")
    return f"{schemes.pop()}:{','.join(target)}"


def _address_scheme(address: object) -> str:
    if not isinstance(address, str) or ":" not in address:
        raise RerankInputError(f"each replica must be a 'host:port' string, got {address!r}")
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RerankInputError(f"invalid port in replica address {address!r}")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise RerankInputError(
            f"replica address {address!r} is not an IP address; name replicas behind a DNS name with "
            "one target such as 'dns:///reranker-headless:50051'") from None
    if ip.version == 6 and not bracketed:
        raise RerankInputError(f"write IPv6 replica addresses in brackets, such as '[::1]:50051', got {address!r}")
    return "ipv4" if ip.version == 4 else "ipv6"


def map_rpc_error(error: grpc.RpcError, target: str) -> RerankError:
    """Map a gRPC status onto the client's exception tree; the one place that does so."""
    code = _code_of(error)
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


def reason_code(error: RerankError) -> str:
    """Return the one-word cause of a failed rerank that goes into ``_rerank.reason_code``."""
    if isinstance(error, RerankCircuitOpenError):
        return "circuit_open"
    if isinstance(error, RerankTimeoutError):
        return "timeout"
    if isinstance(error, RerankUnavailableError):
        return "unavailable"
    if isinstance(error, RerankRejectedError):
        return "rejected"
    if isinstance(error, RerankProtocolError):
        return "protocol_error"
    return "server_error"


def should_fail_open(error: RerankError, fail_open: bool) -> bool:
    """Return whether a failed rerank falls back to first-stage order; input errors never do."""
    return fail_open and not isinstance(error, RerankInputError)


def _code_of(error: grpc.RpcError) -> grpc.StatusCode:
    code = error.code() if hasattr(error, "code") else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _build_channel_options(extra: Sequence[tuple[str, Any]], keepalive: Keepalive | None) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", MESSAGE_LIMIT),
        ("grpc.max_receive_message_length", MESSAGE_LIMIT),
    ]
    if keepalive is not None:
        options.extend(keepalive.channel_options())
    if not any(name == "grpc.service_config" for name, _value in extra):
        # Ignore service configs published in DNS TXT records, so the policy
        # stays the one set here.
        options.extend([("grpc.service_config", _ROUND_ROBIN), ("grpc.service_config_disable_resolution", 1)])
    options.extend(extra)
    return options


def _auth_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    if token is None:
        return None
    # The messages never include the token itself, since errors end up in logs.
    if not isinstance(token, str) or not token:
        raise RerankInputError(f"token must be a non-empty string or None, got a {type(token).__name__}")
    if not token.isascii() or not token.isprintable() or any(char.isspace() for char in token):
        raise RerankInputError("token must be printable ASCII without spaces, as an HTTP header value requires")
    return (("authorization", f"Bearer {token}"),)


def _check_timeout(timeout: object) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 \
            or not math.isfinite(timeout):
        raise RerankInputError(f"timeout must be a positive number of seconds, got {timeout!r}")


def _check_score_kind(received: int, requested: int) -> None:
    # SCORE_KIND_UNSPECIFIED (0) is what a server that never sets the field
    # sends; the scores are then taken to be of the requested kind.
    if received not in (rerank_pb2.SCORE_KIND_UNSPECIFIED, requested):
        raise RerankProtocolError(
            f"Invalid rerank response: expected score kind {_score_kind_name(requested)}, "
            f"but received {_score_kind_name(received)}. "
            "This is a bug in the rerank server, not in the request.")


def _score_kind_name(value: int) -> str:
    try:
        return rerank_pb2.ScoreKind.Name(value)
    except ValueError:
        return f"unknown value {value}"


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
