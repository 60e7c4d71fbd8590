"""Tests for building the reranked page and checking server results."""

from __future__ import annotations

import copy
import json
import pickle
import re
from typing import Any

import pytest

from rerank_client._errors import (
    RerankError,
    RerankInputError,
    RerankProtocolError,
    RerankRejectedError,
    RerankServerError,
    RerankTimeoutError,
    RerankUnavailableError,
)
from rerank_client._reorder import (
    RERANK_KEY,
    as_page,
    get_hits,
    mark_page,
    reorder_page,
    validate_results,
)
from rerank_client._text import as_text_template, extract_text

D_REL = (
    "To descale a kettle, fill it with equal parts water and white vinegar, boil it, "
    "then rinse twice."
)
D_IRR = "The museum's east wing reopens after the roof repair."
D_IRR2 = "Library opening hours change during the winter months."

SERVER_BUG = "This is a bug in the rerank server, not in the request."


def make_hit(hit_id: str, score: float | None, body: Any = "text", **extra: Any) -> dict[str, Any]:
    return {"_index": "docs", "_id": hit_id, "_score": score, "_source": {"body": body}, **extra}


def make_page(hits: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    scores = [hit["_score"] for hit in hits if hit.get("_score") is not None]
    return {
        "took": 7,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": 1234, "relation": "eq"},
            "max_score": max(scores) if scores else None,
            "hits": hits,
        },
        **extra,
    }


def ids(page: dict[str, Any]) -> list[str]:
    return [hit["_id"] for hit in page["hits"]["hits"]]


def first_stage_ranks(page: dict[str, Any]) -> list[int]:
    return [hit[RERANK_KEY]["first_stage_rank"] for hit in page["hits"]["hits"]]


def fake_score(text: str | None, relevant: str) -> float | None:
    """Stand in for the model: a high logit when `text` contains `relevant`, a low one otherwise."""
    if text is None:
        return None
    if relevant in text:
        return 9.0
    return -8.0


def rerank(page: dict[str, Any], scores: list[float | None], **options: Any) -> dict[str, Any]:
    options.setdefault("score_kind", "raw")
    options.setdefault("model", "cross-encoder/ms-marco-MiniLM-L6-v2")
    return reorder_page(page, scores, **options)


# --- order ---------------------------------------------------------------------

def test_reorder_page_sorts_by_score_descending() -> None:
    page = make_page([make_hit(name, 10.0 - n) for n, name in enumerate("abcde")])

    out = rerank(page, [0.5, 3.0, -2.0, 1.5, 2.0])

    assert ids(out) == ["b", "e", "d", "a", "c"]
    assert [hit["_score"] for hit in out["hits"]["hits"]] == [3.0, 2.0, 1.5, 0.5, -2.0]


def test_reorder_page_negative_logits_first_hit() -> None:
    # Raw logits are not probabilities: negative scores are legal and unclamped.
    page = make_page([make_hit("irr", 5.0, D_IRR), make_hit("rel", 4.0, D_REL)])

    out = rerank(page, [-10.84, 9.21])

    assert ids(out) == ["rel", "irr"]
    assert out["hits"]["hits"][1]["_score"] == -10.84
    assert out["hits"]["max_score"] == 9.21


def test_reorder_page_all_negative_scores() -> None:
    page = make_page([make_hit("a", 1.0), make_hit("b", 2.0)])

    out = rerank(page, [-11.0, -3.5])

    assert ids(out) == ["b", "a"]
    assert out["hits"]["max_score"] == -3.5


def test_reorder_page_ties_keep_input_order() -> None:
    page = make_page([make_hit(name, 1.0) for name in "abcdef"])

    out = rerank(page, [1.0, 2.0, 1.0, 2.0, 1.0, 2.0])

    assert ids(out) == ["b", "d", "f", "a", "c", "e"]


def test_reorder_page_zero_and_negative_zero_tie() -> None:
    page = make_page([make_hit("a", 1.0), make_hit("b", 1.0)])

    out = rerank(page, [0.0, -0.0])

    assert ids(out) == ["a", "b"]


def test_reorder_page_unscored_hits_last() -> None:
    page = make_page([make_hit(name, 5.0 - n) for n, name in enumerate("abcde")])

    out = rerank(page, [None, -4.0, None, 7.0, None])

    assert ids(out) == ["d", "b", "a", "c", "e"]
    assert [hit["_score"] for hit in out["hits"]["hits"]] == [7.0, -4.0, None, None, None]


