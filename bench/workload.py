"""Rerank pages built from SciFact without OpenSearch: each query's top BM25 hits.

A page pairs one SciFact claim with the abstracts that a BM25 search over title
and text ranks highest, so neighbours on a page share vocabulary as they do in
a real first-stage result. BM25 here is the plain Robertson formula with
k1=0.9 and b=0.4 (Anserini's BEIR settings) over lower-cased alphanumeric
words minus a short stop-word list; it is close to, not equal to, OpenSearch's
``english`` analyzer, which also stems.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerank_harness.scifact import Document, load_scifact

K1 = 0.9
B = 0.4
_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the their this to was were "
    "which with".split()
)


@dataclass(frozen=True)
class Page:
    """One rerank request: a query and the texts of its BM25 hits, best hit first."""

    query: str
    documents: list[str]
    doc_ids: list[str]

    @property
    def size(self) -> int:
        return len(self.documents)


def document_text(document: Document, max_words: int) -> str:
    """Return ``title + " " + text`` as BEIR reranks it, cut to ``max_words`` words (0 keeps all)."""
    text = f"{document.title} {document.text}".strip()
    if max_words <= 0:
        return text
    return " ".join(text.split()[:max_words])


def _terms(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if word not in _STOP_WORDS]


class Bm25Index:
    """An in-memory BM25 index over SciFact title and text."""

    def __init__(self, documents: Sequence[Document]) -> None:
        self.documents = list(documents)
        postings: dict[str, tuple[list[int], list[int]]] = {}
        lengths = np.zeros(len(self.documents), dtype=np.float64)
        for number, document in enumerate(self.documents):
            counts = Counter(_terms(f"{document.title} {document.text}"))
            lengths[number] = sum(counts.values())
            for term, count in counts.items():
                rows, freqs = postings.setdefault(term, ([], []))
                rows.append(number)
                freqs.append(count)
        self._postings = {term: (np.array(rows), np.array(freqs, dtype=np.float64))
                          for term, (rows, freqs) in postings.items()}
        self._norm = K1 * (1 - B + B * lengths / max(lengths.mean(), 1.0))

    def search(self, query: str, size: int) -> list[int]:
        """Return the row numbers of the ``size`` best documents, best first; ties by row number."""
        scores = np.zeros(len(self.documents), dtype=np.float64)
        count = len(self.documents)
        for term in set(_terms(query)):
            if term not in self._postings:
                continue
            rows, freqs = self._postings[term]
            idf = math.log(1 + (count - len(rows) + 0.5) / (len(rows) + 0.5))
            scores[rows] += idf * freqs * (K1 + 1) / (freqs + self._norm[rows])
        order = np.lexsort((np.arange(count), -scores))
        return order[:size].tolist()


class Workload:
    """Pages of SciFact queries and their BM25 hits, in a fixed seeded query order.

    Args:
        data_dir: SciFact folder; None means the repository's ``data/scifact``.
        document_words: Words kept of each document (0 keeps whole abstracts).
        seed: Seed of the query order and of the page-size mix.
    """

    def __init__(self, data_dir: Path | None = None, *, document_words: int = 24, seed: int = 0) -> None:
        scifact = load_scifact(data_dir)
        self.document_words = document_words
        self.index = Bm25Index(scifact.documents)
        queries = [query.text for query in scifact.queries.values()]
        random.Random(seed).shuffle(queries)
        self._queries = queries
        self._seed = seed
        self._next_query = 0

    def pages(self, count: int, size: int) -> list[Page]:
        """Return ``count`` pages of ``size`` documents, each for the next query in order."""
        return [self._page(self._take_query(), size) for _ in range(count)]

    def mixed(self, count: int, sizes: Sequence[int]) -> list[Page]:
        """Return ``count`` pages whose sizes cycle through a seeded shuffle of ``sizes``."""
        rng = random.Random(self._seed + 1)
        chosen = [sizes[index % len(sizes)] for index in range(count)]
        rng.shuffle(chosen)
        return [self._page(self._take_query(), size) for size in chosen]

    def _take_query(self) -> str:
        query = self._queries[self._next_query % len(self._queries)]
        self._next_query += 1
        return query

    def _page(self, query: str, size: int) -> Page:
        rows = self.index.search(query, size)
        documents = [self.index.documents[row] for row in rows]
        return Page(query=query, documents=[document_text(document, self.document_words) for document in documents],
                    doc_ids=[document.doc_id for document in documents])
