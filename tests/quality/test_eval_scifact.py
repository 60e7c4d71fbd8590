"""rerank-eval on a slice of SciFact against a real OpenSearch node and a real bi-encoder sidecar.

The sidecar serves the tiny random bi-encoder, so these tests check the pipeline
(BM25 through the node, reranking through the sidecar, blending, metrics), not
ranking quality. The full run with all-MiniLM-L6-v2 is a benchmark command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerank_quality.dataset import load_split
from rerank_quality.evaluate import collect_candidates, compare_systems, tune_weight
from rerank_quality.measures import evaluate_run, ranking_to_run

pytestmark = pytest.mark.opensearch

QUERIES = 10
K = 20


@pytest.fixture(scope="module")
def test_slice(scifact):
    from rerank_harness.scifact import scifact_dir

    return load_split(scifact_dir(), "test", limit=QUERIES, documents=scifact.documents)


@pytest.fixture(scope="module")
def candidates(opensearch_client, scifact_index: str, test_slice, bi_encoder_sidecar):
    from rerank_client import RerankClient

    with RerankClient(bi_encoder_sidecar.target, timeout=60.0) as client:
        found, model = collect_candidates(opensearch_client, scifact_index, test_slice, client, k=K, depth=100,
                                          progress=False)
    assert model == str(bi_encoder_sidecar.model)
    return found


def test_eval_slice_bm25_finds_judged_documents(test_slice, candidates) -> None:
    bm25 = compare_systems(test_slice, candidates, None)["BM25"]

    assert len(candidates) == QUERIES
    assert all(len(entry.doc_ids) == 100 for entry in candidates)
    # BM25 finds most judged SciFact documents in its top 100; a broken index or query finds none.
    assert bm25["Recall@100"] > 0.7
    assert bm25["nDCG@10"] > 0.4


def test_eval_slice_rerank_moves_only_top_k(test_slice, candidates) -> None:
    for entry in candidates:
        reranked = entry.rerank_order()
        assert len(entry.rerank) == K
        assert sorted(reranked[:K]) == sorted(entry.doc_ids[:K])
        assert reranked[K:] == entry.doc_ids[K:]


def test_eval_slice_blend_weight_ends(test_slice, candidates) -> None:
    for entry in candidates:
        assert entry.blend_order(0.0) == entry.bm25_order()
        assert entry.blend_order(1.0) == entry.rerank_order()


def test_eval_slice_measures_match_direct_computation(test_slice, candidates) -> None:
    systems = compare_systems(test_slice, candidates, 0.5)
    direct = evaluate_run(test_slice.qrels, ranking_to_run({entry.query_id: entry.rerank_order()
                                                            for entry in candidates}))

    assert systems["BM25 + rerank"] == direct
    assert systems["BM25"]["Recall@100"] == systems["BM25 + rerank"]["Recall@100"]
    assert "BM25 + rerank, blended (weight 0.5)" in systems


def test_eval_slice_tune_weight_returns_best(test_slice, candidates) -> None:
    weight, tried = tune_weight(test_slice, candidates, [0.0, 0.5, 1.0])

    assert list(tried) == [0.0, 0.5, 1.0]
    assert tried[weight] == max(tried.values())


def test_eval_cli_slice_writes_report(opensearch_node, scifact_index: str, bi_encoder_sidecar, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from rerank_harness.scifact import scifact_dir
    from rerank_quality import eval_cli

    output = tmp_path / "report.json"
    status = eval_cli.main(["--dataset", str(scifact_dir()), "--queries", "5", "--tune-queries", "5", "--k", "10",
                            "--target", bi_encoder_sidecar.target, "--opensearch-url", opensearch_node.url,
                            "--index", scifact_index, "--weights", "0,0.5,1", "--output", str(output),
                            "--no-progress", "--log-level", "WARNING"])

    assert status == 0
    report = json.loads(output.read_text())
    assert (report["split"], report["queries"], report["k"], report["depth"]) == ("test", 5, 10, 100)
    assert report["weight_source"] == "best nDCG@10 on train (5 queries)"
    assert set(report["tuning_ndcg10"]) == {"0", "0.5", "1"}
    assert list(report["systems"]) == ["BM25", "BM25 + rerank", f"BM25 + rerank, blended (weight {report['weight']:g})"]
    assert report["published_ndcg10"]["BEIR paper: BM25"] == 0.665
    table = capsys.readouterr().out
    assert table.startswith("| system | nDCG@10 | MRR@10 | Recall@100 |")


def test_eval_cli_rejects_tuning_on_test(capsys: pytest.CaptureFixture[str]) -> None:
    from rerank_quality import eval_cli

    with pytest.raises(SystemExit) as raised:
        eval_cli.main(["--split", "train", "--tune-split", "train"])

    assert raised.value.code == 2
    assert "--tune-split train equals --split" in capsys.readouterr().err