def test_reorder_page_blank_documents() -> None:
    bodies = [D_REL, "", "   \n\t", D_IRR]
    page = make_page([make_hit(f"h{n}", 1.0, body) for n, body in enumerate(bodies)])
    template = as_text_template("body")
    texts = [extract_text(hit, template) for hit in page["hits"]["hits"]]
    scores = [fake_score(text, D_REL) for text in texts]

    out = rerank(page, scores)

    assert texts == [D_REL, None, None, D_IRR]
    assert ids(out) == ["h0", "h3", "h1", "h2"]
    assert out[RERANK_KEY]["reranked_hits"] == 2
    assert out[RERANK_KEY]["hits_without_text"] == 2


def test_reorder_page_all_hits_without_text() -> None:
    page = make_page([make_hit("a", 2.0, ""), make_hit("b", 1.0, " ")])

    out = rerank(page, [None, None])

    assert ids(out) == ["a", "b"]
    assert out["hits"]["max_score"] is None
    assert out[RERANK_KEY]["reranked_hits"] == 0
    assert out[RERANK_KEY]["hits_without_text"] == 2


def test_reorder_page_repeated_ids_by_position() -> None:
    page = make_page([make_hit("same", 1.0, "first"), make_hit("same", 1.0, "second"), make_hit("same", 1.0, "third")])

    out = rerank(page, [1.0, 3.0, 2.0])

    assert [hit["_source"]["body"] for hit in out["hits"]["hits"]] == ["second", "third", "first"]
    assert first_stage_ranks(out) == [1, 2, 0]


def test_reorder_page_odd_values_page() -> None:
    values = [42, 3.5, True, None, ["alpha kettle", "beta"], {"en": "gamma"}, "", D_REL]
    page = make_page([make_hit(f"h{n}", 8.0 - n, value) for n, value in enumerate(values)])
    template = as_text_template("body")
    texts = [extract_text(hit, template) for hit in page["hits"]["hits"]]
    scores = [fake_score(text, D_REL) for text in texts]

    out = rerank(page, scores)

    assert len(out["hits"]["hits"]) == 8
    assert ids(out) == ["h7", "h0", "h1", "h2", "h4", "h3", "h5", "h6"]


# --- per-hit metadata and fidelity ---------------------------------------------------

def test_reorder_page_hit_metadata() -> None:
    page = make_page([make_hit("a", 3.2), make_hit("b", None)])

    out = rerank(page, [None, 1.25], score_kind="normalized")

    assert out["hits"]["hits"][0][RERANK_KEY] == {
        "first_stage_score": None,
        "first_stage_rank": 1,
        "score": 1.25,
        "score_kind": "normalized",
    }
    assert out["hits"]["hits"][1][RERANK_KEY] == {
        "first_stage_score": 3.2,
        "first_stage_rank": 0,
        "score": None,
        "score_kind": "normalized",
    }


def test_reorder_page_hit_without_score_key() -> None:
    hit = {"_index": "docs", "_id": "a", "_source": {"body": "x"}, "sort": [17]}
    page = make_page([hit])

    out = rerank(page, [0.4])

    assert out["hits"]["hits"][0]["_score"] == 0.4
    assert out["hits"]["hits"][0][RERANK_KEY]["first_stage_score"] is None


def test_reorder_page_int_score_becomes_float() -> None:
    out = rerank(make_page([make_hit("a", 1.0)]), [3])

    assert type(out["hits"]["hits"][0]["_score"]) is float


def test_reorder_page_only_score_and_metadata_change() -> None:
    rich = {
        "_index": "docs",
        "_id": "r",
        "_score": 2.0,
        "_routing": "user-7",
        "_source": {"body": D_REL, "previous_score": "0-2", "rerank_score": "n/a"},
        "highlight": {"body": ["<em>kettle</em> tips"]},
        "fields": {"body.length": [97]},
        "sort": [2.0, "r"],
        "matched_queries": ["title_match"],
        "_nested": {"field": "parts", "offset": 3},
        "_explanation": {"value": 2.0, "description": "sum of:", "details": []},
        "_version": 4,
        "_seq_no": 11,
        "_primary_term": 1,
        "inner_hits": {
            "parts": {
                "hits": {
                    "total": {"value": 1, "relation": "eq"},
                    "max_score": None,
                    "hits": [{"_index": "docs", "_id": "r", "_nested": {"field": "parts", "offset": 0}, "_score": None}],
                }
            }
        },
    }
    page = make_page([make_hit("other", 3.0, D_IRR), rich])
    before = copy.deepcopy(rich)

    out = rerank(page, [-9.0, 8.0])
    new_hit = out["hits"]["hits"][0]

    assert new_hit["_id"] == "r"
    assert set(new_hit) == set(before) | {RERANK_KEY}
    for key in before:
        if key != "_score":
            assert new_hit[key] == before[key], key
    assert new_hit["_score"] == 8.0


