"""BEIR-format datasets: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

The readers are the harness's SciFact readers, which follow the BEIR layout and
work for any BEIR dataset folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rerank_harness.scifact import Document, Qrels, Query, load_corpus, load_qrels, load_queries


@dataclass(frozen=True)
class BeirSplit:
    """One split of a BEIR dataset: its judged queries (sorted by id), judgments and the corpus."""

    name: str
    folder: Path
    split: str
    documents: list[Document]
    queries: list[Query]
    qrels: Qrels

    @property
    def documents_by_id(self) -> dict[str, Document]:
        return {document.doc_id: document for document in self.documents}


def load_split(folder: Path, split: str, *, limit: int | None = None,
               documents: list[Document] | None = None) -> BeirSplit:
    """Load the queries judged in ``split`` and their qrels, optionally only the first ``limit``.

    Queries are sorted by id (numerically where every id is a number), so a
    ``limit`` always takes the same slice.

    Raises:
        FileNotFoundError: A file of the BEIR layout is missing; the message names it.
        ValueError: A judged query id is not in ``queries.jsonl``.
    """
    for path in (folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; pass --dataset with a folder in the BEIR layout "
                                    "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    corpus = load_corpus(folder / "corpus.jsonl") if documents is None else documents
    all_queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
    ids = sorted(qrels, key=_id_key)
    missing = [query_id for query_id in ids if query_id not in all_queries]
    if missing:
        raise ValueError(f"{len(missing)} query ids judged in qrels/{split}.tsv are not in queries.jsonl, "
                         f"for example {missing[0]!r}")
    if limit is not None:
        ids = ids[:limit]
    return BeirSplit(name=folder.resolve().name, folder=folder, split=split, documents=corpus,
                     queries=[all_queries[query_id] for query_id in ids],
                     qrels={query_id: qrels[query_id] for query_id in ids})


def document_text(document: Document) -> str:
    """Return the text given to a model: title and text on two lines, as the client's default template joins them."""
    if document.title.strip():
        return f"{document.title}\n{document.text}"
    return document.text


def _id_key(query_id: str) -> tuple[int, int | str]:
    return (0, int(query_id)) if query_id.isdigit() else (1, query_id)
