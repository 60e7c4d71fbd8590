"""Property-based tests: rerank_page over a real gRPC fake sidecar keeps every page invariant.

Random pages go through `RerankClient.rerank_page` and the fake responds with
its word-overlap scores or with a random fault. Whatever happens, the output
contains the input hits exactly once, changes nothing on a hit but ``_score``
and ``_rerank``, is sorted by ``_score`` with stable ties, keeps the envelope,
is strict JSON, and leaves the input unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from client_pages import POSITION_KEY, check_page_invariants, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerank_client import RERANK_KEY, RerankClient, RerankError, RetryPolicy, ScoreBlend, WindowSearch
from rerank_harness.fake_sidecar import FAULTS, FakeBehaviour, FakeSidecar, fault_behaviour

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
QUERY = "descale kettle vinegar scale"

# Query words make scores vary; the rest make them tie.
words = st.sampled_from(["descale", "kettle", "vinegar", "scale", "museum", "roof", "é", "🫖", " ", "\n"])
texts = st.lists(words, max_size=6).map(" ".join)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6),
                    st.floats(allow_nan=False, allow_infinity=False), texts)
bodies = st.one_of(scalars, st.lists(st.one_of(scalars, st.lists(texts, max_size=2)), max_size=3),
                   st.dictionaries(st.sampled_from(["en", "text"]), texts, max_size=2))
first_stage_scores = st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))

hit_extras = st.fixed_dictionaries({}, optional={
    "highlight": st.dictionaries(st.just("body"), st.lists(texts, max_size=2), max_size=1),
    "fields": st.dictionaries(st.sampled_from(["body", "title"]), st.lists(scalars, max_size=2), max_size=2),
    "inner_hits": st.just({"parts": {"hits": {"total": {"value": 1, "relation": "eq"}, "max_score": None,
                                              "hits": [{"_index": "i", "_id": "x", "_score": None}]}}}),
    "sort": st.lists(st.one_of(st.integers(), texts), max_size=2),
    "matched_queries": st.lists(texts, max_size=2),
    "_routing": texts,
})


@st.composite
def pages(draw: st.DrawFn, *, max_hits: int = 30) -> dict[str, Any]:
    count = draw(st.integers(min_value=0, max_value=max_hits))
    hits = []
    for position in range(count):
        hit: dict[str, Any] = {
            "_index": draw(st.sampled_from(["docs-1", "docs-2"])),
            # Few distinct ids, so that ids repeat across hits.
            "_id": draw(st.sampled_from(["a", "b", "c"])),
            POSITION_KEY: position,
        }
        score = draw(first_stage_scores)
        if score is not None or draw(st.booleans()):
            hit["_score"] = score
        if draw(st.integers(0, 9)) > 0:
            hit["_source"] = {"body": draw(bodies), "title": draw(texts)}
        hit.update(draw(hit_extras))
        hits.append(hit)
    page: dict[str, Any] = {
        "took": draw(st.integers(0, 10_000)),
        "timed_out": draw(st.booleans()),
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": draw(st.integers(count, count + 1000)), "relation": "eq"},
                 "max_score": draw(first_stage_scores), "hits": hits},
    }
    if draw(st.booleans()):
        page["aggregations"] = {"kinds": {"buckets": [{"key": draw(texts), "doc_count": count}]}}
    return page


fields = st.sampled_from(["body", ["title", "body"], "body.text"])


@pytest.fixture(scope="module")
def client(shared_fake: FakeSidecar) -> Iterator[RerankClient]:
    # No backoff between retries: the faults here are scripted, and waiting only slows the run.
    no_backoff = RetryPolicy(initial_backoff_s=0.0, max_backoff_s=0.0)
    with RerankClient(shared_fake.target, timeout=5.0, retry=no_backoff) as rerank_client:
        yield rerank_client


def reset(fake: FakeSidecar, behaviour: FakeBehaviour | None = None) -> None:
    fake.behaviour = behaviour or FakeBehaviour()
    fake.requests.clear()
    fake.metadata.clear()


@PROPERTY_SETTINGS
@given(page=pages(), field=fields)
def test_rerank_page_keeps_invariants(shared_fake: FakeSidecar, client: RerankClient, page: dict[str, Any],
                                      field: Any) -> None:
    reset(shared_fake)
    before = snapshot(page)

    out = client.rerank_page(page, QUERY, field)

    check_page_invariants(before, out, input_after_call=page)
    if not page["hits"]["hits"]:
        assert shared_fake.requests == []


@PROPERTY_SETTINGS
@given(page=pages(), fault=st.sampled_from([name for name in FAULTS if name != "slow"]))
def test_fail_open_page_keeps_invariants(shared_fake: FakeSidecar, client: RerankClient, page: dict[str, Any],
                                         fault: str) -> None:
    reset(shared_fake, fault_behaviour(fault))
    before = snapshot(page)

    out = client.rerank_page(page, QUERY, "body", fail_open=True)

    check_page_invariants(before, out, input_after_call=page)
    sent = [len(request.documents) for request in shared_fake.requests]
    # Every fault breaks a call that sends documents, except a repeated index
    # when there is only one document to repeat.
    if sent and not (fault == "duplicate_index" and sent == [1]):
        assert out[RERANK_KEY]["status"] == "skipped"
        assert out["hits"]["hits"] == before["hits"]["hits"]
    else:
        assert out.get(RERANK_KEY, {}).get("status") in (None, "reranked")


@PROPERTY_SETTINGS
@given(page=pages(), fault=st.sampled_from([name for name in FAULTS if name != "slow"]))
def test_strict_fault_raises_or_reranks(shared_fake: FakeSidecar, client: RerankClient, page: dict[str, Any],
                                        fault: str) -> None:
    reset(shared_fake, fault_behaviour(fault))
    before = snapshot(page)

    try:
        out = client.rerank_page(page, QUERY, "body")
    except RerankError:
        assert page == before
        return
    check_page_invariants(before, out, input_after_call=page)


@PROPERTY_SETTINGS
@given(page=pages(),
       weights=st.tuples(st.floats(0, 10), st.floats(0, 10)).filter(lambda pair: pair != (0.0, 0.0)))
def test_blended_page_keeps_invariants(shared_fake: FakeSidecar, client: RerankClient, page: dict[str, Any],
                                       weights: tuple[float, float]) -> None:
    reset(shared_fake)
    before = snapshot(page)
    blend = ScoreBlend(first_stage_weight=weights[0], rerank_weight=weights[1])

    out = client.rerank_page(page, QUERY, "body", blend=blend)

    check_page_invariants(before, out, input_after_call=page)
    for hit in out["hits"]["hits"]:
        if hit[RERANK_KEY]["score"] is None:
            assert hit["_score"] is None
        else:
            assert 0.0 <= hit["_score"] <= weights[0] + weights[1] + 1e-9


@PROPERTY_SETTINGS
@given(page=pages(), min_score=st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]))
def test_min_score_counts_every_removed_hit(shared_fake: FakeSidecar, client: RerankClient,
                                            page: dict[str, Any], min_score: float) -> None:
    reset(shared_fake)
    before = snapshot(page)

    out = client.rerank_page(page, QUERY, "body", min_score=min_score)

    if not before["hits"]["hits"]:
        assert out == before
        return
    kept = out["hits"]["hits"]
    removed = out[RERANK_KEY]["hits_below_min_score"]
    assert len(kept) + removed == len(before["hits"]["hits"])
    assert all(hit["_score"] is None or hit["_score"] >= min_score for hit in kept)
    unscored = sum(1 for hit in kept if hit["_score"] is None)
    assert unscored == out[RERANK_KEY]["hits_without_text"]
    assert out["hits"]["max_score"] == (kept[0]["_score"] if kept else None)
    json.dumps(out, allow_nan=False)
    assert page == before


class ListSearch:
    """Search client stand-in that serves ``from``/``size`` slices of a fixed hit list."""

    def __init__(self, hits: list[dict[str, Any]]) -> None:
        self.hits = hits
        self.bodies: list[dict[str, Any]] = []

    def search(self, *, index: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
        self.bodies.append(body)
        start, size = body["from"], body["size"]
        return {"took": 1, "timed_out": False,
                "hits": {"total": {"value": len(self.hits), "relation": "eq"}, "max_score": None,
                         "hits": self.hits[start:start + size]}}


@st.composite
def windows(draw: st.DrawFn) -> tuple[int, int, int]:
    hits = draw(st.integers(0, 80))
    window = draw(st.integers(1, 100))
    size = draw(st.integers(1, 25))
    return hits, window, size


@PROPERTY_SETTINGS
@given(shape=windows())
def test_window_pages_cover_each_hit_once(shared_fake: FakeSidecar, client: RerankClient,
                                          shape: tuple[int, int, int]) -> None:
    reset(shared_fake)
    count, window, size = shape
    words = ["descale kettle", "museum roof", "vinegar", "scale kettle vinegar"]
    hits = [{"_index": "i", "_id": str(n), "_score": float(count - n), "_source": {"body": words[n % 4]},
             POSITION_KEY: n} for n in range(count)]
    searcher = WindowSearch(ListSearch(hits), client, "body", window=window)

    page_count = math.ceil(count / size) + 1
    served = [searcher.search(index="i", body={}, query=QUERY, from_=number * size, size=size)
              for number in range(page_count)]
    order = [hit[POSITION_KEY] for page in served for hit in page["hits"]["hits"]]
    ranked = searcher.fetch_window(index="i", body=None, query=QUERY)

    assert sorted(order) == list(range(count))
    assert order[:min(window, count)] == [hit[POSITION_KEY] for hit in ranked.hits]
    assert order[min(window, count):] == list(range(min(window, count), count))
    assert served[-1]["hits"]["hits"] == []
    for page in served:
        assert page["hits"]["total"] == {"value": count, "relation": "eq"}