def test_reorder_page_source_byte_identical() -> None:
    hit = {
        "_index": "i",
        "_id": "x",
        "_score": 3.2,
        "_source": {"body": D_REL, "previous_score": "0-2", "rerank_score": "n/a"},
        "highlight": {"body": ["<em>kettle</em> tips"]},
    }
    page = make_page([hit, make_hit("y", 3.0, D_IRR)])
    source_json = json.dumps(hit["_source"], sort_keys=True)
    highlight_json = json.dumps(hit["highlight"], sort_keys=True)

    out = rerank(page, [7.5, -8.0])
    new_hit = out["hits"]["hits"][0]

    assert json.dumps(new_hit["_source"], sort_keys=True) == source_json
    assert json.dumps(new_hit["highlight"], sort_keys=True) == highlight_json
    assert new_hit[RERANK_KEY]["first_stage_score"] == 3.2
    assert RERANK_KEY not in new_hit["_source"]


def test_reorder_page_source_less_hits() -> None:
    inner_hits = {
        "parts": {
            "hits": {
                "total": {"value": 1, "relation": "eq"},
                "max_score": None,
                "hits": [{"_index": "i", "_id": "d", "_nested": {"field": "parts", "offset": 0}, "_score": None}],
            }
        }
    }
    hits = [
        {"_index": "i", "_id": "a", "_score": 1.2, "fields": {"title": ["Descaling a kettle with vinegar"]}},
        {"_index": "i", "_id": "b", "_score": 1.1, "_source": {"title": "Museum roof repair"}},
        {"_index": "i", "_id": "c", "_score": 1.0},
        {"_index": "i", "_id": "d", "_score": 0.9, "_source": {}, "inner_hits": inner_hits},
    ]
    page = make_page(hits)
    before = copy.deepcopy(page)
    template = as_text_template("title")
    texts = [extract_text(hit, template) for hit in hits]
    scores = [fake_score(text, "kettle") for text in texts]

    out = rerank(page, scores)

    assert texts == ["Descaling a kettle with vinegar", "Museum roof repair", None, None]
    assert ids(out) == ["a", "b", "c", "d"]
    assert [hit["_score"] for hit in out["hits"]["hits"]] == [9.0, -8.0, None, None]
    assert out["hits"]["hits"][3]["inner_hits"] == before["hits"]["hits"][3]["inner_hits"]
    assert "_source" not in out["hits"]["hits"][0]
    assert "_source" not in out["hits"]["hits"][2]


# --- envelope ------------------------------------------------------------------

def test_reorder_page_envelope_unchanged() -> None:
    extra = {
        "aggregations": {"by_tag": {"buckets": [{"key": "kettle", "doc_count": 3}]}},
        "suggest": {"s": [{"text": "ketle", "offset": 0, "length": 5, "options": []}]},
        "pit_id": "46ToAwMDaWR5BXV1aWQy",
        "_scroll_id": "FGluY2x1ZGVfY29udGV4dF91dWlk",
        "profile": {"shards": []},
        "x_custom": [1, 2, 3],
    }
    page = make_page([make_hit("a", 2.0), make_hit("b", 1.0)], **extra)
    before = copy.deepcopy(page)

    out = rerank(page, [0.1, 0.2])

    assert set(out) == set(before) | {RERANK_KEY}
    for key in before:
        if key != "hits":
            assert out[key] == before[key], key
    assert out["hits"]["total"] == {"value": 1234, "relation": "eq"}


def test_reorder_page_max_score_is_first_score() -> None:
    page = make_page([make_hit("a", 10.0), make_hit("b", 9.0)])

    out = rerank(page, [-1.0, -0.5])

    assert out["hits"]["max_score"] == -0.5


def test_reorder_page_max_score_added_when_absent() -> None:
    page = {"hits": {"hits": [make_hit("a", None)]}}

    out = rerank(page, [2.5])

    assert out["hits"]["max_score"] == 2.5


