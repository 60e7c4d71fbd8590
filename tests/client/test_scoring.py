"""Blended scores and the minimum score on a reordered page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from client_pages import D_IRR, D_MID, D_REL, POSITION_KEY, Q, body_page, make_hit, make_page, positions

from rerank_client import RERANK_KEY, RerankClient, RerankInputError, ScoreBlend, reorder_page
from rerank_client._blend import blend_scores
from rerank_harness.fake_sidecar import FakeSidecar


def scored_page(first_stage: list[float | None]) -> dict[str, Any]:
    return make_page([make_hit(position, "text", score=score) for position, score in enumerate(first_stage)])


def test_blend_min_max_normalizes_both_scores() -> None:
    blended = blend_scores([10.0, 5.0, 0.0], [-4.0, 6.0, 1.0], ScoreBlend(first_stage_weight=1.0, rerank_weight=2.0))

    # first stage: 1.0, 0.5, 0.0; rerank: 0.0, 1.0, 0.5.
    assert blended == pytest.approx([1.0, 2.5, 1.0])


def test_blend_equal_values_normalize_to_one() -> None:
    blended = blend_scores([3.0, 3.0], [7.0, 7.0], ScoreBlend(first_stage_weight=0.5, rerank_weight=0.5))

    assert blended == [1.0, 1.0]


def test_blend_missing_first_stage_counts_as_lowest() -> None:
    blended = blend_scores([None, 4.0, 2.0, "n/a"], [1.0, 1.0, 1.0, 1.0],
                           ScoreBlend(first_stage_weight=1.0, rerank_weight=0.0))

    assert blended == [0.0, 1.0, 0.0, 0.0]


def test_blend_hit_without_text_has_no_score() -> None:
    blended = blend_scores([9.0, 1.0, 5.0], [None, 2.0, 3.0], ScoreBlend())

    # Normalized over the two scored hits only: first stage 1.0 -> 0.0, 5.0 -> 1.0.
    assert blended == [None, 0.0, 2.0]


def test_blend_extreme_scores_stay_finite() -> None:
    blended = blend_scores([-1.7e308, 1.7e308], [-1.7e308, 1.7e308], ScoreBlend())

    assert blended == [0.0, 2.0]


@pytest.mark.parametrize(("weights", "message"), [
    ({"first_stage_weight": -1.0}, "ScoreBlend.first_stage_weight must be a finite number >= 0, got -1.0"),
    ({"rerank_weight": float("nan")}, "ScoreBlend.rerank_weight must be a finite number >= 0, got nan"),
    ({"first_stage_weight": 0.0, "rerank_weight": 0}, "ScoreBlend needs a positive first_stage_weight"),
])
def test_blend_rejects_invalid_weights(weights: dict[str, float], message: str) -> None:
    with pytest.raises(RerankInputError, match=re.escape(message)):
        ScoreBlend(**weights)


def test_reorder_page_blend_keeps_model_score() -> None:
    page = scored_page([10.0, 5.0, 0.0])

    out = reorder_page(page, [-4.0, 6.0, 1.0], score_kind="raw", model="m",
                       blend=ScoreBlend(first_stage_weight=1.0, rerank_weight=2.0))

    assert positions(out) == [1, 0, 2]
    assert [hit["_score"] for hit in out["hits"]["hits"]] == pytest.approx([2.5, 1.0, 1.0])
    assert [hit[RERANK_KEY]["score"] for hit in out["hits"]["hits"]] == [6.0, -4.0, 1.0]
    assert [hit[RERANK_KEY]["first_stage_score"] for hit in out["hits"]["hits"]] == [5.0, 10.0, 0.0]
    assert out[RERANK_KEY]["blend"] == {"first_stage_weight": 1.0, "rerank_weight": 2.0}
    assert out["hits"]["max_score"] == pytest.approx(2.5)


def test_reorder_page_min_score_removes_and_counts() -> None:
    page = scored_page([4.0, 3.0, 2.0, 1.0])

    out = reorder_page(page, [0.2, None, 0.9, 0.5], score_kind="normalized", model="m", min_score=0.5)

    assert positions(out) == [2, 3, 1]
    assert out[RERANK_KEY]["min_score"] == 0.5
    assert out[RERANK_KEY]["hits_below_min_score"] == 1
    assert out[RERANK_KEY]["reranked_hits"] == 3
    assert out[RERANK_KEY]["hits_without_text"] == 1


def test_reorder_page_min_score_removes_all() -> None:
    out = reorder_page(scored_page([2.0, 1.0]), [-3.0, -4.0], score_kind="raw", model="m", min_score=0.0)

    assert out["hits"]["hits"] == []
    assert out["hits"]["max_score"] is None
    assert out[RERANK_KEY]["hits_below_min_score"] == 2
    assert out["hits"]["total"] == {"value": 2, "relation": "eq"}


@pytest.mark.parametrize(("options", "message"), [
    ({"min_score": float("inf")}, "min_score must be a finite number or None"),
    ({"min_score": "1"}, "min_score must be a finite number or None"),
    ({"blend": {"rerank_weight": 1.0}}, "blend must be a ScoreBlend or None"),
])
def test_rerank_page_rejects_invalid_scoring(fake: FakeSidecar, fake_client: RerankClient,
                                             options: dict[str, Any], message: str) -> None:
    with pytest.raises(RerankInputError, match=re.escape(message)):
        fake_client.rerank_page(body_page([D_REL]), Q, "body", fail_open=True, **options)

    assert fake.requests == []


def test_rerank_page_blend_and_min_score(fake: FakeSidecar, fake_client: RerankClient) -> None:
    # Fake scores: D_REL 4 query words, D_MID and D_IRR 0 (less a millionth per index).
    page = body_page([D_IRR, D_MID, D_REL])

    out = fake_client.rerank_page(page, Q, "body", blend=ScoreBlend(first_stage_weight=1.0, rerank_weight=1.0),
                                  min_score=0.9)

    # Blended: D_IRR 1.0 + ~0.0, D_MID 0.5 + ~0.0, D_REL 0.0 + 1.0.
    assert [hit[POSITION_KEY] for hit in out["hits"]["hits"]] == [0, 2]
    assert out[RERANK_KEY]["hits_below_min_score"] == 1
