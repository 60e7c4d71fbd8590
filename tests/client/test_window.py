"""Rank window paging: one reranked window, from/size pages cut from it, no skips or repeats."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from client_pages import D_IRR2, D_REL, POSITION_KEY, Q, snapshot

from rerank_client import (
    RERANK_KEY,
    AsyncRerankClient,
    AsyncWindowSearch,
    RerankClient,
    RerankInputError,
    RerankUnavailableError,
    WindowSearch,
)
from rerank_harness.fake_sidecar import FakeSidecar, fault_behaviour
from rerank_harness.scifact import bm25_query


class ListSearch:
    """Search client stand-in that serves ``from``/``size`` slices of a fixed hit list."""

    def __init__(self, hits: list[dict[str, Any]]) -> None:
        self.hits = hits
        self.bodies: list[dict[str, Any]] = []

    def search(self, *, index: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
        self.bodies.append(body)
        start, size = body["from"], body["size"]
        return {"took": 4, "timed_out": False, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                "hits": {"total": {"value": len(self.hits), "relation": "eq"}, "max_score": 64.0,
                         "hits": self.hits[start:start + size]}}


def note_hits(count: int = 64) -> list[dict[str, Any]]:
    return [{"_index": "notes", "_id": str(n), "_score": float(count - n),
             "_source": {"body": f"note {n}: " + (D_REL if n % 9 == 0 else D_IRR2)}, POSITION_KEY: n}
            for n in range(count)]


def positions_of(page: dict[str, Any]) -> list[int]:
    return [hit[POSITION_KEY] for hit in page["hits"]["hits"]]


def test_window_of_64_paged_by_10(fake: FakeSidecar, fake_client: RerankClient) -> None:
    search = ListSearch(note_hits())
    searcher = WindowSearch(search, fake_client, "body", window=64)
    window = searcher.fetch_window(index="notes", body={"query": {"match_all": {}}}, query=Q)

    pages = [window.page(number * 10, 10) for number in range(8)]
    order = [position for page in pages for position in positions_of(page)]

    assert [len(page["hits"]["hits"]) for page in pages] == [10, 10, 10, 10, 10, 10, 4, 0]
    assert order == [hit[POSITION_KEY] for hit in window.hits]
    assert sorted(order) == list(range(64))
    assert order[:8] == [0, 9, 18, 27, 36, 45, 54, 63]
    assert all(page["hits"]["total"] == {"value": 64, "relation": "eq"} for page in pages)
    assert all(page[RERANK_KEY]["status"] == "reranked" for page in pages)
    assert len(fake.requests) == 1


def test_window_page_alone_equals_page_in_sequence(fake: FakeSidecar, fake_client: RerankClient) -> None:
    searcher = WindowSearch(ListSearch(note_hits()), fake_client, "body", window=64)

    in_sequence = [searcher.search(index="notes", body=None, query=Q, from_=number * 10, size=10)
                   for number in range(4)]
    alone = searcher.search(index="notes", body=None, query=Q, from_=30, size=10)

    assert alone == in_sequence[3]


def test_window_search_sends_window_size(fake: FakeSidecar, fake_client: RerankClient) -> None:
    search = ListSearch(note_hits())
    searcher = WindowSearch(search, fake_client, "body", window=50)
    body = {"query": {"match_all": {}}, "from": 20, "size": 10}

    page = searcher.search(index="notes", body=body, query=Q)

    assert search.bodies == [{"query": {"match_all": {}}, "from": 0, "size": 50}]
    assert body == {"query": {"match_all": {}}, "from": 20, "size": 10}
    assert page[RERANK_KEY]["from"] == 20
    assert page[RERANK_KEY]["size"] == 10
    assert page[RERANK_KEY]["window"] == 50


def test_window_page_past_window_keeps_first_stage(fake: FakeSidecar, fake_client: RerankClient) -> None:
    search = ListSearch(note_hits())
    searcher = WindowSearch(search, fake_client, "body", window=20)

    straddling = searcher.search(index="notes", body=None, query=Q, from_=15, size=10)
    past = searcher.search(index="notes", body=None, query=Q, from_=40, size=10)

    assert search.bodies[0]["size"] == 25
    assert positions_of(straddling)[5:] == [20, 21, 22, 23, 24]
    assert straddling[RERANK_KEY]["status"] == "partial"
    assert straddling[RERANK_KEY]["reason_code"] == "past_window"
    assert straddling[RERANK_KEY]["hits_past_window"] == 5
    assert all(RERANK_KEY not in hit for hit in straddling["hits"]["hits"][5:])
    assert positions_of(past) == list(range(40, 50))
    assert past["hits"]["hits"] == note_hits()[40:50]


def test_window_max_score_is_window_top(fake: FakeSidecar, fake_client: RerankClient) -> None:
    window = WindowSearch(ListSearch(note_hits()), fake_client, "body", window=64).fetch_window(
        index="notes", body=None, query=Q)

    first, second = window.page(0, 10), window.page(10, 10)

    assert first["hits"]["max_score"] == first["hits"]["hits"][0]["_score"]
    assert second["hits"]["max_score"] == first["hits"]["max_score"]


def test_window_fail_open_keeps_first_stage_pages(fake: FakeSidecar, fake_client: RerankClient) -> None:
    fake.behaviour = fault_behaviour("failing")
    hits = note_hits()
    searcher = WindowSearch(ListSearch(hits), fake_client, "body", window=30, fail_open=True)

    pages = [searcher.search(index="notes", body=None, query=Q, from_=number * 10, size=10) for number in range(7)]

    assert [position for page in pages for position in positions_of(page)] == list(range(64))
    assert {page[RERANK_KEY]["status"] for page in pages} == {"skipped"}
    assert {page[RERANK_KEY]["reason_code"] for page in pages} == {"server_error"}


def test_window_strict_raises(fake: FakeSidecar, fake_client: RerankClient) -> None:
    fake.behaviour = fault_behaviour("unavailable")
    searcher = WindowSearch(ListSearch(note_hits()), fake_client, "body", window=30)

    with pytest.raises(RerankUnavailableError):
        searcher.search(index="notes", body=None, query=Q)


def test_window_min_score_ends_pages_at_window(fake: FakeSidecar, fake_client: RerankClient) -> None:
    search = ListSearch(note_hits())
    searcher = WindowSearch(search, fake_client, "body", window=30, min_score=1.0)

    first = searcher.search(index="notes", body=None, query=Q, from_=0, size=10)
    second = searcher.search(index="notes", body=None, query=Q, from_=10, size=10)

    # Four of the first 30 notes contain the relevant text; the rest score 0.
    assert positions_of(first) == [0, 9, 18, 27]
    assert first[RERANK_KEY]["hits_below_min_score"] == 26
    assert second["hits"]["hits"] == []
    assert {body["size"] for body in search.bodies} == {30}


def test_window_empty_result(fake: FakeSidecar, fake_client: RerankClient) -> None:
    page = WindowSearch(ListSearch([]), fake_client, "body").search(index="notes", body=None, query=Q)

    assert page["hits"]["hits"] == []
    assert RERANK_KEY not in page
    assert fake.requests == []


def test_window_rank_response_leaves_input(fake: FakeSidecar, fake_client: RerankClient) -> None:
    response = ListSearch(note_hits(12)).search(index="notes", body={"from": 0, "size": 12})
    before = snapshot(response)

    window = WindowSearch(ListSearch([]), fake_client, "body", window=5).rank_response(response, Q)

    assert response == before
    assert positions_of(window.page(0, 12))[5:] == [5, 6, 7, 8, 9, 10, 11]


@pytest.mark.parametrize(("options", "message"), [
    ({"window": 0}, "window must be an integer >= 1, got 0"),
    ({"fields": ""}, "Invalid field path ''"),
])
def test_window_search_rejects_invalid_options(fake_client: RerankClient, options: dict[str, Any],
                                               message: str) -> None:
    arguments = {"fields": "body", **options}

    with pytest.raises(RerankInputError, match=message):
        WindowSearch(ListSearch([]), fake_client, **arguments)


@pytest.mark.parametrize(("page", "message"), [
    ({"from_": -1, "size": 10}, "from_ must be an integer >= 0, got -1"),
    ({"from_": 0, "size": 2.5}, "size must be an integer >= 0, got 2.5"),
])
def test_window_search_rejects_invalid_page(fake_client: RerankClient, page: dict[str, Any], message: str) -> None:
    searcher = WindowSearch(ListSearch([]), fake_client, "body")

    with pytest.raises(RerankInputError, match=message):
        searcher.search(index="notes", body=None, query=Q, **page)


# -- a real OpenSearch node -------------------------------------------------------------------


def first_test_query(scifact: Any) -> str:
    return scifact.split_queries("test")[0].text


def hit_keys(hits: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(hit["_index"], hit["_id"]) for hit in hits]


@pytest.mark.opensearch
def test_window_search_scifact_pages(opensearch_client: Any, scifact_index: str, scifact: Any,
                                     sidecar: Any) -> None:
    query = first_test_query(scifact)
    bm25 = opensearch_client.search(index=scifact_index, body=bm25_query(query, size=50))

    with RerankClient(sidecar.target, timeout=60.0) as client:
        searcher = WindowSearch(opensearch_client, client, ["title", "text"], window=50)
        window = searcher.fetch_window(index=scifact_index, body=bm25_query(query), query=query)
        pages = [searcher.search(index=scifact_index, body=bm25_query(query), query=query, from_=number * 10,
                                 size=10) for number in range(5)]

    served = hit_keys([hit for page in pages for hit in page["hits"]["hits"]])
    assert served == hit_keys(window.hits)
    assert len(set(served)) == 50
    assert set(served) == set(hit_keys(bm25["hits"]["hits"]))
    assert served != hit_keys(bm25["hits"]["hits"])
    assert {page[RERANK_KEY]["status"] for page in pages} == {"reranked"}
    assert all(page["hits"]["total"] == bm25["hits"]["total"] for page in pages)


@pytest.mark.opensearch
def test_async_window_search_scifact_pages(opensearch_node: Any, scifact_index: str, scifact: Any,
                                           sidecar: Any, sidecar_client: RerankClient) -> None:
    from opensearchpy import AsyncOpenSearch, OpenSearch

    query = first_test_query(scifact)

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        search_client = AsyncOpenSearch(hosts=[opensearch_node.url], timeout=60)
        try:
            async with AsyncRerankClient(sidecar.target, timeout=60.0) as client:
                searcher = AsyncWindowSearch(search_client, client, ["title", "text"], window=50)
                window = await searcher.fetch_window(index=scifact_index, body=bm25_query(query), query=query)
                pages = [await searcher.search(index=scifact_index, body=bm25_query(query), query=query,
                                               from_=number * 10, size=10) for number in range(5)]
        finally:
            await search_client.close()
        return window.hits, pages

    window_hits, pages = asyncio.run(main())
    sync_client = OpenSearch(hosts=[opensearch_node.url], timeout=60)
    try:
        sync_window = WindowSearch(sync_client, sidecar_client, ["title", "text"], window=50).fetch_window(
            index=scifact_index, body=bm25_query(query), query=query)
    finally:
        sync_client.close()

    served = hit_keys([hit for page in pages for hit in page["hits"]["hits"]])
    assert served == hit_keys(window_hits)
    assert len(set(served)) == 50
    assert served == hit_keys(sync_window.hits)
