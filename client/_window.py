"""Rank window: rerank the top N hits of a search once and serve ``from``/``size`` pages from them.

Reranking only the page a user asked for (``from=10, size=10``) reorders those
10 hits among themselves. A hit at first-stage position 15 that the model
scores best can then never reach page 1, and page 1 and page 2 are each
sorted by rerank score but the two together are not. A rank window fixes
both: `WindowSearch` runs the search with ``from=0`` and ``size`` of at least
the window (for example 100), reranks those hits in one call, and cuts each
requested page out of that one order. Every page of the window then comes
from the same ranking, so consecutive pages neither skip nor repeat a hit.
The cost is one rerank of the whole window per search instead of one page.

Policies:

- The window is the first `window` hits of the first-stage result. Only they
  are reranked. Hits past the window are never compared with those inside it.
- Pages are slices of one list: the reranked window, then the hits past the
  window in first-stage order. Pages 1, 2, ... of one size, put together,
  are that list: each hit once, no gaps. A page past the end of the list is
  empty, never an error, and never wraps around.
- Callers should keep ``from + size <= window``. `WindowSearch.search` still
  serves a page that reaches past the window: it fetches ``from + size`` hits
  in that one search, and the hits past the window keep their first-stage
  order and ``_score`` and get no per-hit ``_rerank`` key. Such a page has
  status ``"partial"`` with ``reason_code`` ``"past_window"`` and counts them
  in ``hits_past_window``. Its ``_score`` values then mix two scales and are
  not sorted across the window boundary.
- With a minimum score, reranked hits below it are removed and counted in
  ``hits_below_min_score``. Hits past the window have no rerank score to
  compare with it, so they are not fetched and the pages end with the last
  reranked hit.
- When the rerank fails and fail-open is on, the window keeps its first-stage
  order and every page has status ``"skipped"`` with the reason, so paging
  stays consistent. With fail-open off the error is raised.
- Each page keeps the search response's envelope (``took``, ``_shards``,
  ``hits.total``, ``aggregations``). ``hits.max_score`` is the window's
  highest ``_score`` on every page, as a search engine reports the maximum
  over the whole result on every page.
- `WindowSearch.search` runs one search and one rerank per call. Pages from
  separate calls fit together only while the first-stage order is the same
  between calls, the same condition as plain ``from``/``size`` paging (pin it
  with a ``preference`` string or a point in time). Pages cut from one
  `RankedWindow` always fit together.

Any search client whose ``search(index=..., body=..., **params)`` returns a
search response works: opensearch-py's ``OpenSearch`` with `WindowSearch` and
its ``AsyncOpenSearch`` (the ``opensearch-py[async]`` extra) with
`AsyncWindowSearch`. For a response you fetched yourself, for example from an
Elasticsearch client, call `WindowSearch.rank_response`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._blend import ScoreBlend
from ._errors import RerankInputError
from ._reorder import RERANK_KEY, PageRerankInfo, as_page, get_hits
from ._text import TextSpec, as_text_template

if TYPE_CHECKING:
    from ._aio import AsyncRerankClient
    from ._client import RerankClient

__all__ = ["AsyncWindowSearch", "RankedWindow", "WindowSearch"]

DEFAULT_WINDOW = 100
# OpenSearch's and Elasticsearch's default page: from 0, size 10.
_DEFAULT_FROM = 0
_DEFAULT_SIZE = 10


@dataclass(frozen=True)
class RankedWindow:
    """A reranked window and the hits fetched past it, from which pages are cut.

    Attributes:
        response: The search response with ``hits.hits`` replaced by the
            reranked window followed by the hits past it, and the window's
            rerank status under ``_rerank``.
        window: The requested window size.
        window_hits: How many hits at the start of ``response`` come from the
            window; the rest lie past it.

    Pages share the hit objects with `response`; copy a page before changing
    its hits in place.
    """

    response: dict[str, Any]
    window: int
    window_hits: int

    @property
    def hits(self) -> list[dict[str, Any]]:
        return self.response["hits"]["hits"]

    def page(self, from_: int = _DEFAULT_FROM, size: int = _DEFAULT_SIZE) -> dict[str, Any]:
        """Return the page of hits at positions ``from_`` to ``from_ + size`` (exclusive).

        A page past the end is shorter or empty. Its status is the window's,
        or ``"partial"`` with ``reason_code`` ``"past_window"`` when some of
        its hits lie past a reranked window (see the module docstring).
        """
        _check_count("from_", from_)
        _check_count("size", size)
        hits = self.hits[from_:from_ + size]
        page = dict(self.response)
        hits_object = dict(self.response["hits"])
        hits_object["hits"] = hits
        page["hits"] = hits_object
        if RERANK_KEY not in self.response:
            # The search found nothing, so there is no status to report.
            return page

        past = len(hits) - max(0, min(len(hits), self.window_hits - from_))
        info: PageRerankInfo = dict(self.response[RERANK_KEY])  # type: ignore[assignment]
        info["window"] = self.window
        info["from"] = from_  # type: ignore[typeddict-unknown-key]
        info["size"] = size  # type: ignore[typeddict-unknown-key]
        info["hits_past_window"] = past
        if past and info["status"] == "reranked":
            info["status"] = "partial"
            info["reason"] = (f"{past} hits on this page lie past the rank window of {self.window} hits "
                              "and keep their first-stage order and _score")
            info["reason_code"] = "past_window"
        page[RERANK_KEY] = info
        return page


class _WindowSettings:
    """Options and pure steps shared by `WindowSearch` and `AsyncWindowSearch`."""

    def __init__(self, fields: TextSpec, *, window: int, normalized: bool, truncation: str | None,
                 timeout: float | None, fail_open: bool | None, blend: ScoreBlend | None,
                 min_score: float | None) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise RerankInputError(f"window must be an integer >= 1, got {window!r}")
        as_text_template(fields)
        self.fields = fields
        self.window = window
        self.min_score = min_score
        self._rerank_options: dict[str, Any] = {
            "normalized": normalized, "truncation": truncation, "timeout": timeout, "fail_open": fail_open,
            "blend": blend, "min_score": min_score,
        }

    def _request(self, body: Mapping[str, Any] | None, from_: int | None, size: int | None,
                 ) -> tuple[dict[str, Any], int, int]:
        """Return the search body for the window, and the page's from and size."""
        if body is not None and not isinstance(body, Mapping):
            raise RerankInputError(f"body must be a search request body (a dict) or None, got {body!r:.80}")
        request = dict(body or {})
        from_ = request.get("from", _DEFAULT_FROM) if from_ is None else from_
        size = request.get("size", _DEFAULT_SIZE) if size is None else size
        _check_count("from_", from_)
        _check_count("size", size)
        # With a minimum score the pages end at the window (see the module
        # docstring), so nothing past it is fetched.
        fetch = self.window if self.min_score is not None else max(self.window, from_ + size)
        request["from"] = 0
        request["size"] = fetch
        return request, from_, size

    def _split(self, response: object) -> tuple[dict[str, Any], list[Any]]:
        """Return the window as a page of its own, and the hits past it."""
        source = as_page(response)
        hits = get_hits(source)
        head = dict(source)
        head["hits"] = {**source["hits"], "hits": hits[:self.window]}
        return head, hits[self.window:]

    def _assemble(self, reranked_head: dict[str, Any], tail: list[Any]) -> RankedWindow:
        window_hits = list(reranked_head["hits"]["hits"])
        tail = [] if self.min_score is not None else tail
        response = dict(reranked_head)
        response["hits"] = {**reranked_head["hits"], "hits": window_hits + list(tail)}
        return RankedWindow(response=response, window=self.window, window_hits=len(window_hits))


