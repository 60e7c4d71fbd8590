"""Blending of first-stage and rerank scores into one ``_score``.

A reranked hit's ``_score`` is its rerank score unless the caller passes a
`ScoreBlend`. Then both scores are first min-max normalized over the hits of
the page that have a rerank score, so that each lies in [0, 1], and
``_score`` becomes ``first_stage_weight * first_stage + rerank_weight *
rerank``. The weights play the part of ``query_weight`` and
``rescore_query_weight`` in an OpenSearch or Elasticsearch rescore query,
whose default ``score_mode`` adds the weighted scores too. The raw scores are
normalized first because BM25 scores and cross-encoder logits have unrelated
scales.

Normalization rules:

- When every value is equal (one hit, or a tie across the page), each value
  normalizes to 1.0.
- A hit whose first-stage ``_score`` is null or not a finite number counts as
  the lowest first-stage score, 0.0 after normalization.
- A hit without text has no rerank score and no blended score. It keeps
  ``_score`` null and its place after every scored hit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import RerankInputError

__all__ = ["ScoreBlend", "blend_scores"]


@dataclass(frozen=True, kw_only=True)
class ScoreBlend:
    """Weights of the normalized first-stage and rerank scores in a blended ``_score``.

    Attributes:
        first_stage_weight: Weight of the first-stage (search engine) score.
        rerank_weight: Weight of the rerank score.

    Both weights are finite and non-negative, and at least one is positive.

    Example::

        client.rerank_page(page, query, "body", blend=ScoreBlend(first_stage_weight=0.3, rerank_weight=0.7))
    """

    first_stage_weight: float = 1.0
    rerank_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("first_stage_weight", "rerank_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise RerankInputError(f"ScoreBlend.{name} must be a finite number >= 0, got {value!r}")
        if self.first_stage_weight == 0 and self.rerank_weight == 0:
            raise RerankInputError("ScoreBlend needs a positive first_stage_weight or rerank_weight; both are 0")


def blend_scores(first_stage: Sequence[object], rerank: Sequence[float | None],
                 blend: ScoreBlend) -> list[float | None]:
    """Return the blended score of each hit, None where `rerank` is None.

    Args:
        first_stage: Each hit's first-stage ``_score`` as found in the page.
        rerank: Each hit's rerank score, None for a hit without text.
        blend: The weights.
    """
    scored = [position for position, score in enumerate(rerank) if score is not None]
    first_values = {position: _as_finite(first_stage[position]) for position in scored}
    first_normalized = _min_max({p: v for p, v in first_values.items() if v is not None})
    rerank_normalized = _min_max({position: float(rerank[position]) for position in scored})

    blended: list[float | None] = [None] * len(rerank)
    for position in scored:
        blended[position] = (blend.first_stage_weight * first_normalized.get(position, 0.0)
                             + blend.rerank_weight * rerank_normalized[position])
    return blended


def _min_max(values: dict[int, float]) -> dict[int, float]:
    if not values:
        return {}
    low = min(values.values())
    high = max(values.values())
    if high == low:
        return dict.fromkeys(values, 1.0)
    # For scores near the float limits high - low overflows to infinity, and
    # halving every term first keeps the ratio finite.
    span = high - low
    if not math.isfinite(span):
        return {position: (value / 2 - low / 2) / (high / 2 - low / 2) for position, value in values.items()}
    return {position: (value - low) / span for position, value in values.items()}


def _as_finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
