"""Rerank orchestration, free of any transport: validate, encode, queue, pool, sort.

The gRPC service calls :meth:`Engine.rerank`; another transport (an HTTP endpoint)
can call it the same way and share the model and the batcher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .batcher import Batcher, JobDroppedError
from .cache import ScoreCache
from .errors import InvalidRequestError
from .metrics import ServerMetrics
from .model import CrossEncoderModel, EncodedPair

logger = logging.getLogger(__name__)

TRUNCATIONS = ("document_first", "longest_first")
POOLINGS = (None, "max", "mean")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-request limits; each violation is an :class:`InvalidRequestError`."""

    max_documents: int
    max_document_bytes: int
    max_request_bytes: int
    max_query_bytes: int
    max_document_chars: int


@dataclass(frozen=True, kw_only=True)
class RerankOptions:
    """Options of one request besides its query and documents."""

    top_n: int | None = None
    normalized: bool = False
    truncation: str = "document_first"
    pooling: str | None = None


@dataclass
class Usage:
    pairs_scored: int = 0
    tokens: int = 0
    documents_truncated: int = 0
    tokens_truncated: int = 0
    queries_truncated: int = 0
    cache_hits: int = 0


@dataclass(frozen=True)
class RankedDocument:
    """One result: position in the request and score (None for a blank document)."""

    index: int
    score: float | None


@dataclass
class RerankOutcome:
    ranked: list[RankedDocument]
    usage: Usage = field(default_factory=Usage)


def validate_request(query: str, texts: Sequence[str], top_n: int | None, request_bytes: int,
                     limits: Limits) -> None:
    """Check one request against the limits.

    Raises:
        InvalidRequestError: naming the field, its value and the limit.
    """
    if request_bytes > limits.max_request_bytes:
        raise InvalidRequestError(
            "request", f"request is {request_bytes} bytes, over the limit of {limits.max_request_bytes} "
            "bytes (--max-request-bytes); send fewer or shorter documents per request")
    if not query.strip():
        raise InvalidRequestError("query", f"query {query!r} is empty or whitespace only; send the search text")
    query_bytes = len(query.encode("utf-8"))
    if query_bytes > limits.max_query_bytes:
        raise InvalidRequestError(
            "query", f"query is {query_bytes} bytes, over the limit of {limits.max_query_bytes} bytes "
            "(--max-query-bytes)")
    if len(texts) > limits.max_documents:
        raise InvalidRequestError(
            "documents", f"documents has {len(texts)} entries, over the limit of {limits.max_documents} per "
            "request (--max-documents); split the page into several requests")
    for index, text in enumerate(texts):
        size = len(text.encode("utf-8"))
        if size > limits.max_document_bytes:
            raise InvalidRequestError(
                f"documents[{index}].text", f"documents[{index}].text is {size} bytes, over the limit of "
                f"{limits.max_document_bytes} bytes (--max-document-bytes)")
    if top_n is not None and top_n < 0:
        raise InvalidRequestError(
            "top_n", f"top_n is {top_n}; expected 0 or more, or unset to return every result")


