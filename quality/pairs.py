"""Labelled (query, document, label) pairs for cross-encoder training.

Three sources:

- A file: CSV, TSV or JSONL with the columns ``query``, ``document``, ``label``
  (or ``sentence_0``, ``sentence_1``, ``label``, the names sentence-transformers
  writes). Labels are numbers in [0, 1].
- A BEIR split: each judged positive gets label 1, and the top BM25 hits from
  the real OpenSearch node that are not judged relevant get label 0 (hard
  negatives).
- Distillation: BM25 candidates labelled with a teacher's score, by default the
  blend of the min-max normalized BM25 score and the bi-encoder score.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .blend import blend_scores
from .dataset import BeirSplit, document_text

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from rerank_client import RerankClient

COLUMN_SETS = (("query", "document", "label"), ("sentence_0", "sentence_1", "label"))


class PairFileError(ValueError):
    """A pair file has an unknown format, a missing column or an invalid label."""


@dataclass(frozen=True)
class Pair:
    query: str
    document: str
    label: float


def read_pairs(path: Path) -> list[Pair]:
    """Read pairs from a ``.csv``, ``.tsv`` or ``.jsonl`` file (``.txt`` is read as TSV).

    Raises:
        PairFileError: The suffix, a column or a label is invalid; the message
            names the file and line.
    """
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        rows = _read_delimited(path, "," if suffix == ".csv" else "\t")
    elif suffix in (".jsonl", ".json"):
        rows = _read_jsonl(path)
    else:
        raise PairFileError(f"{path}: unknown pair file type {suffix!r}; expected .csv, .tsv or .jsonl")
    pairs = []
    for line, row in rows:
        columns = next((names for names in COLUMN_SETS if all(name in row for name in names)), None)
        if columns is None:
            raise PairFileError(f"{path}:{line}: expected the columns query, document, label or "
                                f"sentence_0, sentence_1, label; found {sorted(row)}")
        query, document, label = (row[name] for name in columns)
        pairs.append(Pair(str(query), str(document), _label(label, path, line)))
    if not pairs:
        raise PairFileError(f"{path}: no pairs found")
    return pairs


def _label(value: object, path: Path, line: int) -> float:
    try:
        label = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PairFileError(f"{path}:{line}: label {value!r} is not a number; expected a number in [0, 1]") from None
    if math.isnan(label) or not 0.0 <= label <= 1.0:
        raise PairFileError(f"{path}:{line}: label {value!r} is outside [0, 1]")
    return label


def _read_delimited(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        for row in reader:
            yield reader.line_num, row


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise PairFileError(f"{path}:{line_number}: invalid JSON: {error}") from None
            if not isinstance(row, dict):
                raise PairFileError(f"{path}:{line_number}: expected a JSON object per line")
            yield line_number, row


def write_pairs(path: Path, pairs: list[Pair]) -> None:
    """Write pairs as JSONL with the columns query, document, label."""
    with path.open("w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps({"query": pair.query, "document": pair.document, "label": pair.label}) + "\n")


def mine_bm25_pairs(opensearch: OpenSearch, index: str, split: BeirSplit, *, negatives: int,
                    depth: int, seed: int, progress: bool = True) -> list[Pair]:
    """Build labelled pairs: judged positives (1) and BM25 hard negatives (0).

    The negatives of a query are ``negatives`` hits drawn at random, with
    ``seed``, from its top ``depth`` BM25 hits that are not judged relevant.
    """
    from tqdm.auto import tqdm

    from rerank_harness.scifact import search_bm25

    documents = split.documents_by_id
    generator = random.Random(seed)
    pairs: list[Pair] = []
    for query in tqdm(split.queries, desc="mining BM25 negatives", unit="query", disable=not progress):
        relevant = {doc_id for doc_id, grade in split.qrels[query.query_id].items() if grade > 0}
        pairs.extend(Pair(query.text, document_text(documents[doc_id]), 1.0)
                     for doc_id in sorted(relevant) if doc_id in documents)
        hits = search_bm25(opensearch, index, query.text, size=depth)["hits"]["hits"]
        pool = [hit["_id"] for hit in hits if hit["_id"] not in relevant]
        chosen = generator.sample(pool, min(negatives, len(pool)))
        pairs.extend(Pair(query.text, document_text(documents[doc_id]), 0.0) for doc_id in chosen)
    return pairs


def mine_teacher_pairs(opensearch: OpenSearch, index: str, split: BeirSplit, teacher: RerankClient, *,
                       depth: int, weight: float, progress: bool = True) -> list[Pair]:
    """Label the top ``depth`` BM25 hits of each query with the teacher blend, for distillation.

    The label is ``blend_scores(bm25, teacher, weight)``: in [0, 1], 1 for the
    best candidate of the query. With ``weight`` 1 it is the min-max normalized
    teacher score alone.
    """
    from tqdm.auto import tqdm

    from .evaluate import collect_candidates

    candidates, _ = collect_candidates(opensearch, index, split, teacher, k=depth, depth=depth,
                                       progress=progress, description="teacher scores")
    documents = split.documents_by_id
    queries = {query.query_id: query.text for query in split.queries}
    pairs: list[Pair] = []
    for entry in tqdm(candidates, desc="labelling", unit="query", disable=not progress):
        if not entry.rerank:
            continue
        labels = blend_scores(entry.first_stage, entry.rerank, weight)
        pairs.extend(Pair(queries[entry.query_id], document_text(documents[doc_id]), float(label))
                     for doc_id, label in zip(entry.doc_ids, labels))
    return pairs