def test_reorder_page_status() -> None:
    page = make_page([make_hit("a", 1.0), make_hit("b", 1.0), make_hit("c", 1.0)])

    out = rerank(page, [1.0, None, 2.0], score_kind="normalized", model="m1")

    assert out[RERANK_KEY] == {
        "status": "reranked",
        "model": "m1",
        "score_kind": "normalized",
        "reranked_hits": 2,
        "hits_without_text": 1,
    }


def test_reorder_page_partial_status_with_reason() -> None:
    page = make_page([make_hit("a", 1.0)])

    out = rerank(page, [1.0], status="partial", reason="hits past 100 were not sent")

    assert out[RERANK_KEY]["status"] == "partial"
    assert out[RERANK_KEY]["reason"] == "hits past 100 were not sent"


def test_reorder_page_output_is_valid_json() -> None:
    page = make_page([make_hit("a", None), make_hit("b", 1.0)])

    out = rerank(page, [None, -3.0])

    json.dumps(out, allow_nan=False)


def test_reorder_page_input_not_mutated() -> None:
    page = make_page(
        [make_hit("a", 2.0, highlight={"body": ["x"]}), make_hit("b", 1.0), make_hit("c", 0.5)],
        aggregations={"n": {"value": 3}},
    )
    before = copy.deepcopy(page)

    rerank(page, [1.0, None, 5.0])

    assert page == before


def test_reorder_page_returns_new_containers() -> None:
    page = make_page([make_hit("a", 2.0)])

    out = rerank(page, [1.0])

    assert out is not page
    assert out["hits"] is not page["hits"]
    assert out["hits"]["hits"] is not page["hits"]["hits"]
    assert out["hits"]["hits"][0] is not page["hits"]["hits"][0]


def test_reorder_page_empty_page_unchanged() -> None:
    page = {
        "took": 1,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": 0, "relation": "eq"}, "max_score": None, "hits": []},
    }
    before = copy.deepcopy(page)

    out = rerank(page, [])

    assert out == before
    assert out is not page
    assert page == before


def test_reorder_page_deterministic() -> None:
    page = make_page([make_hit(f"h{n}", 1.0) for n in range(20)])
    scores: list[float | None] = [float(n % 4) if n % 5 else None for n in range(20)]

    assert rerank(page, scores) == rerank(page, scores)


def test_reorder_page_window_slices() -> None:
    bodies = [f"note {n}: " + (D_REL if n % 9 == 0 else D_IRR2) for n in range(64)]
    page = make_page([make_hit(f"n{n}", 64.0 - n, body) for n, body in enumerate(bodies)])
    scores: list[float | None] = [9.0 if D_REL in body else -8.0 for body in bodies]

    full = rerank(page, scores)
    full_hits = full["hits"]["hits"]
    pages = [full_hits[(k - 1) * 10 : k * 10] for k in range(1, 9)]

    assert [len(hits) for hits in pages] == [10, 10, 10, 10, 10, 10, 4, 0]
    assert [hit for hits in pages for hit in hits] == full_hits
    assert sorted(first_stage_ranks(full)) == list(range(64))
    assert ids(full)[:8] == [f"n{n}" for n in range(0, 64, 9)]
    assert rerank(page, scores)["hits"]["hits"][30:40] == pages[3]
    assert full["hits"]["total"] == {"value": 1234, "relation": "eq"}


# --- input errors -------------------------------------------------------------

def test_reorder_page_existing_hit_key_raises() -> None:
    page = make_page([make_hit("a", 1.0), make_hit("b", 1.0, **{RERANK_KEY: {"mine": True}})])
    message = (
        "hits.hits[1] already has a '_rerank' key, and reranking would overwrite it. "
        "Rerank the original search response, not a reranked one, and do not store a "
        "'_rerank' field at the top level of a hit."
    )

    with pytest.raises(RerankInputError, match=re.escape(message)):
        rerank(page, [1.0, 2.0])


def test_reorder_page_existing_page_key_raises() -> None:
    page = make_page([make_hit("a", 1.0)], **{RERANK_KEY: "user data"})
    message = (
        "The page already has a top-level '_rerank' key, and reranking would overwrite it. "
        "Rerank the original search response, not a reranked one."
    )

    with pytest.raises(RerankInputError, match=re.escape(message)):
        rerank(page, [1.0])


