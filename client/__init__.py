"""Thin client of the rerank sidecar: reorders OpenSearch and Elasticsearch result pages.

Installing it brings grpcio and protobuf only: no torch, no model code.
opensearch-py is needed only to pass its clients to `WindowSearch` and
`AsyncWindowSearch`, and the client never imports it.

Example::

    from rerank_client import RerankClient, WindowSearch

    with RerankClient(["10.0.0.5:50051", "10.0.0.6:50051"], timeout=0.3, fail_open=True) as client:
        # One page, reranked on its own:
        page = opensearch.search(index="docs", body={"query": {"match": {"text": query}}, "size": 50})
        reranked = client.rerank_page(page, query, fields=["title", "text"])
        # Pages cut from a reranked window of the top 100 hits:
        pages = WindowSearch(opensearch, client, ["title", "text"], window=100)
        page_2 = pages.search(index="docs", body={"query": {"match": {"text": query}}}, query=query,
                              from_=10, size=10)
        if page_2["_rerank"]["status"] != "reranked":
            ...  # served in first-stage order; _rerank.reason states why

`AsyncRerankClient` is the same client for asyncio.
"""

from __future__ import annotations

from ._aio import AsyncRerankClient
from ._blend import ScoreBlend
from ._breaker import CircuitBreaker
from ._client import DocumentInput, RerankClient, RerankResult
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
from ._reorder import RERANK_KEY, mark_page, reorder_page, validate_results
from ._shadow import ShadowResult
from ._text import TextField, TextTemplate, TokenSpans, extract_text, tokenizer_spans, word_spans
from ._window import AsyncWindowSearch, RankedWindow, WindowSearch

__all__ = [
    "RERANK_KEY",
    "AsyncRerankClient",
    "AsyncWindowSearch",
    "CircuitBreaker",
    "DocumentInput",
    "Keepalive",
    "RankedWindow",
    "RerankCircuitOpenError",
    "RerankClient",
    "RerankError",
    "RerankInputError",
    "RerankProtocolError",
    "RerankRejectedError",
    "RerankResult",
    "RerankServerError",
    "RerankTimeoutError",
    "RerankUnavailableError",
    "RetryPolicy",
    "ScoreBlend",
    "ShadowResult",
    "TextField",
    "TextTemplate",
    "TokenSpans",
    "WindowSearch",
    "extract_text",
    "mark_page",
    "reorder_page",
    "tokenizer_spans",
    "validate_results",
    "word_spans",
]
