"""Score blending: a weighted sum of min-max normalized first-stage and rerank scores.

BM25 scores and model scores live on different scales, so each is scaled to
[0, 1] within the candidates of one query before mixing. A weight of 0 keeps the
first-stage order and 1 keeps the rerank order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def min_max(scores: Sequence[float]) -> np.ndarray:
    """Scale ``scores`` to [0, 1] by their min and max; all-equal scores become 0.

    Example::

        min_max([2.0, 4.0, 3.0])  # array([0. , 1. , 0.5])
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def blend_scores(first_stage: Sequence[float], rerank: Sequence[float], weight: float) -> np.ndarray:
    """Return ``weight * min_max(rerank) + (1 - weight) * min_max(first_stage)``.

    Args:
        first_stage: First-stage scores (BM25 ``_score``) of one query's candidates.
        rerank: Rerank scores of the same candidates, in the same order.
        weight: Share of the rerank score, from 0 to 1.

    Raises:
        ValueError: The lists differ in length or the weight is outside [0, 1].
    """
    if len(first_stage) != len(rerank):
        raise ValueError(f"first_stage has {len(first_stage)} scores but rerank has {len(rerank)}; "
                         "pass one score of each kind per candidate")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight {weight} is outside [0, 1]")
    return weight * min_max(rerank) + (1.0 - weight) * min_max(first_stage)


def order_by(scores: Sequence[float]) -> list[int]:
    """Return positions sorted by score, highest first; ties keep their input order."""
    return sorted(range(len(scores)), key=lambda position: -float(scores[position]))