def test_reorder_page_reranked_page_raises() -> None:
    once = rerank(make_page([make_hit("a", 1.0)]), [2.0])

    with pytest.raises(RerankInputError):
        rerank(once, [3.0])


def test_reorder_page_score_count_mismatch() -> None:
    page = make_page([make_hit("a", 1.0), make_hit("b", 1.0)])
    message = "scores has 1 entries but the page has 2 hits. Pass exactly one score (or None) per hit, in page order."

    with pytest.raises(RerankInputError, match=re.escape(message)):
        rerank(page, [1.0])


def test_reorder_page_scores_for_empty_page() -> None:
    page = make_page([])

    with pytest.raises(RerankInputError, match=re.escape("scores has 1 entries but the page has 0 hits.")):
        rerank(page, [1.0])


def test_reorder_page_non_number_score() -> None:
    page = make_page([make_hit("a", 1.0)])

    with pytest.raises(RerankInputError, match=re.escape("scores[0] must be a float or None, got str '1.0'.")):
        rerank(page, ["1.0"])  # type: ignore[list-item]


def test_reorder_page_bool_score() -> None:
    page = make_page([make_hit("a", 1.0)])

    with pytest.raises(RerankInputError, match=re.escape("scores[0] must be a float or None, got bool True.")):
        rerank(page, [True])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_reorder_page_non_finite_score(bad: float) -> None:
    page = make_page([make_hit("a", 1.0), make_hit("b", 1.0)])
    message = (
        f"Invalid rerank score for hit 1: expected a finite number or None, but received {bad!r}. "
        f"The rerank server must never send NaN or infinity. {SERVER_BUG}"
    )

    with pytest.raises(RerankProtocolError, match=re.escape(message)):
        rerank(page, [1.0, bad])


def test_reorder_page_bad_score_kind() -> None:
    page = make_page([make_hit("a", 1.0)])

    with pytest.raises(RerankInputError, match=re.escape("Invalid score_kind 'probability'. Use 'raw' or 'normalized'.")):
        rerank(page, [1.0], score_kind="probability")


def test_reorder_page_bad_status() -> None:
    page = make_page([make_hit("a", 1.0)])
    message = "Invalid status 'skipped' for a reordered page. Use one of 'reranked', 'partial', or mark_page() for 'skipped'."

    with pytest.raises(RerankInputError, match=re.escape(message)):
        rerank(page, [1.0], status="skipped")


def test_reorder_page_partial_without_reason() -> None:
    page = make_page([make_hit("a", 1.0)])

    with pytest.raises(RerankInputError, match=re.escape("status 'partial' requires a reason that describes what was not reranked.")):
        rerank(page, [1.0], status="partial")


def test_reorder_page_non_string_model() -> None:
    page = make_page([make_hit("a", 1.0)])

    with pytest.raises(RerankInputError, match=re.escape("model must be a string, got NoneType None.")):
        rerank(page, [1.0], model=None)


PAGE_SHAPE_CASES = [
    pytest.param(
        {"took": 1},
        "The page has no 'hits' object, so it is not a search response. Pass the response of a "
        "_search request, with the hits under hits.hits. The 'hits' key is missing.",
        id="no-hits",
    ),
    pytest.param(
        {"hits": None},
        "The page has no 'hits' object, so it is not a search response. Pass the response of a "
        "_search request, with the hits under hits.hits. Got 'hits': None.",
        id="hits-null",
    ),
    pytest.param(
        {"hits": []},
        "The page has no 'hits' object, so it is not a search response. Pass the response of a "
        "_search request, with the hits under hits.hits. Got 'hits': [].",
        id="hits-list",
    ),
    pytest.param(
        {"hits": {"total": {"value": 0}}},
        "The page's hits.hits must be a list of hits, got NoneType None.",
        id="no-inner-hits",
    ),
    pytest.param(
        {"hits": {"hits": "abc"}},
        "The page's hits.hits must be a list of hits, got str 'abc'.",
        id="hits-string",
    ),
    pytest.param(
        {"hits": {"hits": [{"_id": "a"}, "b"]}},
        "hits.hits[1] must be a JSON object (a mapping), got str 'b'.",
        id="hit-not-object",
    ),
    pytest.param(
        "not a page",
        "The page must be a search response: a dict, or a client response object with a 'body' or "
        "'raw' dict or a to_dict() method. Got str 'not a page'.",
        id="string",
    ),
]


