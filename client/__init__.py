"""Thin client of the rerank sidecar: reorders OpenSearch and Elasticsearch result pages.

Installing it brings grpcio and protobuf only: no torch, no model code.

Example::

    from rerank_client import RerankClient

    with RerankClient("127.0.0.1:50051", timeout=2.0) as client:
        page = opensearch.search(index="docs", body={"query": {"match": {"text": query}}, "size": 50})
        reranked = client.rerank_page(page, query, fields=["title", "text"])
"""

from __future__ import annotations

from ._client import DocumentInput, RerankClient, RerankResult
from ._errors import (
    RerankError,
    RerankInputError,
    RerankProtocolError,
    RerankRejectedError,
    RerankServerError,
    RerankTimeoutError,
    RerankUnavailableError,
)
from ._reorder import RERANK_KEY, mark_page, reorder_page, validate_results
from ._text import TextField, TextTemplate, extract_text

__all__ = [
    "RERANK_KEY",
    "DocumentInput",
    "RerankClient",
    "RerankError",
    "RerankInputError",
    "RerankProtocolError",
    "RerankRejectedError",
    "RerankResult",
    "RerankServerError",
    "RerankTimeoutError",
    "RerankUnavailableError",
    "TextField",
    "TextTemplate",
    "extract_text",
    "mark_page",
    "reorder_page",
    "validate_results",
]