class Engine:
    """Shares one model and one batcher between all requests of a server."""

    def __init__(self, model: CrossEncoderModel, batcher: Batcher, *, limits: Limits,
                 metrics: ServerMetrics | None = None, cache: ScoreCache | None = None) -> None:
        self.model = model
        self.batcher = batcher
        self.limits = limits
        self.metrics = metrics
        self.cache = cache

    def rerank(self, query: str, texts: Sequence[str], options: RerankOptions, *,
               deadline: float | None = None, is_active: Callable[[], bool] | None = None) -> RerankOutcome:
        """Score every text against the query and return them sorted, highest score first.

        The order always follows the raw scores, also when normalized scores are
        returned, so normalization can never merge two ranks. Ties keep request
        order. Blank texts are not scored and come last, in request order.

        Args:
            deadline: ``time.monotonic()`` value after which unscored pairs are dropped.
            is_active: Returns False once the caller has gone.

        Raises:
            InvalidRequestError, QueueFullError, JobDroppedError, BatcherStoppedError.
        """
        usage = Usage()
        scored_indexes = [index for index, text in enumerate(texts) if text.strip()]
        raw = np.zeros(len(scored_indexes), dtype=np.float64)
        if scored_indexes:
            raw = self._score(query, [texts[index] for index in scored_indexes], options, usage,
                              deadline, is_active)

        order = sorted(range(len(scored_indexes)), key=lambda position: -raw[position])
        values = self.model.normalize(raw) if options.normalized else raw
        ranked = [RankedDocument(scored_indexes[position], float(values[position])) for position in order]
        scored = set(scored_indexes)
        ranked.extend(RankedDocument(index, None) for index in range(len(texts)) if index not in scored)
        if options.top_n is not None:
            ranked = ranked[: options.top_n]
        return RerankOutcome(ranked, usage)

    def _score(self, query: str, texts: list[str], options: RerankOptions, usage: Usage,
               deadline: float | None, is_active: Callable[[], bool] | None) -> np.ndarray:
        raw = np.zeros(len(texts), dtype=np.float64)
        missing = list(range(len(texts)))
        if self.cache is not None:
            missing = []
            for position, text in enumerate(texts):
                value = self.cache.get(query, text, options.truncation, options.pooling)
                if value is None:
                    missing.append(position)
                else:
                    raw[position] = value
            usage.cache_hits = len(texts) - len(missing)
            if self.metrics is not None:
                self.metrics.cache.labels(result="hit").inc(usage.cache_hits)
                self.metrics.cache.labels(result="miss").inc(len(missing))
        if not missing:
            return raw
        if deadline is not None and time.monotonic() >= deadline:
            # Tokenizing for a caller whose deadline passed would only waste CPU.
            raise JobDroppedError("deadline")

        started = time.perf_counter()
        encoded = self.model.encode(query, [texts[position] for position in missing],
                                    truncation=options.truncation, pooling=options.pooling,
                                    max_document_chars=self.limits.max_document_chars)
        if self.metrics is not None:
            self.metrics.tokenization.observe(time.perf_counter() - started)

        job = self.batcher.submit(encoded.pairs, deadline=deadline, is_active=is_active)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            pair_scores = job.wait(timeout)
        except TimeoutError:
            job.cancel("deadline")
            pair_scores = job.wait(0)  # raises JobDroppedError unless the job finished meanwhile

        document_scores = _pool(encoded.pairs, pair_scores, len(missing), options.pooling)
        for offset, position in enumerate(missing):
            raw[position] = document_scores[offset]
            if self.cache is not None:
                self.cache.put(query, texts[position], options.truncation, options.pooling,
                               float(document_scores[offset]))

        usage.pairs_scored = len(encoded.pairs)
        usage.tokens = encoded.tokens
        usage.documents_truncated = encoded.documents_truncated
        usage.tokens_truncated = encoded.tokens_truncated
        usage.queries_truncated = int(encoded.query_truncated)
        if self.metrics is not None:
            # Pairs and tokens are counted per model batch (ServerMetrics.batch_done).
            self.metrics.truncated.inc(usage.documents_truncated)
            self.metrics.queries_truncated.inc(usage.queries_truncated)
            self.metrics.truncated_tokens.inc(usage.tokens_truncated)
        return raw


def _pool(pairs: Sequence[EncodedPair], scores: np.ndarray, documents: int, pooling: str | None) -> np.ndarray:
    """Reduce pair scores to one score per document: max or mean over its chunks."""
    if pooling is None:
        return scores.astype(np.float64)
    owners = np.fromiter((pair.document_index for pair in pairs), dtype=np.int64, count=len(pairs))
    values = scores.astype(np.float64)
    if pooling == "max":
        pooled = np.full(documents, -np.inf)
        np.maximum.at(pooled, owners, values)
        return pooled
    sums = np.bincount(owners, weights=values, minlength=documents)
    counts = np.bincount(owners, minlength=documents)
    return sums / counts
