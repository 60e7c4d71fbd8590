"""Shadow mode: rerank a page without serving the result, and measure how far the order moved.

Before switching reranking on, a search service can serve the first-stage
page as before and record, for each query, how the reranker would have
reordered it. `compare_orders` gives the figures: rank correlations between
the two orders and the overlap of their top k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import RerankInputError

__all__ = ["OrderComparison", "ShadowResult", "compare_orders"]


@dataclass(frozen=True)
class OrderComparison:
    """Differences between a reranked order and the first-stage order of the same hits.

    Attributes:
        hits: Number of hits compared.
        kendall_tau: Kendall rank correlation: 1.0 for the same order, -1.0
            for the reversed order. None for fewer than 2 hits.
        spearman_rho: Spearman rank correlation, same range. None for fewer
            than 2 hits.
        top_k: The k of `top_k_overlap`, the requested k cut to `hits`.
        top_k_overlap: Fraction of the first-stage top k that is also in the
            reranked top k, from 0.0 to 1.0. None when there are no hits.
    """

    hits: int
    kendall_tau: float | None
    spearman_rho: float | None
    top_k: int
    top_k_overlap: float | None


@dataclass(frozen=True)
class ShadowResult:
    """Result of a shadow rerank: the page to serve and what reranking would have done.

    Attributes:
        page: The input page itself, unchanged. This is what to serve.
        reranked: The page `rerank_page` would have returned, or None when the
            rerank failed.
        order: First-stage positions of the hits in reranked order, so
            ``order[0]`` is the first-stage position of the new first hit.
            None when the rerank failed.
        comparison: The figures from `compare_orders`, or None when the
            rerank failed.
        reason: Why the rerank failed, or None.
        reason_code: One-word cause of the failure (as in the page status
            ``_rerank.reason_code``), or None.
    """

    page: Mapping[str, Any]
    reranked: dict[str, Any] | None
    order: list[int] | None
    comparison: OrderComparison | None
    reason: str | None
    reason_code: str | None


def compare_orders(order: Sequence[int], top_k: int = 10) -> OrderComparison:
    """Compare a reranked order with the first-stage order.

    Args:
        order: A permutation of ``range(n)``: ``order[r]`` is the first-stage
            position of the hit at reranked position ``r``.
        top_k: The k of the top-k overlap.

    Raises:
        RerankInputError: `order` is not a permutation of ``range(n)``, or
            `top_k` is not a positive integer.

    Example::

        compare_orders([1, 0, 2], top_k=1)
        # hits=3, kendall_tau=1/3, spearman_rho=0.5, top_k=1, top_k_overlap=0.0
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise RerankInputError(f"top_k must be a positive integer, got {top_k!r}")
    positions = list(order)
    if sorted(positions) != list(range(len(positions))):
        raise RerankInputError(
            f"order must be a permutation of 0..{len(positions) - 1}, each first-stage position once")

    n = len(positions)
    k = min(top_k, n)
    overlap = None if n == 0 else len(set(positions[:k]) & set(range(k))) / k
    if n < 2:
        return OrderComparison(hits=n, kendall_tau=None, spearman_rho=None, top_k=k, top_k_overlap=overlap)

    pairs = n * (n - 1) // 2
    discordant = _count_inversions(positions)
    kendall_tau = (pairs - 2 * discordant) / pairs
    squared_shifts = sum((rank - position) ** 2 for rank, position in enumerate(positions))
    spearman_rho = 1 - 6 * squared_shifts / (n * (n * n - 1))
    return OrderComparison(hits=n, kendall_tau=kendall_tau, spearman_rho=spearman_rho, top_k=k,
                           top_k_overlap=overlap)


def _count_inversions(values: list[int]) -> int:
    """Count the pairs i < j with values[i] > values[j], by merge sort in O(n log n)."""
    inversions = 0
    width = 1
    current = list(values)
    while width < len(current):
        merged: list[int] = []
        for start in range(0, len(current), 2 * width):
            left = current[start:start + width]
            right = current[start + width:start + 2 * width]
            i = j = 0
            while i < len(left) and j < len(right):
                if left[i] <= right[j]:
                    merged.append(left[i])
                    i += 1
                else:
                    # right[j] is smaller than every element left in `left`.
                    inversions += len(left) - i
                    merged.append(right[j])
                    j += 1
            merged.extend(left[i:])
            merged.extend(right[j:])
        current = merged
        width *= 2
    return inversions
