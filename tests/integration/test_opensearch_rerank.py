"""End to end: BM25 pages from a real OpenSearch node, reranked by a real sidecar process."""

from __future__ import annotations

import copy
import json

import pytest

from rerank_client import RERANK_KEY, RerankClient
from rerank_harness.scifact import search_bm25

pytestmark = pytest.mark.opensearch

PAGE_SIZE = 20
SCORE_TOLERANCE = 1e-5
SEPARATOR = "\n"
UNCHANGED_HIT_KEYS = ("_index", "_id", "_source", "highlight", "fields", "inner_hits", "sort", "matched_queries",
                      "_routing")


@pytest.fixture(scope="module")
def queries(scifact):
    return scifact.split_queries("test")[:5]


def _page_text(hit: dict) -> str:
    source = hit["_source"]
    return SEPARATOR.join(part for part in (source.get("title", ""), source.get("text", "")) if part.strip())


def _check_page_invariants(original: dict, reranked: dict) -> None:
    hits_in = original["hits"]["hits"]
    hits_out = reranked["hits"]["hits"]
    assert len(hits_out) == len(hits_in)
    ranks = sorted(hit[RERANK_KEY]["first_stage_rank"] for hit in hits_out)
    assert ranks == list(range(len(hits_in)))
    for hit in hits_out:
        before = hits_in[hit[RERANK_KEY]["first_stage_rank"]]
        for key in UNCHANGED_HIT_KEYS:
            assert hit.get(key) == before.get(key)
        assert hit[RERANK_KEY]["first_stage_score"] == before["_score"]
        assert set(hit) - set(before) == {RERANK_KEY}
    scores = [hit["_score"] for hit in hits_out]
    assert scores == sorted(scores, reverse=True)
    for key in ("took", "timed_out", "_shards"):
        assert reranked[key] == original[key]
    assert reranked["hits"]["total"] == original["hits"]["total"]
    assert reranked["hits"]["max_score"] == hits_out[0]["_score"]
    json.dumps(reranked, allow_nan=False)


def test_bm25_pages_reranked_as_cross_encoder_orders_them(opensearch_client, scifact_index, sidecar,
                                                          reference_encoder, queries):
    with RerankClient(sidecar.target, timeout=60) as client:
        for query in queries:
            page = search_bm25(opensearch_client, scifact_index, query.text, size=PAGE_SIZE)
            snapshot = copy.deepcopy(page)

            reranked = client.rerank_page(page, query.text, ["title", "text"])

            assert page == snapshot
            assert len(page["hits"]["hits"]) == PAGE_SIZE
            hits = page["hits"]["hits"]
            reference = reference_encoder.predict([(query.text, _page_text(hit)) for hit in hits])
            expected = sorted(range(len(hits)), key=lambda position: (-reference[position], position))
            assert [hit["_id"] for hit in reranked["hits"]["hits"]] == [hits[i]["_id"] for i in expected]
            for hit in reranked["hits"]["hits"]:
                position = hit[RERANK_KEY]["first_stage_rank"]
                assert hit["_score"] == pytest.approx(float(reference[position]), abs=SCORE_TOLERANCE)
            _check_page_invariants(page, reranked)
            assert reranked[RERANK_KEY]["status"] == "reranked"
            assert reranked[RERANK_KEY]["reranked_hits"] == PAGE_SIZE


def test_bm25_page_is_what_opensearch_returned(opensearch_client, scifact_index, scifact, queries):
    query = queries[0]
    page = search_bm25(opensearch_client, scifact_index, query.text, size=PAGE_SIZE)
    corpus = {document.doc_id: document for document in scifact.documents}
    assert page["hits"]["total"]["value"] > PAGE_SIZE
    for hit in page["hits"]["hits"]:
        assert hit["_source"]["title"] == corpus[hit["_id"]].title
    first_stage = [hit["_score"] for hit in page["hits"]["hits"]]
    assert first_stage == sorted(first_stage, reverse=True)


def test_elasticsearch_response_object_reranked(opensearch_client, scifact_index, sidecar, queries):
    # Elasticsearch.search and AsyncElasticsearch.search return this type from the
    # official client. Its product check rejects an OpenSearch node, so the test
    # wraps the node's own response the way the client does.
    from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig, ObjectApiResponse

    meta = ApiResponseMeta(status=200, http_version="1.1", headers=HttpHeaders({"x-elastic-product": "Elasticsearch"}),
                           duration=0.01, node=NodeConfig("http", "127.0.0.1", 9200))
    with RerankClient(sidecar.target, timeout=60) as client:
        for query in queries[:2]:
            page = search_bm25(opensearch_client, scifact_index, query.text, size=PAGE_SIZE)
            response = ObjectApiResponse(body=copy.deepcopy(page), meta=meta)

            from_object = client.rerank_page(response, query.text, ["title", "text"])
            from_dict = client.rerank_page(page, query.text, ["title", "text"])

            assert isinstance(from_object, dict)
            assert response.body == page
            assert [hit["_id"] for hit in from_object["hits"]["hits"]] == [hit["_id"] for hit in from_dict["hits"]["hits"]]
            for with_object, with_dict in zip(from_object["hits"]["hits"], from_dict["hits"]["hits"]):
                assert with_object["_score"] == pytest.approx(with_dict["_score"], abs=SCORE_TOLERANCE)
            _check_page_invariants(page, from_object)
