"""BM25 through OpenSearch, the same run reranked through the sidecar, and blends of the two.

The flow per query: search the index with the harness's BM25 query for ``depth``
hits, send the top ``k`` hits to the sidecar with ``RerankClient.rerank_page``
(title and text, as the client's default template joins them), and keep both
scores. Hits past ``k`` stay in BM25 order after the reranked ones. Blending is
computed afterwards from the kept scores, so trying many weights costs no RPCs.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .blend import blend_scores, order_by
from .dataset import BeirSplit
from .measures import MEASURE_NAMES, evaluate_run, ranking_to_run

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from rerank_client import RerankClient

logger = logging.getLogger(__name__)

TEXT_FIELDS = ("title", "text")
DEFAULT_WEIGHTS = tuple(round(step / 10, 1) for step in range(11))
BM25_SETUP = ("OpenSearch match on one contents field that title and text are copied into, "
              "english analyzer (standard tokenizer, lowercase, English stop words, Porter stemming), one shard")

# nDCG@10 on SciFact as printed in the BEIR paper (Thakur et al., 2021), copied here for
# comparison and not measured by this code: BM25, and BM25 top 100 reranked by
# cross-encoder/ms-marco-MiniLM-L6-v2.
PUBLISHED_NDCG10 = {"scifact": {"BEIR paper: BM25": 0.665, "BEIR paper: BM25 + CE rerank (top 100)": 0.688}}


@dataclass
class Candidates:
    """BM25 hits of one query, best first, with the rerank scores of the top ``k``."""

    query_id: str
    doc_ids: list[str]
    first_stage: list[float]
    rerank: list[float] = field(default_factory=list)

    def bm25_order(self) -> list[str]:
        return list(self.doc_ids)

    def rerank_order(self) -> list[str]:
        """Top ``k`` by rerank score (ties in BM25 order), then the rest in BM25 order."""
        k = len(self.rerank)
        return [self.doc_ids[position] for position in order_by(self.rerank)] + self.doc_ids[k:]

    def blend_order(self, weight: float) -> list[str]:
        """Top ``k`` by blended score, then the rest in BM25 order."""
        k = len(self.rerank)
        blended = blend_scores(self.first_stage[:k], self.rerank, weight)
        return [self.doc_ids[position] for position in order_by(blended)] + self.doc_ids[k:]


def collect_candidates(opensearch: OpenSearch, index: str, split: BeirSplit, rerank_client: RerankClient | None,
                       *, k: int, depth: int, progress: bool = True,
                       description: str = "queries") -> tuple[list[Candidates], str]:
    """Run BM25 for every query of ``split`` and rerank the top ``k`` hits through the sidecar.

    Args:
        rerank_client: Client of the sidecar; None runs BM25 only.
        k: Hits per query sent to the sidecar.
        depth: BM25 hits fetched per query; at least ``k``.
        progress: Show a progress bar on stderr.

    Returns:
        The candidates per query in split order, and the model name the sidecar
        reported ("" without a client).
    """
    from tqdm.auto import tqdm

    from rerank_harness.scifact import search_bm25

    if depth < k:
        raise ValueError(f"depth {depth} is below k {k}; fetch at least as many BM25 hits as are reranked")
    candidates: list[Candidates] = []
    model = ""
    for query in tqdm(split.queries, desc=description, unit="query", disable=not progress):
        response = search_bm25(opensearch, index, query.text, size=depth)
        hits = response["hits"]["hits"]
        entry = Candidates(query.query_id, [hit["_id"] for hit in hits], [float(hit["_score"]) for hit in hits])
        if rerank_client is not None and hits:
            page = {**response, "hits": {**response["hits"], "hits": hits[:k]}}
            reranked = rerank_client.rerank_page(page, query.text, fields=list(TEXT_FIELDS))
            model = reranked["_rerank"].get("model", model)
            by_id = {hit["_id"]: hit["_score"] for hit in reranked["hits"]["hits"]}
            scores = [by_id[doc_id] for doc_id in entry.doc_ids[:k]]
            # A hit without text gets no score from the sidecar; one below every scored hit
            # keeps it last and keeps min-max scaling finite.
            floor = min((float(score) for score in scores if score is not None), default=0.0) - 1.0
            entry.rerank = [floor if score is None else float(score) for score in scores]
        candidates.append(entry)
    return candidates, model


def measure(split: BeirSplit, rankings: Iterable[tuple[str, list[str]]]) -> dict[str, float]:
    """Evaluate one system's rankings against the split's judgments."""
    return evaluate_run(split.qrels, ranking_to_run(dict(rankings)))  # type: ignore[return-value]


def tune_weight(split: BeirSplit, candidates: Sequence[Candidates],
                weights: Sequence[float] = DEFAULT_WEIGHTS) -> tuple[float, dict[float, float]]:
    """Pick the blend weight with the best nDCG@10 on ``split``; ties go to the smaller weight.

    Returns:
        The chosen weight and nDCG@10 for every weight tried.
    """
    scores: dict[float, float] = {}
    for weight in weights:
        scores[weight] = measure(split, ((entry.query_id, entry.blend_order(weight)) for entry in candidates))[
            "nDCG@10"]
    best = max(weights, key=lambda weight: (scores[weight], -weight))
    return best, scores


def compare_systems(split: BeirSplit, candidates: Sequence[Candidates], weight: float | None) -> dict[str, dict[str, float]]:
    """Return the measures of BM25, BM25 + rerank and, with a weight, the blend."""
    systems = {"BM25": measure(split, ((entry.query_id, entry.bm25_order()) for entry in candidates))}
    if any(entry.rerank for entry in candidates):
        systems["BM25 + rerank"] = measure(split, ((entry.query_id, entry.rerank_order()) for entry in candidates))
        if weight is not None:
            systems[f"BM25 + rerank, blended (weight {weight:g})"] = measure(
                split, ((entry.query_id, entry.blend_order(weight)) for entry in candidates))
    return systems


def hardware_description() -> str:
    """Return the CPU model and core count of this machine, for benchmark records."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores visible"


def format_table(report: dict[str, Any]) -> str:
    """Render the systems of a report, and the published figures for the dataset, as a Markdown table."""
    names = list(MEASURE_NAMES)
    lines = ["| system | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for system, values in report["systems"].items():
        lines.append(f"| {system} | " + " | ".join(f"{values[name]:.3f}" for name in names) + " |")
    for system, value in report.get("published", {}).items():
        lines.append(f"| {system} | {value:.3f} | " + " | ".join("-" for _ in names[1:]) + " |")
    return "\n".join(lines)


class Stopwatch:
    """Named wall-clock durations, in seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def time(self, name: str) -> _Lap:
        return _Lap(self, name)


class _Lap:
    def __init__(self, watch: Stopwatch, name: str) -> None:
        self._watch = watch
        self._name = name
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *_exc: object) -> None:
        self._watch.seconds[self._name] = round(time.perf_counter() - self._started, 2)
