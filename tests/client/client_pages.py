"""Page builders and the page invariant checks shared by the client tests."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from rerank_client import RERANK_KEY

# Unknown hit key that carries each input hit's position, so that a test can
# follow a hit through the reordering without trusting the _rerank metadata.
POSITION_KEY = "x_test_position"

ENVELOPE_KEYS = ("took", "timed_out", "_shards", "aggregations")

Q = "how to descale a kettle"
D_REL = "To descale a kettle, fill it with equal parts water and white vinegar, boil it, then rinse twice."
D_MID = "Kettles collect mineral scale over time in hard-water areas."
D_IRR = "The museum's east wing reopens after the roof repair."
D_IRR2 = "Library opening hours change during the winter months."


def make_hit(position: int, body: Any = "text", *, score: float | None = None, **extra: Any) -> dict[str, Any]:
    """Return a hit with `body` under ``_source.body`` and its position under `POSITION_KEY`."""
    return {
        "_index": "docs",
        "_id": f"d{position}",
        "_score": float(100 - position) if score is None else score,
        "_source": {"body": body},
        POSITION_KEY: position,
        **extra,
    }


def make_page(hits: Sequence[Mapping[str, Any]], *, total: int | None = None) -> dict[str, Any]:
    """Return a search response around `hits`, with every envelope key set."""
    scores = [hit["_score"] for hit in hits if isinstance(hit.get("_score"), (int, float))]
    return {
        "took": 3,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": len(hits) if total is None else total, "relation": "eq"},
            "max_score": max(scores) if scores else None,
            "hits": list(hits),
        },
        "aggregations": {"kinds": {"buckets": [{"key": "note", "doc_count": len(hits)}]}},
    }


def body_page(bodies: Sequence[Any]) -> dict[str, Any]:
    """Return a page with one hit per body, first-stage scores descending."""
    return make_page([make_hit(position, body) for position, body in enumerate(bodies)])


def positions(page: Mapping[str, Any]) -> list[int]:
    """Return the input positions of a page's hits, in page order."""
    return [hit[POSITION_KEY] for hit in page["hits"]["hits"]]


def check_page_invariants(before: Mapping[str, Any], after: Mapping[str, Any], *,
                          input_after_call: Mapping[str, Any] | None = None) -> None:
    """Assert the invariants every page result keeps.

    Args:
        before: A deep copy of the input page taken before the call.
        after: The page the client returned.
        input_after_call: The caller's input object after the call, to check
            that it was not changed.

    The checks:

    - The output hits are a permutation of the input hits, by position, not by id.
    - Only ``_score`` and ``_rerank`` differ on a hit. On a page left in
      first-stage order nothing differs.
    - Hits are sorted by ``_score``. Ties and hits without a score keep input order.
    - The envelope is unchanged, and ``max_score`` is the first hit's ``_score``.
    - The output is strict JSON, and the input was not changed.
    """
    in_hits = before["hits"]["hits"]
    out_hits = after["hits"]["hits"]
    order = [hit[POSITION_KEY] for hit in out_hits]
    status = after.get(RERANK_KEY, {}).get("status")

    assert sorted(order) == list(range(len(in_hits)))

    for hit in out_hits:
        original = in_hits[hit[POSITION_KEY]]
        if status in (None, "skipped"):
            assert hit == original
        else:
            assert {k: v for k, v in hit.items() if k not in ("_score", RERANK_KEY)} == \
                   {k: v for k, v in original.items() if k != "_score"}
            assert hit[RERANK_KEY]["first_stage_score"] == original.get("_score")
            assert hit[RERANK_KEY]["first_stage_rank"] == hit[POSITION_KEY]

    if status in (None, "skipped"):
        assert order == list(range(len(in_hits)))
    else:
        keys = [_sort_key(hit["_score"], hit[POSITION_KEY]) for hit in out_hits]
        assert keys == sorted(keys)

    for key in ENVELOPE_KEYS:
        assert after.get(key) == before.get(key)
    assert after["hits"]["total"] == before["hits"]["total"]
    if status in (None, "skipped"):
        assert after["hits"]["max_score"] == before["hits"]["max_score"]
    else:
        assert after["hits"]["max_score"] == (out_hits[0]["_score"] if out_hits else None)

    json.dumps(after, allow_nan=False)
    if input_after_call is not None:
        assert input_after_call == before


def _sort_key(score: float | None, position: int) -> tuple[bool, float, int]:
    if score is None:
        return (True, 0.0, position)
    assert math.isfinite(score)
    return (False, -score, position)


def snapshot(page: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of `page` to compare against after a call."""
    return copy.deepcopy(dict(page))
