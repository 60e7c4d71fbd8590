"""Construction of the reranked search response, with no I/O.

The functions here take a search response (a page) as OpenSearch or
Elasticsearch return it and the rerank scores for its hits, and build a new
page. They never mutate their input. The policies they apply:

- Hits are sorted by their new ``_score``, highest first. Hits with equal
  scores keep their original relative order. ``_score`` is the rerank score,
  or the blended score when a `ScoreBlend` is given (see `blend_scores`).
- A hit without text has no score. It is placed after every scored hit, in its
  original relative order, and its ``_score`` becomes null.
- Only ``_score`` changes on a hit, and a ``_rerank`` key (`RERANK_KEY`) is
  added next to ``_source``, never inside it. The key contains the first-stage
  score and rank, the model's rerank score and the score kind
  (`HitRerankInfo`), whether or not ``_score`` is blended.
- With a minimum score, scored hits whose new ``_score`` is below it are
  removed from the page, and the page status counts them in
  ``hits_below_min_score``. Hits without text have no score to compare and
  are kept. Without a minimum score no hit is ever removed.
- ``hits.max_score`` becomes the first hit's new ``_score``. Every other part
  of the response (``took``, ``_shards``, ``hits.total``, ``aggregations``,
  unknown keys) is kept as is.
- The page gets a top-level ``_rerank`` key with the status of the rerank
  (`PageRerankInfo`). A page with no hits is the exception: `reorder_page`
  returns it unchanged.
- Reranking reorders the hits of the page it is given and nothing else. To
  rerank a window of N hits and serve ``from``/``size`` pages from it, use the
  window helpers in `rerank_client._window`, which document what happens to
  hits past the window.

Besides plain dicts, the functions that take a page accept the response
objects of the official Python clients and read the dict they wrap: ``.body``
or ``.raw`` of elastic-transport's ``ObjectApiResponse`` (returned by
elasticsearch-py 8), or ``to_dict()`` of an elasticsearch-dsl ``Response``.
opensearch-py returns plain dicts. The returned page is always a plain dict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

from ._blend import ScoreBlend, blend_scores
from ._errors import RerankInputError, RerankProtocolError

__all__ = [
    "RERANK_KEY",
    "HitRerankInfo",
    "PageRerankInfo",
    "PageStatus",
    "ScoreKind",
    "as_page",
    "get_hits",
    "mark_page",
    "reorder_page",
    "validate_results",
]

RERANK_KEY = "_rerank"
"""Key of the rerank metadata, on each hit (next to ``_source``) and at the top of the page."""

ScoreKind = Literal["raw", "normalized"]
"""Kind of a rerank score.