@pytest.mark.parametrize(("page", "message"), PAGE_SHAPE_CASES)
def test_get_hits_rejects_bad_shape(page: Any, message: str) -> None:
    with pytest.raises(RerankInputError, match=re.escape(message)):
        get_hits(page)


def test_reorder_page_rejects_bad_shape() -> None:
    with pytest.raises(RerankInputError):
        rerank({"hits": {"hits": [1]}}, [1.0])


# --- response objects ------------------------------------------------------------

class BodyResponse:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body


class RawResponse:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw


class DslResponse:
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def to_dict(self) -> dict[str, Any]:
        return self._data


@pytest.mark.parametrize("wrapper", [BodyResponse, RawResponse, DslResponse], ids=["body", "raw", "to_dict"])
def test_reorder_page_accepts_response_objects(wrapper: type) -> None:
    page = make_page([make_hit("a", 2.0), make_hit("b", 1.0)])

    out = rerank(wrapper(page), [1.0, 2.0])

    assert type(out) is dict
    assert ids(out) == ["b", "a"]


def test_as_page_returns_mapping_itself() -> None:
    page = make_page([])

    assert as_page(page) is page
    assert as_page(BodyResponse(page)) is page


def test_get_hits_returns_hits_in_order() -> None:
    hits = [make_hit("a", 2.0), make_hit("b", 1.0)]

    result = get_hits(make_page(hits))

    assert result == hits
    assert result[0] is hits[0]


# --- mark_page ----------------------------------------------------------------

def test_mark_page_keeps_order() -> None:
    page = make_page([make_hit("a", 2.0), make_hit("b", 1.0)])
    before = copy.deepcopy(page)

    out = mark_page(page, reason="rerank server unavailable: connection refused", model="m1")

    assert out["hits"] == before["hits"]
    assert out[RERANK_KEY] == {
        "status": "skipped",
        "reason": "rerank server unavailable: connection refused",
        "model": "m1",
    }
    assert page == before


def test_mark_page_without_model() -> None:
    out = mark_page(make_page([make_hit("a", 2.0)]), reason="timed out after 0.2 s")

    assert out[RERANK_KEY] == {"status": "skipped", "reason": "timed out after 0.2 s"}


def test_mark_page_new_containers() -> None:
    page = make_page([make_hit("a", 2.0)])

    out = mark_page(page, reason="skipped by caller")

    assert out is not page
    assert out["hits"] is not page["hits"]
    assert out["hits"]["hits"] is not page["hits"]["hits"]
    assert out["hits"]["hits"][0] is page["hits"]["hits"][0]


def test_mark_page_empty_page_gets_status() -> None:
    out = mark_page(make_page([]), reason="no hits")

    assert out[RERANK_KEY] == {"status": "skipped", "reason": "no hits"}


def test_mark_page_existing_key_raises() -> None:
    page = make_page([make_hit("a", 1.0)], **{RERANK_KEY: 1})

    with pytest.raises(RerankInputError, match=re.escape("The page already has a top-level '_rerank' key")):
        mark_page(page, reason="x")


def test_mark_page_rejects_reranked_status() -> None:
    page = make_page([make_hit("a", 1.0)])
    message = "Invalid status 'reranked' for a page in original order. Use one of 'skipped', 'partial', or reorder_page() for 'reranked'."

    with pytest.raises(RerankInputError, match=re.escape(message)):
        mark_page(page, reason="x", status="reranked")  # type: ignore[arg-type]


def test_mark_page_rejects_blank_reason() -> None:
    page = make_page([make_hit("a", 1.0)])
    message = "reason must be a non-empty string stating why the page was not reranked, got ' '."

    with pytest.raises(RerankInputError, match=re.escape(message)):
        mark_page(page, reason=" ")


# --- validate_results -------------------------------------------------------------

def test_validate_results_maps_to_positions() -> None:
    results = [(3, 9.5), (0, 1.0), (1, -2.0), (2, None)]

    assert validate_results(results, 4) == [1.0, -2.0, None, 9.5]


def test_validate_results_empty() -> None:
    assert validate_results([], 0) == []


def test_validate_results_accepts_iterator() -> None:
    assert validate_results(iter([(0, 1)]), 1) == [1.0]


def test_validate_results_too_few() -> None:
    results = [(index, float(index)) for index in range(9)]
    message = f"Invalid rerank response: expected 10 results, one per document, but received 9. {SERVER_BUG}"

    with pytest.raises(RerankProtocolError, match=re.escape(message)):
        validate_results(results, 10)