class WindowSearch(_WindowSettings):
    """Search with a rank window and serve reranked pages, with opensearch-py's sync client.

    Args:
        search_client: ``opensearchpy.OpenSearch``, or any object with a
            ``search(index=..., body=..., **params)`` method that returns a
            search response.
        rerank_client: The `RerankClient` that reranks the window.
        fields: Where each hit's text comes from, as in `RerankClient.rerank_page`.
        window: Number of top hits to rerank.
        normalized, truncation, timeout, fail_open, blend, min_score: Passed
            to `RerankClient.rerank_page` for the window.

    Example::

        pages = WindowSearch(opensearch, reranker, ["title", "text"], window=100, fail_open=True)
        page_2 = pages.search(index="docs", body={"query": {"match": {"text": q}}}, query=q, from_=10, size=10)
    """

    def __init__(self, search_client: Any, rerank_client: RerankClient, fields: TextSpec, *,
                 window: int = DEFAULT_WINDOW, normalized: bool = False, truncation: str | None = None,
                 timeout: float | None = None, fail_open: bool | None = None, blend: ScoreBlend | None = None,
                 min_score: float | None = None) -> None:
        from ._client import RerankClient

        if not isinstance(rerank_client, RerankClient):
            raise RerankInputError(
                f"rerank_client must be a RerankClient, got {type(rerank_client).__name__}; "
                "use AsyncWindowSearch with AsyncRerankClient")
        super().__init__(fields, window=window, normalized=normalized, truncation=truncation, timeout=timeout,
                         fail_open=fail_open, blend=blend, min_score=min_score)
        self.search_client = search_client
        self.rerank_client = rerank_client

    def search(self, *, index: str | None, body: Mapping[str, Any] | None, query: str, from_: int | None = None,
               size: int | None = None, **params: Any) -> dict[str, Any]:
        """Run the search with the window, rerank the window and return one page.

        Args:
            index: Index name or pattern, as for ``search_client.search``.
            body: Search request body; its ``from`` and ``size`` are the page's
                unless `from_` and `size` are given, and are replaced in the
                request sent.
            query: Query text the hits are reranked against.
            from_, size: The page; default the body's, else 0 and 10.
            params: Further arguments for ``search_client.search``.

        Raises:
            RerankInputError: Invalid page bounds, body or query.
            RerankError subclasses when the rerank fails and fail-open is off.
            Search client errors pass through unchanged.
        """
        request, from_, size = self._request(body, from_, size)
        response = _sync_search(self.search_client, index, request, params)
        return self.rank_response(response, query).page(from_, size)

    def fetch_window(self, *, index: str | None, body: Mapping[str, Any] | None, query: str,
                     **params: Any) -> RankedWindow:
        """Run the search for the window alone and rerank it; cut pages with `RankedWindow.page`."""
        request, _from, _size = self._request(body, 0, 0)
        response = _sync_search(self.search_client, index, request, params)
        return self.rank_response(response, query)

    def rank_response(self, response: object, query: str) -> RankedWindow:
        """Rerank the first `window` hits of a search response you ran yourself (from 0)."""
        head, tail = self._split(response)
        reranked = self.rerank_client.rerank_page(head, query, self.fields, **self._rerank_options)
        return self._assemble(reranked, tail)


