"""AsyncRerankClient: the same results, statuses and errors as RerankClient, on grpc.aio."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import grpc
import pytest
from client_pages import D_IRR, D_MID, D_REL, POSITION_KEY, Q, body_page, check_page_invariants, snapshot

from rerank_client import (
    RERANK_KEY,
    AsyncRerankClient,
    AsyncWindowSearch,
    CircuitBreaker,
    RerankCircuitOpenError,
    RerankClient,
    RerankInputError,
    RerankProtocolError,
    RerankTimeoutError,
    RerankUnavailableError,
    WindowSearch,
)
from rerank_harness.fake_sidecar import FakeBehaviour, FakeSidecar, fault_behaviour


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_async_page_equals_sync_page(fake: FakeSidecar, fake_client: RerankClient) -> None:
    page = body_page([D_IRR, D_MID, D_REL, None, ["descale", "kettle"]])
    before = snapshot(page)

    async def main() -> dict[str, Any]:
        async with AsyncRerankClient(fake.target) as client:
            return await client.rerank_page(page, Q, "body")

    out = run(main())

    assert out == fake_client.rerank_page(page, Q, "body")
    check_page_invariants(before, out, input_after_call=page)


def test_async_rerank_returns_results(fake: FakeSidecar) -> None:
    async def main() -> list[int]:
        async with AsyncRerankClient(fake.target) as client:
            return [result.index for result in await client.rerank(Q, [D_IRR, D_REL], top_n=1)]

    assert run(main()) == [1]


def test_async_empty_page_sends_no_rpc(fake: FakeSidecar) -> None:
    page = body_page([])

    async def main() -> dict[str, Any]:
        async with AsyncRerankClient(fake.target) as client:
            return await client.rerank_page(page, Q, "body")

    assert run(main()) == page
    assert fake.requests == []


def test_async_closed_port_strict_and_fail_open(closed_target: str) -> None:
    page = body_page([D_REL, D_IRR, D_MID])

    async def main() -> tuple[float, dict[str, Any]]:
        async with AsyncRerankClient(closed_target, timeout=2.0) as client:
            started = time.monotonic()
            with pytest.raises(RerankUnavailableError, match=re.escape(closed_target)):
                await client.rerank_page(page, Q, "body")
            elapsed = time.monotonic() - started
            return elapsed, await client.rerank_page(page, Q, "body", fail_open=True)

    elapsed, out = run(main())

    assert elapsed < 2.0
    assert out[RERANK_KEY]["status"] == "skipped"
    assert out[RERANK_KEY]["reason_code"] == "unavailable"
    assert out["hits"] == page["hits"]


def test_async_slow_sidecar_times_out(fake: FakeSidecar) -> None:
    fake.behaviour = fault_behaviour("slow", delay_s=3.0)
    page = body_page([D_REL, D_IRR])

    async def main() -> dict[str, Any]:
        async with AsyncRerankClient(fake.target, timeout=0.3, fail_open=True) as client:
            with pytest.raises(RerankTimeoutError):
                await client.rerank_page(page, Q, "body", fail_open=False)
            return await client.rerank_page(page, Q, "body")

    started = time.monotonic()
    out = run(main())

    assert time.monotonic() - started < 0.3 * 2 + 0.5
    assert out[RERANK_KEY]["reason_code"] == "timeout"


def test_async_protocol_error(fake: FakeSidecar) -> None:
    fake.behaviour = fault_behaviour("wrong_count")

    async def main() -> None:
        async with AsyncRerankClient(fake.target) as client:
            await client.rerank_page(body_page([D_REL, D_IRR]), Q, "body")

    with pytest.raises(RerankProtocolError, match="expected 2 results, one per document, but received 1"):
        run(main())


def test_async_retries_unavailable(fake: FakeSidecar) -> None:
    fake.behaviour = FakeBehaviour(status=grpc.StatusCode.UNAVAILABLE, fail_times=2)

    async def main() -> int:
        async with AsyncRerankClient(fake.target) as client:
            await client.rerank(Q, [D_REL])
            return client.retries

    assert run(main()) == 2
    assert len(fake.requests) == 3


def test_async_breaker_open_skips_rpc(fake: FakeSidecar) -> None:
    fake.behaviour = fault_behaviour("failing")
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=60.0)

    async def main() -> dict[str, Any]:
        async with AsyncRerankClient(fake.target, breaker=breaker, fail_open=True) as client:
            await client.rerank_page(body_page([D_REL]), Q, "body")
            with pytest.raises(RerankCircuitOpenError):
                await client.rerank_page(body_page([D_REL]), Q, "body", fail_open=False)
            return await client.rerank_page(body_page([D_REL]), Q, "body")

    out = run(main())

    assert out[RERANK_KEY]["reason_code"] == "circuit_open"
    assert len(fake.requests) == 1


def test_async_token_metadata(fake: FakeSidecar) -> None:
    async def main() -> str:
        async with AsyncRerankClient(fake.target, token="async-token") as client:
            await client.rerank(Q, [D_REL])
            return repr(client)

    representation = run(main())

    assert fake.metadata[-1]["authorization"] == "Bearer async-token"
    assert "async-token" not in representation


def test_async_health_and_input_errors(fake: FakeSidecar) -> None:
    async def main() -> bool:
        async with AsyncRerankClient(fake.target) as client:
            with pytest.raises(RerankInputError, match="query must be a non-blank string"):
                await client.rerank_page(body_page([D_REL]), " ", "body", fail_open=True)
            return await client.check_health()

    assert run(main()) is True
    assert fake.requests == []


def test_async_shadow_page(fake: FakeSidecar) -> None:
    page = body_page([D_IRR, D_MID, D_REL])

    async def main() -> Any:
        async with AsyncRerankClient(fake.target) as client:
            return await client.shadow_page(page, Q, "body", top_k=1)

    result = run(main())

    assert result.page is page
    assert result.order == [2, 0, 1]
    assert result.comparison.top_k_overlap == 0.0


class AsyncListSearch:
    """Async search client stand-in that serves ``from``/``size`` slices of a fixed hit list."""

    def __init__(self, hits: list[dict[str, Any]]) -> None:
        self.hits = hits

    async def search(self, *, index: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
        start, size = body["from"], body["size"]
        return {"took": 1, "timed_out": False,
                "hits": {"total": {"value": len(self.hits), "relation": "eq"}, "max_score": None,
                         "hits": self.hits[start:start + size]}}


def test_async_window_search_pages(fake: FakeSidecar) -> None:
    hits = [{"_index": "i", "_id": str(n), "_score": 30.0 - n,
             "_source": {"body": D_REL if n % 7 == 0 else D_IRR}, POSITION_KEY: n} for n in range(30)]

    async def main() -> list[dict[str, Any]]:
        async with AsyncRerankClient(fake.target) as client:
            searcher = AsyncWindowSearch(AsyncListSearch(hits), client, "body", window=20)
            return [await searcher.search(index="i", body={"size": 10, "from": start}, query=Q)
                    for start in (0, 10, 20, 30)]

    served = run(main())
    order = [hit[POSITION_KEY] for page in served for hit in page["hits"]["hits"]]

    assert order[:3] == [0, 7, 14]
    assert sorted(order) == list(range(30))
    assert order[20:] == list(range(20, 30))
    assert [page[RERANK_KEY]["status"] for page in served[:3]] == ["reranked", "reranked", "partial"]
    assert served[2][RERANK_KEY]["reason_code"] == "past_window"
    assert served[3]["hits"]["hits"] == []


def test_window_helpers_reject_wrong_client_kind(fake: FakeSidecar, fake_client: RerankClient) -> None:
    searcher = WindowSearch(AsyncListSearch([]), fake_client, "body")

    with pytest.raises(RerankInputError, match="use AsyncWindowSearch with AsyncRerankClient"):
        searcher.search(index="i", body=None, query=Q)
    with pytest.raises(RerankInputError, match="rerank_client must be an AsyncRerankClient"):
        AsyncWindowSearch(AsyncListSearch([]), fake_client, "body")


def test_async_window_rejects_sync_search_client(fake: FakeSidecar) -> None:
    class SyncSearch:
        def search(self, **_arguments: Any) -> dict[str, Any]:
            return {"hits": {"hits": []}}

    async def main() -> None:
        async with AsyncRerankClient(fake.target) as client:
            await AsyncWindowSearch(SyncSearch(), client, "body").search(index="i", body=None, query=Q)

    with pytest.raises(RerankInputError, match="use WindowSearch with RerankClient"):
        run(main())


def test_async_client_matches_real_sidecar(sidecar: Any, sidecar_client: RerankClient) -> None:
    documents = [D_IRR, D_MID, D_REL, ""]

    async def main() -> list[Any]:
        async with AsyncRerankClient(sidecar.target, timeout=30.0) as client:
            return await client.rerank(Q, documents)

    results = run(main())
    expected = sidecar_client.rerank(Q, documents)

    assert [result.index for result in results] == [result.index for result in expected]
    assert [result.score is None for result in results] == [False, False, False, True]
    assert [result.score for result in results[:3]] == pytest.approx([result.score for result in expected[:3]],
                                                                     abs=1e-6)
