"""Prometheus metrics of one server, in a registry of its own.

Every name starts with ``rerank_``. A registry per server lets tests run several
servers in one process without name clashes.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .batcher import BatchStats

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_BATCH_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServerMetrics:
    """Counters, gauges and histograms for requests, batches and the queue."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter("rerank_requests", "RPCs finished, by method and gRPC status code",
                                ["method", "code"], registry=registry)
        self.pairs = Counter("rerank_pairs_scored", "pairs the model scored; a chunk counts as one pair, "
                             "cache hits are not counted", registry=registry)
        self.tokens = Counter("rerank_tokens", "tokens fed to the model, padding excluded", registry=registry)
        self.truncated = Counter("rerank_documents_truncated", "documents cut to the max length",
                                 registry=registry)
        self.truncated_tokens = Counter("rerank_truncated_tokens", "document tokens removed by cuts",
                                        registry=registry)
        self.queries_truncated = Counter("rerank_queries_truncated", "queries cut to half the max length",
                                         registry=registry)
        self.dropped_total = Counter("rerank_dropped_pairs", "queued pairs dropped before scoring, by reason "
                                     "(deadline: the caller's deadline passed; cancelled: the caller left)",
                                     ["reason"], registry=registry)
        self.rejected = Counter("rerank_rejected_requests", "requests rejected before any scoring, by reason",
                                ["reason"], registry=registry)
        self.cache = Counter("rerank_score_cache", "score cache lookups, by result", ["result"],
                             registry=registry)
        self.cache_entries = Gauge("rerank_score_cache_entries", "scores held in the score cache",
                                   registry=registry)
        self.in_flight = Gauge("rerank_in_flight_requests", "Rerank calls admitted and not yet answered",
                               registry=registry)
        self.serving = Gauge("rerank_serving", "1 while health reports SERVING, else 0", registry=registry)
        # Series that exist before their first event, so dashboards and alerts see zeros, not gaps.
        for reason in ("deadline", "cancelled"):
            self.dropped_total.labels(reason=reason)
        for result in ("hit", "miss"):
            self.cache.labels(result=result)
        self.queue_wait = Histogram("rerank_queue_wait_seconds", "time a batch's oldest pair waited",
                                    buckets=_LATENCY_BUCKETS, registry=registry)
        self.tokenization = Histogram("rerank_tokenization_seconds", "tokenization time per request",
                                      buckets=_LATENCY_BUCKETS, registry=registry)
        self.inference = Histogram("rerank_inference_seconds", "model time per batch",
                                   buckets=_LATENCY_BUCKETS, registry=registry)
        self.request_time = Histogram("rerank_request_seconds", "total time per successful Rerank request",
                                      buckets=_LATENCY_BUCKETS, registry=registry)
        self.batch_pairs = Histogram("rerank_batch_pairs", "pairs per model batch", buckets=_BATCH_BUCKETS,
                                     registry=registry)
        self.batch_padded_tokens = Histogram("rerank_batch_padded_tokens",
                                             "tokens per model batch, padding included",
                                             buckets=_BATCH_TOKEN_BUCKETS, registry=registry)
        self.queue_requests = Gauge("rerank_queue_requests", "requests in the batch queue: tokenized, not yet fully scored",
                                    registry=registry)
        self.queue_tokens = Gauge("rerank_queue_tokens", "tokens waiting for a batch", registry=registry)

    # BatcherMetrics protocol
    def batch_done(self, stats: BatchStats) -> None:
        self.queue_wait.observe(stats.queue_wait_s)
        self.inference.observe(stats.inference_s)
        self.batch_pairs.observe(stats.pairs)
        self.pairs.inc(stats.pairs)
        self.tokens.inc(stats.tokens)
        self.batch_padded_tokens.observe(stats.padded_tokens)

    def queue_changed(self, requests: int, tokens: int) -> None:
        self.queue_requests.set(requests)
        self.queue_tokens.set(tokens)

    def dropped(self, reason: str, pairs: int) -> None:
        self.dropped_pairs(reason, pairs)

    def dropped_pairs(self, reason: str, pairs: int) -> None:
        self.dropped_total.labels(reason=reason).inc(pairs)

    def serve(self, host: str, port: int) -> int:
        """Expose the registry over HTTP at /metrics; return the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        bound = server.server_address[1]
        self._http_server = server
        logger.info("metrics listening address=%s:%d", host, bound)
        return bound

    def close(self) -> None:
        server = getattr(self, "_http_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