class AsyncWindowSearch(_WindowSettings):
    """`WindowSearch` for asyncio: opensearch-py's ``AsyncOpenSearch`` and `AsyncRerankClient`.

    The arguments and the policies are those of `WindowSearch`; `search`,
    `fetch_window` and `rank_response` are coroutines.
    """

    def __init__(self, search_client: Any, rerank_client: AsyncRerankClient, fields: TextSpec, *,
                 window: int = DEFAULT_WINDOW, normalized: bool = False, truncation: str | None = None,
                 timeout: float | None = None, fail_open: bool | None = None, blend: ScoreBlend | None = None,
                 min_score: float | None = None) -> None:
        from ._aio import AsyncRerankClient

        if not isinstance(rerank_client, AsyncRerankClient):
            raise RerankInputError(
                f"rerank_client must be an AsyncRerankClient, got {type(rerank_client).__name__}; "
                "use WindowSearch with RerankClient")
        super().__init__(fields, window=window, normalized=normalized, truncation=truncation, timeout=timeout,
                         fail_open=fail_open, blend=blend, min_score=min_score)
        self.search_client = search_client
        self.rerank_client = rerank_client

    async def search(self, *, index: str | None, body: Mapping[str, Any] | None, query: str,
                     from_: int | None = None, size: int | None = None, **params: Any) -> dict[str, Any]:
        """Run the search with the window, rerank the window and return one page (see `WindowSearch.search`)."""
        request, from_, size = self._request(body, from_, size)
        response = await _async_search(self.search_client, index, request, params)
        window = await self.rank_response(response, query)
        return window.page(from_, size)

    async def fetch_window(self, *, index: str | None, body: Mapping[str, Any] | None, query: str,
                           **params: Any) -> RankedWindow:
        """Run the search for the window alone and rerank it; cut pages with `RankedWindow.page`."""
        request, _from, _size = self._request(body, 0, 0)
        response = await _async_search(self.search_client, index, request, params)
        return await self.rank_response(response, query)

    async def rank_response(self, response: object, query: str) -> RankedWindow:
        """Rerank the first `window` hits of a search response you ran yourself (from 0)."""
        head, tail = self._split(response)
        reranked = await self.rerank_client.rerank_page(head, query, self.fields, **self._rerank_options)
        return self._assemble(reranked, tail)


def _sync_search(search_client: Any, index: str | None, body: dict[str, Any], params: dict[str, Any]) -> Any:
    response = search_client.search(index=index, body=body, **params)
    if inspect.isawaitable(response):
        # Close an unawaited coroutine so that asyncio does not warn about it.
        if inspect.iscoroutine(response):
            response.close()
        raise RerankInputError("search_client.search returned an awaitable, so it is an async client; "
                               "use AsyncWindowSearch with AsyncRerankClient")
    return response


async def _async_search(search_client: Any, index: str | None, body: dict[str, Any],
                        params: dict[str, Any]) -> Any:
    response = search_client.search(index=index, body=body, **params)
    if not inspect.isawaitable(response):
        raise RerankInputError("search_client.search did not return an awaitable, so it is a sync client; "
                               "use WindowSearch with RerankClient")
    return await response


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RerankInputError(f"{name} must be an integer >= 0, got {value!r}")
