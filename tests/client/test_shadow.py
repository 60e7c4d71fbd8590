"""Shadow mode: the input page is served unchanged, with the reranked order and overlap figures."""

from __future__ import annotations

import re

import pytest
from client_pages import D_IRR, D_MID, D_REL, Q, body_page, snapshot

from rerank_client import RERANK_KEY, RerankClient, RerankInputError
from rerank_client._shadow import compare_orders
from rerank_harness.fake_sidecar import FakeSidecar, fault_behaviour


def test_compare_identical_order() -> None:
    comparison = compare_orders([0, 1, 2, 3], top_k=2)

    assert comparison.kendall_tau == 1.0
    assert comparison.spearman_rho == 1.0
    assert comparison.top_k_overlap == 1.0


def test_compare_reversed_order() -> None:
    comparison = compare_orders([3, 2, 1, 0], top_k=2)

    assert comparison.kendall_tau == -1.0
    assert comparison.spearman_rho == -1.0
    assert comparison.top_k_overlap == 0.0


def test_compare_one_swap() -> None:
    comparison = compare_orders([1, 0, 2], top_k=1)

    assert comparison.hits == 3
    assert comparison.kendall_tau == pytest.approx(1 / 3)
    assert comparison.spearman_rho == pytest.approx(0.5)
    assert comparison.top_k == 1
    assert comparison.top_k_overlap == 0.0


def test_compare_matches_pairwise_definition() -> None:
    order = [4, 0, 7, 1, 6, 2, 5, 3, 9, 8]
    n = len(order)
    concordant = sum(order[i] < order[j] for i in range(n) for j in range(i + 1, n))
    discordant = n * (n - 1) // 2 - concordant

    comparison = compare_orders(order, top_k=5)

    assert comparison.kendall_tau == pytest.approx((concordant - discordant) / (n * (n - 1) / 2))
    assert comparison.top_k_overlap == pytest.approx(len({4, 0, 7, 1, 6} & {0, 1, 2, 3, 4}) / 5)


def test_compare_short_orders() -> None:
    single = compare_orders([0], top_k=10)
    empty = compare_orders([], top_k=10)

    assert (single.kendall_tau, single.spearman_rho, single.top_k, single.top_k_overlap) == (None, None, 1, 1.0)
    assert (empty.kendall_tau, empty.top_k, empty.top_k_overlap) == (None, 0, None)


@pytest.mark.parametrize(("order", "top_k", "message"), [
    ([0, 0, 1], 3, "order must be a permutation of 0..2"),
    ([1, 2], 3, "order must be a permutation of 0..1"),
    ([0, 1], 0, "top_k must be a positive integer, got 0"),
])
def test_compare_rejects_invalid(order: list[int], top_k: int, message: str) -> None:
    with pytest.raises(RerankInputError, match=re.escape(message)):
        compare_orders(order, top_k=top_k)


def test_shadow_page_serves_input(fake: FakeSidecar, fake_client: RerankClient) -> None:
    page = body_page([D_IRR, D_MID, D_REL])
    before = snapshot(page)

    result = fake_client.shadow_page(page, Q, "body", top_k=2)

    assert result.page is page
    assert page == before
    assert result.order == [2, 0, 1]
    assert result.reranked is not None
    assert result.reranked[RERANK_KEY]["status"] == "reranked"
    assert result.comparison is not None
    assert result.comparison.kendall_tau == pytest.approx(-1 / 3)
    assert result.comparison.top_k_overlap == 0.5
    assert result.reason is None


def test_shadow_page_failure_never_raises(fake: FakeSidecar, fake_client: RerankClient) -> None:
    fake.behaviour = fault_behaviour("failing")
    page = body_page([D_IRR, D_REL])

    result = fake_client.shadow_page(page, Q, "body")

    assert result.page is page
    assert result.reranked is None
    assert result.comparison is None
    assert result.reason_code == "server_error"
    assert fake_client.fallbacks == {"RerankServerError": 1}


def test_shadow_page_input_error_raises(fake_client: RerankClient) -> None:
    with pytest.raises(RerankInputError, match="query must be a non-blank string"):
        fake_client.shadow_page(body_page([D_REL]), "", "body")
