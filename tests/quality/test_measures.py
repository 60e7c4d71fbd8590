"""Ranking metrics and score blending, checked on cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rerank_quality.blend import blend_scores, min_max, order_by
from rerank_quality.measures import evaluate_run, ranking_to_run

# One query, two relevant documents (d1, d3), ranked d2, d1, d3:
#   DCG@10  = 1/log2(3) + 1/log2(4)   (d1 at rank 2, d3 at rank 3)
#   IDCG@10 = 1/log2(2) + 1/log2(3)
#   RR@10   = 1/2 (first relevant at rank 2); Recall@100 = 2/2.
QRELS = {"q1": {"d1": 1, "d3": 1}}
RANKING = {"q1": ["d2", "d1", "d3"]}
EXPECTED_NDCG10 = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))


def test_evaluate_run_hand_computed_case() -> None:
    values = evaluate_run(QRELS, ranking_to_run(RANKING))

    assert values["nDCG@10"] == pytest.approx(EXPECTED_NDCG10, abs=1e-6)
    assert values["MRR@10"] == pytest.approx(0.5)
    assert values["Recall@100"] == pytest.approx(1.0)


def test_evaluate_run_relevant_past_cutoff() -> None:
    # The only relevant document is at rank 11: outside nDCG@10 and MRR@10, inside Recall@100.
    ranking = {"q1": [f"n{position}" for position in range(10)] + ["d1"]}

    values = evaluate_run({"q1": {"d1": 1}}, ranking_to_run(ranking))

    assert values == {"nDCG@10": 0.0, "MRR@10": 0.0, "Recall@100": 1.0}


def test_evaluate_run_missing_query_counts_zero() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d9": 1}}

    values = evaluate_run(qrels, ranking_to_run({"q1": ["d1"]}))

    assert values["MRR@10"] == pytest.approx(0.5)
    assert values["Recall@100"] == pytest.approx(0.5)


def test_evaluate_run_per_query() -> None:
    values = evaluate_run(QRELS, ranking_to_run(RANKING), per_query=True)

    assert list(values) == ["q1"]
    assert values["q1"]["MRR@10"] == pytest.approx(0.5)


def test_ranking_to_run_keeps_order_under_trec_eval() -> None:
    # trec_eval breaks score ties by doc id; distinct scores must keep "z" above "a".
    run = ranking_to_run({"q1": ["z", "a", "z"]})

    assert run == {"q1": {"z": 3.0, "a": 2.0}}
    assert evaluate_run({"q1": {"z": 1}}, run)["MRR@10"] == 1.0


def test_min_max_scales_to_unit_range() -> None:
    np.testing.assert_allclose(min_max([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])


def test_min_max_equal_scores_become_zero() -> None:
    np.testing.assert_allclose(min_max([7.0, 7.0]), [0.0, 0.0])


def test_blend_scores_weighted_sum() -> None:
    blended = blend_scores([10.0, 20.0, 15.0], [0.9, 0.1, 0.5], 0.25)

    # min-max: first stage [0, 1, 0.5], rerank [1, 0, 0.5].
    np.testing.assert_allclose(blended, [0.25, 0.75, 0.5])


def test_blend_scores_weight_ends_keep_each_order() -> None:
    first_stage, rerank = [3.0, 2.0, 1.0], [0.1, 0.2, 0.3]

    assert order_by(blend_scores(first_stage, rerank, 0.0)) == [0, 1, 2]
    assert order_by(blend_scores(first_stage, rerank, 1.0)) == [2, 1, 0]


def test_blend_scores_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="first_stage has 2 scores but rerank has 1"):
        blend_scores([1.0, 2.0], [1.0], 0.5)


def test_blend_scores_rejects_weight_outside_unit_range() -> None:
    with pytest.raises(ValueError, match=r"weight 1.5 is outside \[0, 1\]"):
        blend_scores([1.0], [1.0], 1.5)
