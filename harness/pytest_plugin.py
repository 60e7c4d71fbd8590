"""Pytest fixtures for a real OpenSearch node and an index of SciFact.

Enable with ``-p rerank_harness.pytest_plugin`` or with
``pytest_plugins = ["rerank_harness.pytest_plugin"]`` in a root conftest.py.

Environment variables:
    RERANK_TEST_OPENSEARCH_URL: Use the node at this URL and start none.
    RERANK_OPENSEARCH_VERSION, _HTTP_PORT, _HEAP, _CACHE, _JAVA_HOME,
    _TIMEOUT_S: Settings of the node that ``opensearch_node`` starts (see
        ``NodeConfig.from_env``). TIMEOUT_S also bounds the health wait for a
        node given by URL.

A node that cannot start or turn green fails the fixture with its URL and the
tail of its log. The fixtures never skip, so a missing node cannot pass
unnoticed in CI.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from rerank_harness.opensearch import ExternalNode, NodeConfig, OpenSearchNode, OpenSearchNodeError
from rerank_harness.scifact import SciFact, create_index, index_corpus, load_scifact

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

TEST_URL_ENV = "RERANK_TEST_OPENSEARCH_URL"


@pytest.fixture(scope="session")
def opensearch_node() -> Iterator[OpenSearchNode | ExternalNode]:
    """Yield a green OpenSearch node: the one at RERANK_TEST_OPENSEARCH_URL, else a new one.

    A node started here runs for the whole session and is stopped at its end.
    """
    try:
        config = NodeConfig.from_env()
    except ValueError as error:
        pytest.fail(f"invalid OpenSearch node setting: {error}", pytrace=False)

    if url := os.environ.get(TEST_URL_ENV):
        external = ExternalNode(url.rstrip("/"))
        try:
            external.wait_for_green(config.timeout_s)
        except OpenSearchNodeError as error:
            pytest.fail(f"{error} (the URL comes from {TEST_URL_ENV})", pytrace=False)
        yield external
        return

    node = OpenSearchNode(config)
    try:
        node.start()
        node.wait_for_green()
    except OpenSearchNodeError as error:
        node.stop()
        pytest.fail(str(error), pytrace=False)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def opensearch_client(opensearch_node: OpenSearchNode | ExternalNode) -> Iterator[OpenSearch]:
    """Yield an opensearch-py client for ``opensearch_node``, closed at the end of the session."""
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[opensearch_node.url], timeout=60)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def scifact() -> SciFact:
    """Return the SciFact dataset from ``data/scifact`` (or RERANK_SCIFACT_DIR)."""
    return load_scifact()


@pytest.fixture(scope="session")
def scifact_index(
    opensearch_node: OpenSearchNode | ExternalNode, opensearch_client: OpenSearch, scifact: SciFact
) -> Iterator[str]:
    """Yield the name of a new ``test-scifact-*`` index holding the SciFact corpus.

    The index is deleted at the end of the session.
    """
    from opensearchpy.exceptions import OpenSearchException
    from opensearchpy.helpers import BulkIndexError

    name = f"test-scifact-{uuid.uuid4().hex[:12]}"
    try:
        create_index(opensearch_client, name)
        index_corpus(opensearch_client, name, scifact.documents)
    except (OpenSearchException, BulkIndexError) as error:
        with contextlib.suppress(OpenSearchException):
            opensearch_client.indices.delete(index=name, ignore_unavailable=True)
        pytest.fail(
            f"indexing SciFact into {name} at {opensearch_node.url} failed: {error}\n"
            f"--- node log tail ---\n{opensearch_node.log_tail(50)}",
            pytrace=False,
        )
    try:
        yield name
    finally:
        opensearch_client.indices.delete(index=name, ignore_unavailable=True)
