"""Ranking quality tools for the rerank sidecar: ``rerank-eval`` and ``rerank-train``.

- :mod:`rerank_quality.measures` computes nDCG@10, MRR@10 and Recall@100 with
  ir-measures (trec_eval through pytrec_eval).
- :mod:`rerank_quality.blend` mixes first-stage and rerank scores.
- :mod:`rerank_quality.evaluate` runs BM25 through OpenSearch, reranks through
  the sidecar and compares the runs (the ``rerank-eval`` command).
- :mod:`rerank_quality.train` fine-tunes a cross-encoder (the ``rerank-train``
  command).

Install with ``pip install -e '.[quality]'``.
"""

from __future__ import annotations

from .blend import blend_scores, min_max
from .measures import MEASURE_NAMES, evaluate_run, ranking_to_run

__all__ = ["MEASURE_NAMES", "blend_scores", "evaluate_run", "min_max", "ranking_to_run"]
