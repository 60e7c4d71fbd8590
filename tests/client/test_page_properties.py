"""Property-based tests: reranked pages keep every invariant on random pages and scores."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerank_client._errors import RerankProtocolError
from rerank_client._reorder import RERANK_KEY, reorder_page, validate_results
from rerank_client._text import TextField, TextTemplate, extract_text

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Unknown hit key that carries each input hit's position, so that tests can
# follow a hit through the reordering without trusting the _rerank metadata.
POSITION_KEY = "x_test_position"

# No braces, quotes or capital letters, so a Python repr, "None", "True" or
# "null" in an extracted text can only come from a rendering bug.
SAFE_ALPHABET = "abcdeé🫖 \t\n"

FIELD_NAMES = ["body", "title", "content", "text", "content.text", "a.b", RERANK_KEY, "_score"]

safe_text = st.text(alphabet=SAFE_ALPHABET, max_size=12)
keys = st.one_of(st.sampled_from(FIELD_NAMES), safe_text)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    finite_floats,
    safe_text,
)
# Python objects that json.loads never returns, but a caller's dict may hold.
odd_scalars = st.one_of(json_scalars, st.sampled_from([math.nan, math.inf, -math.inf]))
first_stage_scores = st.one_of(st.none(), finite_floats)

inner_hits = st.builds(
    lambda hit_id, offset: {
        "parts": {
            "hits": {
                "total": {"value": 1, "relation": "eq"},
                "max_score": None,
                "hits": [
                    {
                        "_index": "i",
                        "_id": hit_id,
                        "_nested": {"field": "parts", "offset": offset},
                        "_score": None,
                    }
                ],
            }
        }
    },
    st.sampled_from(["a", "b"]),
    st.integers(min_value=0, max_value=5),
)


def json_objects(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    values = st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(keys, children, max_size=4),
        ),
        max_leaves=12,
    )
    return st.dictionaries(keys, values, max_size=5)


def search_hits(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "_index": st.sampled_from(["docs-1", "docs-2"]),
            # Few distinct ids, so that ids repeat across hits.
            "_id": st.sampled_from(["a", "b", "c"]),
        },
        optional={
            "_score": first_stage_scores,
            "_source": json_objects(scalars),
            "highlight": st.dictionaries(keys, st.lists(safe_text, max_size=3), max_size=2),
            "fields": st.dictionaries(keys, st.lists(scalars, max_size=3), max_size=2),
            "inner_hits": inner_hits,
            "sort": st.lists(json_scalars, max_size=2),
            "matched_queries": st.lists(safe_text, max_size=2),
            "_routing": safe_text,
            "_nested": st.fixed_dictionaries({"field": st.just("parts"), "offset": st.integers(0, 9)}),
        },
    )


hits = search_hits(json_scalars)

envelope_extras = st.fixed_dictionaries(
    {},
    optional={
        "aggregations": json_objects(json_scalars),
        "suggest": json_objects(json_scalars),
        "pit_id": safe_text,
        "_scroll_id": safe_text,
        "x_unknown": json_objects(json_scalars),
    },
)

# A few fixed values make ties common, alongside arbitrary finite floats.
rerank_scores = st.one_of(
    st.none(),
    st.sampled_from([-2.0, -0.0, 0.0, 1.0, 3.5]),
    finite_floats,
)


@st.composite
def pages_with_scores(draw: st.DrawFn) -> tuple[dict[str, Any], list[float | None]]:
    page_hits = draw(st.lists(hits, max_size=50))
    for position, hit in enumerate(page_hits):
        hit[POSITION_KEY] = position
    scores = draw(st.lists(rerank_scores, min_size=len(page_hits), max_size=len(page_hits)))

    page: dict[str, Any] = {
        "took": draw(st.integers(min_value=0, max_value=10_000)),
        "timed_out": draw(st.booleans()),
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": draw(st.integers(min_value=0)), "relation": "eq"},
            "max_score": draw(first_stage_scores),
            "hits": page_hits,
        },
    }
    page.update(draw(envelope_extras))
    return page, scores


def rerank(page: dict[str, Any], scores: list[float | None]) -> dict[str, Any]:
    return reorder_page(page, scores, score_kind="raw", model="test-model")


def without(mapping: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key not in names}


@PROPERTY_SETTINGS
@given(pages_with_scores())
def test_reorder_page_is_permutation(case: tuple[dict[str, Any], list[float | None]]) -> None:
    page, scores = case
    input_hits = page["hits"]["hits"]

    out_hits = rerank(page, scores)["hits"]["hits"]
    positions = [hit[POSITION_KEY] for hit in out_hits]

    assert len(out_hits) == len(input_hits)
    assert sorted(positions) == list(range(len(input_hits)))
    if input_hits:
        assert [hit[RERANK_KEY]["first_stage_rank"] for hit in out_hits] == positions


@PROPERTY_SETTINGS
@given(pages_with_scores())
def test_reorder_page_changes_only_score(case: tuple[dict[str, Any], list[float | None]]) -> None:
    page, scores = case
    input_hits = page["hits"]["hits"]

    out_hits = rerank(page, scores)["hits"]["hits"]

    for hit in out_hits:
        original = input_hits[hit[POSITION_KEY]]
        assert without(hit, "_score", RERANK_KEY) == without(original, "_score")
        assert set(hit) == set(original) | {"_score", RERANK_KEY}


@PROPERTY_SETTINGS
@given(pages_with_scores())
def test_reorder_page_hit_metadata_matches(case: tuple[dict[str, Any], list[float | None]]) -> None:
    page, scores = case
    input_hits = page["hits"]["hits"]

    out_hits = rerank(page, scores)["hits"]["hits"]

    for hit in out_hits:
        position = hit[POSITION_KEY]
        assert hit["_score"] == scores[position]
        assert hit[RERANK_KEY] == {
            "first_stage_score": input_hits[position].get("_score"),
            "first_stage_rank": position,
            "score": scores[position],
            "score_kind": "raw",
        }


@PROPERTY_SETTINGS
@given(pages_with_scores())
def test_reorder_page_order(case: tuple[dict[str, Any], list[float | None]]) -> None:
    page, scores = case

    out_hits = rerank(page, scores)["hits"]["hits"]

    for previous, current in zip(out_hits, out_hits[1:]):
        previous_score, current_score = previous["_score"], current["_score"]
        if previous_score is None:
            # Hits without text come last, in input order.
            assert current_score is None
            assert previous[POSITION_KEY] < current[POSITION_KEY]
        elif current_score is not None:
            assert previous_score >= current_score
            if previous_score == current_score:
                assert previous[POSITION_KEY] < current[POSITION_KEY]


@PROPERTY_SETTINGS
@given(pages_with_scores())
def test_reorder_page_envelope(case: tuple[dict[str, Any], list[float | None]]) -> None:
    page, scores = case
    before = copy.deepcopy(page)

    out = rerank(page, scores)

    if not before["hits"]["hits"]:
        assert out == before
        return
    assert without(out, "hits", RERANK_KEY) == without(before, "hits")
    assert without(out["hits"], "hits", "max_score") == without(before["hits"], "hits", "max_score")
    assert out["hits"]["max_score"] == out["hits"]["hits"][0]["_score"]
    assert out[RERANK_KEY]["reranked_hits"] == sum(score is not None for score in scores)
    assert out[RERANK_KEY]["hits_without_text"] == sum(score is None for score in scores)


@PROPERTY_SETTINGS
@given(pages_with_scores())
def test_reorder_page_valid_json(case: tuple[dict[str, Any], list[float | None]]) -> None:
    page, scores = case

    out = rerank(page, scores)

    assert json.loads(json.dumps(out, allow_nan=False)) == out


@PROPERTY_SETTINGS
@given(pages_with_scores())
def test_reorder_page_input_unmutated(case: tuple[dict[str, Any], list[float | None]]) -> None:
    page, scores = case
    before = copy.deepcopy(page)
    source_json = [json.dumps(hit.get("_source"), sort_keys=True) for hit in page["hits"]["hits"]]

    out = rerank(page, scores)

    assert page == before
    for hit in out["hits"]["hits"]:
        assert json.dumps(hit.get("_source"), sort_keys=True) == source_json[hit[POSITION_KEY]]


@PROPERTY_SETTINGS
@given(pages_with_scores(), st.sampled_from([math.nan, math.inf, -math.inf]), st.data())
def test_reorder_page_rejects_non_finite(
    case: tuple[dict[str, Any], list[float | None]], bad: float, data: st.DataObject
) -> None:
    page, scores = case
    if not scores:
        return
    position = data.draw(st.integers(min_value=0, max_value=len(scores) - 1))
    scores[position] = bad

    with pytest.raises(RerankProtocolError):
        rerank(page, scores)


# --- text extraction -----------------------------------------------------------

text_templates = st.builds(
    TextTemplate,
    st.lists(
        st.builds(
            TextField,
            path=st.sampled_from(["body", "title", "content.text", "a.b", "text"]),
            max_chars=st.one_of(st.none(), st.integers(min_value=1, max_value=20)),
            prefix=st.sampled_from(["", "T: ", " "]),
        ),
        min_size=1,
        max_size=3,
    ),
    separator=st.sampled_from(["\n", " | ", ""]),
    max_chars=st.integers(min_value=1, max_value=60),
    use_highlight=st.booleans(),
)


@PROPERTY_SETTINGS
@given(search_hits(odd_scalars), text_templates)
def test_extract_text_result_shape(hit: dict[str, Any], template: TextTemplate) -> None:
    before = copy.deepcopy(hit)

    text = extract_text(hit, template)

    assert hit == before
    if text is not None:
        assert text.strip() != ""
        assert len(text) <= template.max_chars


@PROPERTY_SETTINGS
@given(search_hits(odd_scalars), text_templates)
def test_extract_text_no_repr_leaks(hit: dict[str, Any], template: TextTemplate) -> None:
    text = extract_text(hit, template) or ""

    for marker in ("{", "[", "'", "None", "null", "True", "False", "nan", "inf"):
        assert marker not in text, marker


# --- validate_results ----------------------------------------------------------

@PROPERTY_SETTINGS
@given(st.lists(rerank_scores, max_size=50), st.randoms(use_true_random=False))
def test_validate_results_round_trip(scores: list[float | None], random: Any) -> None:
    results = list(enumerate(scores))
    random.shuffle(results)

    assert validate_results(results, len(scores)) == scores


@PROPERTY_SETTINGS
@given(
    st.integers(min_value=0, max_value=20),
    st.lists(st.tuples(st.integers(min_value=-3, max_value=23), st.one_of(st.none(), finite_floats)), max_size=23),
)
def test_validate_results_errors_typed(expected_count: int, results: list[tuple[int, float | None]]) -> None:
    indices = [index for index, _ in results]
    valid = sorted(indices) == list(range(expected_count))

    if valid:
        assert len(validate_results(results, expected_count)) == expected_count
    else:
        with pytest.raises(RerankProtocolError):
            validate_results(results, expected_count)
