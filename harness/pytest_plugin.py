"""Pytest fixtures for a real OpenSearch node and an index of SciFact.

Enable with ``-p rerank_harness.pytest_plugin`` or with
``pytest_plugins = ["rerank_harness.pytest_plugin"]`` in a root conftest.py.

Environment variables:
    RERANK_TEST_DOCKER: With 1, start OpenSearch and the sidecar through
        pytest-docker from deploy/docker-compose.yml (needs a Docker engine),
        serving the tiny test model, instead of a native node and process.
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
import dataclasses
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from rerank_harness.opensearch import ExternalNode, NodeConfig, OpenSearchNode, OpenSearchNodeError
from rerank_harness.scifact import SciFact, create_index, index_corpus, load_scifact

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

TEST_URL_ENV = "RERANK_TEST_OPENSEARCH_URL"


@pytest.fixture(scope="session")
def opensearch_node(request: pytest.FixtureRequest) -> Iterator[OpenSearchNode | ExternalNode]:
    """Yield a green OpenSearch node: the one at RERANK_TEST_OPENSEARCH_URL, else a new one.

    A node started here runs for the whole session and is stopped at its end.
    With RERANK_TEST_DOCKER=1 the node is the Compose file's ``opensearch`` service.
    """
    try:
        config = NodeConfig.from_env()
    except ValueError as error:
        pytest.fail(f"invalid OpenSearch node setting: {error}", pytrace=False)

    if docker_mode():
        services = request.getfixturevalue("compose_services")
        external = ExternalNode(f"http://127.0.0.1:{services.port_for('opensearch', 9200)}")
        external.wait_for_green(config.timeout_s)
        yield external
        return

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


# -- models and the sidecar ---------------------------------------------------------------------

DOCKER_ENV = "RERANK_TEST_DOCKER"
COMPOSE_FILE = Path(__file__).resolve().parent.parent / "deploy" / "docker-compose.yml"


def docker_mode() -> bool:
    """Return True when RERANK_TEST_DOCKER=1 selects the Compose services."""
    return os.environ.get(DOCKER_ENV) == "1"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a random 2-layer BERT cross-encoder once per session and return its folder."""
    from rerank_harness.models import build_tiny_cross_encoder

    folder = build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))
    folder.chmod(0o755)  # a container user must be able to read a bind-mounted copy
    return folder


@pytest.fixture(scope="session")
def reference_encoder(tiny_model_dir: Path) -> Any:
    """Return sentence-transformers' own CrossEncoder on the tiny model: the reference for scores."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    """Prefer the Compose v2 plugin and fall back to the standalone docker-compose."""
    import shutil
    import subprocess

    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return "docker compose"
    return "docker-compose"


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"rerank-test-{os.getpid()}"


@pytest.fixture(scope="session")
def compose_services(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Any:
    """Start the Compose services with the tiny model mounted, through pytest-docker."""
    os.environ["RERANK_MODEL_DIR"] = str(tiny_model_dir)
    return request.getfixturevalue("docker_services")


@dataclasses.dataclass
class ComposeSidecar:
    """The Compose file's ``reranker`` service, seen like a SidecarProcess."""

    target: str
    pid: int | None = None

    def stop(self, timeout: float = 0.0) -> None:
        """Leave the service running: pytest-docker stops the whole project at session end."""


@pytest.fixture(scope="session")
def sidecar(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[Any]:
    """Yield one real sidecar serving the tiny model: a ``rerank-server`` process, or the Compose service."""
    if docker_mode():
        services = request.getfixturevalue("compose_services")
        yield ComposeSidecar(target=f"127.0.0.1:{services.port_for('reranker', 50051)}")
        return

    from rerank_harness.sidecar import SidecarError, SidecarProcess

    process = SidecarProcess(tiny_model_dir, args=["--batch-size", "32"])
    try:
        process.start()
    except SidecarError as error:
        process.stop()
        pytest.fail(str(error), pytrace=False)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def sidecar_client(sidecar: Any) -> Iterator[Any]:
    """Yield a ``RerankClient`` of the ``sidecar`` fixture with a 30 s deadline, closed after the test."""
    from rerank_client import RerankClient

    with RerankClient(sidecar.target, timeout=30.0) as client:
        yield client