``"raw"`` is the model output before any activation. For the default
cross-encoder this is a logit: any real number, often negative, and not a
probability. ``"normalized"`` is the raw score passed through the model's
activation (the sigmoid unless the model names another one), and it ranks the
hits in the same order as the raw score.
"""

PageStatus = Literal["reranked", "partial", "skipped"]
"""Status of a page: reordered by rerank score, reordered with a caveat, or left in search order."""

_SCORE_KINDS: tuple[str, ...] = ("raw", "normalized")
_REORDERED_STATUSES: tuple[str, ...] = ("reranked", "partial")
_UNORDERED_STATUSES: tuple[str, ...] = ("skipped", "partial")
_SERVER_BUG = "This is a bug in the rerank server, not in the request."


class HitRerankInfo(TypedDict):
    """Rerank metadata stored under `RERANK_KEY` on each hit of a reranked page.

    - ``first_stage_score``: the hit's ``_score`` in the input page, or None
      where it had none.
    - ``first_stage_rank``: the hit's 0-based position in the input page.
    - ``score``: the model's rerank score, or None for a hit without text. It
      equals the new ``_score`` unless the scores were blended.
    - ``score_kind``: ``"raw"`` or ``"normalized"`` (see `ScoreKind`).
    """

    first_stage_score: float | None
    first_stage_rank: int
    score: float | None
    score_kind: ScoreKind


class _PageRerankInfoRequired(TypedDict):
    status: PageStatus


class PageRerankInfo(_PageRerankInfoRequired, total=False):
    """Rerank status stored under `RERANK_KEY` at the top of a page.

    ``status`` is always present. A reordered page also has ``model``,
    ``score_kind``, ``reranked_hits`` (hits the model scored) and
    ``hits_without_text`` (hits with no score). ``reason`` states why a page is
    ``"partial"`` or ``"skipped"``, and ``reason_code`` names the cause in one
    word for programs: ``"timeout"``, ``"unavailable"``, ``"circuit_open"``,
    ``"rejected"``, ``"server_error"``, ``"protocol_error"`` or
    ``"past_window"``.

    Present only when the option was used: ``blend`` (the two weights),
    ``min_score`` and ``hits_below_min_score`` (scored hits removed for a
    ``_score`` below it). Pages served from a rank window also carry
    ``window`` (its size), ``from``, ``size`` and ``hits_past_window`` (hits
    on the page in first-stage order because they lie past the window).
    """

    model: str
    score_kind: ScoreKind
    reranked_hits: int
    hits_without_text: int
    reason: str
    reason_code: str
    blend: dict[str, float]
    min_score: float
    hits_below_min_score: int
    window: int
    hits_past_window: int


def as_page(response: object) -> Mapping[str, Any]:
    """Return the search response dict that `response` is or wraps.

    Args:
        response: A mapping, or a client response object with a ``body`` or
            ``raw`` mapping attribute or a ``to_dict()`` method that returns a
            mapping.

    Returns:
        The mapping itself, not a copy.

    Raises:
        RerankInputError: `response` is neither a mapping nor such an object.
    """
    if isinstance(response, Mapping):
        return response

    for attribute in ("body", "raw"):
        value = getattr(response, attribute, None)
        if isinstance(value, Mapping):
            return value

    to_dict = getattr(response, "to_dict", None)
    if callable(to_dict):
        value = to_dict()
        if isinstance(value, Mapping):
            return value

    raise RerankInputError(
        "The page must be a search response: a dict, or a client response object with a "
        f"'body' or 'raw' dict or a to_dict() method. Got {_describe(response)}."
    )


def get_hits(page: object) -> list[Mapping[str, Any]]:
    """Return the hits of a search response, ``page["hits"]["hits"]``, after checking their shape.

    Args:
        page: A search response, in any form that `as_page` accepts.

    Returns:
        A new list of the hit mappings themselves (not copies), in page order.

    Raises:
        RerankInputError: `page` has no ``hits.hits`` list or a hit is not a
            mapping.
    """
    response = as_page(page)
    hits_object = response.get("hits")
    if not isinstance(hits_object, Mapping):
        found = f"Got 'hits': {hits_object!r:.80}." if "hits" in response else "The 'hits' key is missing."
        raise RerankInputError(
            "The page has no 'hits' object, so it is not a search response. Pass the response "
            f"of a _search request, with the hits under hits.hits. {found}"
        )

    hits = hits_object.get("hits")
    if isinstance(hits, (str, bytes)) or not isinstance(hits, Sequence):
        raise RerankInputError(
            "The page's hits.hits must be a list of hits, "
            f"got {_describe(hits)}."
        )

    for position, hit in enumerate(hits):
        if not isinstance(hit, Mapping):
            raise RerankInputError(
                f"hits.hits[{position}] must be a JSON object (a mapping), "
                f"got {_describe(hit)}."
            )
    return list(hits)


def validate_results(
    results: Iterable[tuple[int, float | None]], expected_count: int
) -> list[float | None]:
    """Map the rerank server's ``(index, score)`` results back onto document positions.

    The server returns one result per document, sorted by score, and each
    result names the document by its index in the request. This function
    checks that the results cover every index exactly once and returns the
    scores in request order.

    Args:
        results: ``(index, score)`` pairs in the order the server sent them.
            ``score`` is None for a document the server did not score because
            its text was blank.
        expected_count: Number of documents in the request.

    Returns:
        ``scores`` with ``scores[i]`` the score of document ``i``, as a float,
        or None.

    Raises:
        RerankProtocolError: The number of results differs from
            `expected_count`, or an index is not an integer, negative, at least
            `expected_count`, repeated or missing, or a score is NaN, infinite
            or not a number. The message states the expected and received
            values.
        RerankInputError: `expected_count` is not a non-negative integer.

    Example::

        >>> validate_results([(1, 9.2), (0, -10.8), (2, None)], 3)
        [-10.8, 9.2, None]
    """
    if not _is_count(expected_count):
        raise RerankInputError(
            f"expected_count must be a non-negative integer, got {expected_count!r}."
        )

    results = list(results)
    if len(results) != expected_count:
        raise RerankProtocolError(
            f"Invalid rerank response: expected {expected_count} results, one per document, "
            f"but received {len(results)}. {_SERVER_BUG}"
        )

    scores: dict[int, float | None] = {}
    first_repeated: int | None = None
    for index, score in results:
        if isinstance(index, bool) or not isinstance(index, int):
            raise RerankProtocolError(
                "Invalid rerank response: expected integer result indices, but received "
                f"{index!r} of type {type(index).__name__}. {_SERVER_BUG}"
            )
        if not 0 <= index < expected_count:
            raise RerankProtocolError(
                f"Invalid rerank response: expected result indices from 0 to {expected_count - 1}, "
                f"but received index {index}. {_SERVER_BUG}"
            )
        if not _is_score(score):
            raise RerankProtocolError(
                "Invalid rerank response: expected a finite score or no score for index "
                f"{index}, but received {score!r}. {_SERVER_BUG}"
            )
        if index in scores and first_repeated is None:
            first_repeated = index
        scores[index] = None if score is None else float(score)

    if first_repeated is not None:
        # The count matched, so a repeated index always leaves one missing.
        missing = [index for index in range(expected_count) if index not in scores]
        raise RerankProtocolError(
            f"Invalid rerank response: expected each index from 0 to {expected_count - 1} "
            f"exactly once, but received index {first_repeated} more than once and no result "
            f"for {_describe_indices(missing)}. {_SERVER_BUG}"
        )
    return [scores[index] for index in range(expected_count)]


def reorder_page(
    page: object,
    scores: Sequence[float | None],
    *,
    score_kind: ScoreKind,
    model: str,
    status: Literal["reranked", "partial"] = "reranked",
    reason: str | None = None,
    blend: ScoreBlend | None = None,
    min_score: float | None = None,
) -> dict[str, Any]:
    """Build a new page with the hits sorted by rerank score.

    The result follows the policies in this module's docstring. It is a new
    dict: the top-level dict, ``hits``, the ``hits.hits`` list and each hit
    are new, and everything inside a hit (``_source``, ``highlight``,
    ``fields``, ``inner_hits``, ...) and the other top-level values are shared
    with the input, unchanged. Deep-copy the result before changing those in
    place. A page with no hits comes back as a copy equal to the input, with
    no ``_rerank`` key.

    Args:
        page: A search response, in any form that `as_page` accepts.
        scores: One rerank score per hit: ``scores[i]`` belongs to
            ``page["hits"]["hits"][i]``. None marks a hit without text.
        score_kind: ``"raw"`` or ``"normalized"``, as the server reported it.
        model: Model name the server reported, stored in the page status.
        status: ``"reranked"``, or ``"partial"`` when the caller knows the
            reordering is incomplete. `reason` then describes what is missing.
        reason: Why the page is ``"partial"``. Required for that status and
            optional otherwise.
        blend: Weights for a ``_score`` that blends the normalized first-stage
            and rerank scores; None makes ``_score`` the rerank score.
        min_score: Remove scored hits whose new ``_score`` is below this
            value and count them in the page status. None keeps every hit.

    Returns:
        The reranked page as a plain dict.

    Raises:
        RerankInputError: The page is not a search response, a hit or the page
            already has a ``_rerank`` key, the number of scores differs from
            the number of hits, a score is not a number or None, or an option
            is invalid.
        RerankProtocolError: A score is NaN or infinite. The server must never
            send one, and JSON cannot represent one.

    Example::

        page = {"hits": {"hits": [{"_id": "a", "_score": 5.0}, {"_id": "b", "_score": 4.0}]}}
        reranked = reorder_page(page, [-10.8, 9.2], score_kind="raw", model="ms-marco-MiniLM-L6-v2")
        # reranked["hits"]["hits"] is b (_score 9.2) then a (_score -10.8).
    """
    page = as_page(page)
    hits = get_hits(page)
    _check_options(score_kind, model, status, reason)
    _check_scoring(blend, min_score)
    checked_scores = _check_scores(scores, len(hits))

    if not hits:
        return dict(page)

    _check_page_key_free(page)
    for position, hit in enumerate(hits):
        if RERANK_KEY in hit:
            raise RerankInputError(
                f"hits.hits[{position}] already has a {RERANK_KEY!r} key, and reranking would "
                "overwrite it. Rerank the original search response, not a reranked one, and "
                f"do not store a {RERANK_KEY!r} field at the top level of a hit."
            )

    if blend is None:
        new_scores = checked_scores
    else:
        new_scores = blend_scores([hit.get("_score") for hit in hits], checked_scores, blend)

    # Python's sort is stable, so equal scores keep the original order, and
    # hits without a score sort after every scored hit in their original order.
    order = sorted(range(len(hits)), key=lambda position: _sort_key(new_scores[position]))
    kept = [position for position in order if not _is_below(new_scores[position], min_score)]
    new_hits = [
        _rescore_hit(hits[position], position, new_scores[position], checked_scores[position], score_kind)
        for position in kept
    ]

    without_text = sum(1 for score in checked_scores if score is None)
    info: PageRerankInfo = {
        "status": status,
        "model": model,
        "score_kind": score_kind,
        "reranked_hits": len(hits) - without_text,
        "hits_without_text": without_text,
    }
    if reason is not None:
        info["reason"] = reason
    if blend is not None:
        info["blend"] = {"first_stage_weight": float(blend.first_stage_weight),
                         "rerank_weight": float(blend.rerank_weight)}
    if min_score is not None:
        info["min_score"] = float(min_score)
        info["hits_below_min_score"] = len(order) - len(kept)

    hits_object = dict(page["hits"])
    hits_object["hits"] = new_hits
    hits_object["max_score"] = new_hits[0]["_score"] if new_hits else None

    result = dict(page)
    result["hits"] = hits_object
    result[RERANK_KEY] = info
    return result


def mark_page(
    page: object,
    *,
    reason: str,
    status: Literal["skipped", "partial"] = "skipped",
    model: str | None = None,
    reason_code: str | None = None,
) -> dict[str, Any]:
    """Build a new page in the original hit order with the rerank status set.

    This is the fail-open result: when the rerank call fails and the caller
    chose to fall back, the page comes back in the search engine's order with
    ``_rerank.status`` stating that it was not reranked and ``_rerank.reason``
    stating why. The top-level dict, ``hits`` and the ``hits.hits`` list are
    new, but the hits in it are the input's own hit objects, unchanged. Unlike
    `reorder_page`, this adds the status to a page with no hits too.

    Args:
        page: A search response, in any form that `as_page` accepts.
        reason: Why the page was not reranked, for example the error message.
        status: ``"skipped"`` (the default) or ``"partial"``.
        model: Model name, when known.
        reason_code: One-word cause for programs, such as ``"timeout"`` (see
            `PageRerankInfo`).

    Returns:
        The page as a plain dict with a top-level ``_rerank`` key.

    Raises:
        RerankInputError: The page is not a search response or already has a
            ``_rerank`` key, or an option is invalid.
    """
    page = as_page(page)
    hits = get_hits(page)
    if not isinstance(reason, str) or _is_blank(reason):
        raise RerankInputError(
            "reason must be a non-empty string stating why the page was not reranked, "
            f"got {reason!r:.80}."
        )
    if status not in _UNORDERED_STATUSES:
        raise RerankInputError(
            f"Invalid status {status!r} for a page in original order. "
            f"Use one of {', '.join(map(repr, _UNORDERED_STATUSES))}, "
            "or reorder_page() for 'reranked'."
        )
    if model is not None and not isinstance(model, str):
        raise RerankInputError(f"model must be a string or None, got {_describe(model)}.")
    if reason_code is not None and not isinstance(reason_code, str):
        raise RerankInputError(f"reason_code must be a string or None, got {_describe(reason_code)}.")
    _check_page_key_free(page)

    info: PageRerankInfo = {"status": status, "reason": reason}
    if reason_code is not None:
        info["reason_code"] = reason_code
    if model is not None:
        info["model"] = model

    hits_object = dict(page["hits"])
    hits_object["hits"] = hits

    result = dict(page)
    result["hits"] = hits_object
    result[RERANK_KEY] = info
    return result


def _rescore_hit(
    hit: Mapping[str, Any],
    position: int,
    new_score: float | None,
    rerank_score: float | None,
    score_kind: ScoreKind,
) -> dict[str, Any]:
    info: HitRerankInfo = {
        "first_stage_score": hit.get("_score"),
        "first_stage_rank": position,
        "score": rerank_score,
        "score_kind": score_kind,
    }
    new_hit = dict(hit)
    new_hit["_score"] = new_score
    new_hit[RERANK_KEY] = info
    return new_hit


def _is_below(score: float | None, min_score: float | None) -> bool:
    return min_score is not None and score is not None and score < min_score


def _sort_key(score: float | None) -> tuple[bool, float]:
    if score is None:
        return (True, 0.0)
    return (False, -score)


def _check_scores(scores: Sequence[float | None], hit_count: int) -> list[float | None]:
    """Return the scores as floats, after checking their number and values."""
    if isinstance(scores, (str, bytes)) or not isinstance(scores, Sequence):
        raise RerankInputError(
            f"scores must be a sequence of floats or None, got {_describe(scores)}."
        )
    if len(scores) != hit_count:
        raise RerankInputError(
            f"scores has {len(scores)} entries but the page has {hit_count} hits. "
            "Pass exactly one score (or None) per hit, in page order."
        )

    checked: list[float | None] = []
    for position, score in enumerate(scores):
        if score is None:
            checked.append(None)
            continue
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise RerankInputError(
                f"scores[{position}] must be a float or None, got {_describe(score)}."
            )
        # Checked before sorting: NaN compares false with everything and would
        # leave the order undefined, and JSON has no NaN or infinity.
        if not math.isfinite(score):
            raise RerankProtocolError(
                f"Invalid rerank score for hit {position}: expected a finite number or None, "
                f"but received {score!r}. The rerank server must never send NaN or infinity. "
                f"{_SERVER_BUG}"
            )
        checked.append(float(score))
    return checked


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_score(value: object) -> bool:
    """Return whether `value` is None or a finite int or float (bool excluded)."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def _check_options(
    score_kind: object,
    model: object,
    status: object,
    reason: object,
) -> None:
    if score_kind not in _SCORE_KINDS:
        raise RerankInputError(
            f"Invalid score_kind {score_kind!r}. Use 'raw' or 'normalized'."
        )
    if not isinstance(model, str):
        raise RerankInputError(f"model must be a string, got {_describe(model)}.")
    if status not in _REORDERED_STATUSES:
        raise RerankInputError(
            f"Invalid status {status!r} for a reordered page. "
            f"Use one of {', '.join(map(repr, _REORDERED_STATUSES))}, or mark_page() for 'skipped'."
        )
    if reason is not None and not isinstance(reason, str):
        raise RerankInputError(f"reason must be a string or None, got {_describe(reason)}.")
    if status == "partial" and (reason is None or _is_blank(reason)):
        raise RerankInputError(
            "status 'partial' requires a reason that describes what was not reranked."
        )


def _check_scoring(blend: object, min_score: object) -> None:
    if blend is not None and not isinstance(blend, ScoreBlend):
        raise RerankInputError(f"blend must be a ScoreBlend or None, got {_describe(blend)}.")
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not math.isfinite(min_score)
    ):
        raise RerankInputError(f"min_score must be a finite number or None, got {_describe(min_score)}.")


def _check_page_key_free(page: Mapping[str, Any]) -> None:
    if RERANK_KEY in page:
        raise RerankInputError(
            f"The page already has a top-level {RERANK_KEY!r} key, and reranking would "
            "overwrite it. Rerank the original search response, not a reranked one."
        )


def _is_blank(text: str) -> bool:
    return not text or text.isspace()


def _describe_indices(indices: list[int]) -> str:
    if len(indices) == 1:
        return f"index {indices[0]}"
    return "indices " + ", ".join(str(index) for index in indices)


def _describe(value: object) -> str:
    """Return the type name and the repr of `value`, cut to 80 characters, for error messages."""
    return f"{type(value).__name__} {value!r:.80}"