def test_validate_results_too_many() -> None:
    results = [(index, 0.0) for index in range(3)]
    message = f"Invalid rerank response: expected 2 results, one per document, but received 3. {SERVER_BUG}"

    with pytest.raises(RerankProtocolError, match=re.escape(message)):
        validate_results(results, 2)


def test_validate_results_duplicate_and_missing() -> None:
    indices = [0, 1, 2, 3, 3, 4, 5, 6, 8, 9]
    results = [(index, 1.0) for index in indices]
    message = (
        "Invalid rerank response: expected each index from 0 to 9 exactly once, but received "
        f"index 3 more than once and no result for index 7. {SERVER_BUG}"
    )

    with pytest.raises(RerankProtocolError, match=re.escape(message)):
        validate_results(results, 10)


def test_validate_results_several_missing() -> None:
    results = [(0, 1.0), (0, 2.0), (0, 3.0), (3, 4.0)]
    message = (
        "Invalid rerank response: expected each index from 0 to 3 exactly once, but received "
        f"index 0 more than once and no result for indices 1, 2. {SERVER_BUG}"
    )

    with pytest.raises(RerankProtocolError, match=re.escape(message)):
        validate_results(results, 4)


def test_validate_results_index_equal_to_count() -> None:
    results = [(index, 1.0) for index in range(1, 11)]
    message = f"Invalid rerank response: expected result indices from 0 to 9, but received index 10. {SERVER_BUG}"

    with pytest.raises(RerankProtocolError, match=re.escape(message)):
        validate_results(results, 10)


def test_validate_results_negative_index() -> None:
    results = [(index, 1.0) for index in range(9)] + [(-1, 1.0)]
    message = f"Invalid rerank response: expected result indices from 0 to 9, but received index -1. {SERVER_BUG}"

    with pytest.raises(RerankProtocolError, match=re.escape(message)):
        validate_results(results, 10)


def test_validate_results_non_integer_index() -> None:
    message = f"Invalid rerank response: expected integer result indices, but received '0' of type str. {SERVER_BUG}"

    with pytest.raises(RerankProtocolError, match=re.escape(message)):
        validate_results([("0", 1.0)], 1)  # type: ignore[list-item]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1.0"], ids=["nan", "inf", "string"])
def test_validate_results_bad_score(bad: Any) -> None:
    message = (
        "Invalid rerank response: expected a finite score or no score for index 1, "
        f"but received {bad!r}. {SERVER_BUG}"
    )

    with pytest.raises(RerankProtocolError, match=re.escape(message)):
        validate_results([(0, 1.0), (1, bad)], 2)


def test_validate_results_bad_expected_count() -> None:
    with pytest.raises(RerankInputError, match=re.escape("expected_count must be a non-negative integer, got -1.")):
        validate_results([], -1)


def test_validate_results_then_reorder() -> None:
    page = make_page([make_hit("a", 3.0), make_hit("b", 2.0), make_hit("c", 1.0)])
    results = [(2, 4.5), (0, 0.25), (1, None)]

    out = rerank(page, validate_results(results, 3))

    assert ids(out) == ["c", "a", "b"]


# --- exception tree --------------------------------------------------------------

def test_errors_share_base_class() -> None:
    for cls in (
        RerankInputError,
        RerankProtocolError,
        RerankUnavailableError,
        RerankTimeoutError,
        RerankServerError,
        RerankRejectedError,
    ):
        assert issubclass(cls, RerankError), cls


def test_timeout_is_unavailable() -> None:
    assert issubclass(RerankTimeoutError, RerankUnavailableError)


def test_input_error_is_value_error() -> None:
    assert issubclass(RerankInputError, ValueError)
    assert not issubclass(RerankProtocolError, ValueError)


@pytest.mark.parametrize("cls", [RerankServerError, RerankRejectedError])
def test_status_error_attributes_survive_pickle(cls: type) -> None:
    error = cls("Rerank failed: queue full", code="RESOURCE_EXHAUSTED", details="queue depth 64 reached")

    restored = pickle.loads(pickle.dumps(error))

    assert type(restored) is cls
    assert str(restored) == "Rerank failed: queue full"
    assert restored.code == "RESOURCE_EXHAUSTED"
    assert restored.details == "queue depth 64 reached"
