"""Fidelity report: how dynamic int8 changes the rankings of SciFact BM25 pages against fp32.

Both models are the ONNX backend of the same folder, so the report isolates
quantization. Per page it computes the Spearman correlation of the two score
lists and the overlap of their top-k documents, then summarizes over pages,
and it times both precisions on the same pages in this process.

Run from the repository root::

    python -m bench.fidelity --model path/to/cross-encoder --pages 30 --page-size 50
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .report import format_table
from .workload import Workload

TOP_K = (1, 5, 10)


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation, with tied values given their average rank."""
    first_ranks, second_ranks = _ranks(first), _ranks(second)
    if np.std(first_ranks) == 0 or np.std(second_ranks) == 0:
        return 1.0 if np.array_equal(first_ranks, second_ranks) else 0.0
    return float(np.corrcoef(first_ranks, second_ranks)[0, 1])


def top_k_overlap(first: np.ndarray, second: np.ndarray, k: int) -> float:
    """Share of the ``k`` best documents by ``first`` that are also among the ``k`` best by ``second``."""
    k = min(k, len(first))
    best_first = set(np.argsort(-first, kind="stable")[:k].tolist())
    best_second = set(np.argsort(-second, kind="stable")[:k].tolist())
    return len(best_first & best_second) / k


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def compare_pages(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict[str, Any]:
    """Summarize per-page Spearman, top-k overlap and max score difference over all pages."""
    correlations = [spearman(first, second) for first, second in zip(reference, candidate)]
    summary: dict[str, Any] = {
        "pages": len(correlations),
        "spearman_mean": float(np.mean(correlations)),
        "spearman_min": float(np.min(correlations)),
        "same_order_pages": int(sum(np.array_equal(np.argsort(-first, kind="stable"),
                                                   np.argsort(-second, kind="stable"))
                                    for first, second in zip(reference, candidate))),
        "max_abs_diff": float(max(np.max(np.abs(first - second)) for first, second in zip(reference, candidate))),
        "reference_score_spread_mean": float(np.mean([np.ptp(first) for first in reference])),
    }
    for k in TOP_K:
        overlaps = [top_k_overlap(first, second, k) for first, second in zip(reference, candidate)]
        summary[f"top{k}_overlap_mean"] = float(np.mean(overlaps))
        summary[f"top{k}_overlap_min"] = float(np.min(overlaps))
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fidelity", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="CrossEncoder folder")
    parser.add_argument("--pages", type=int, default=30, help="SciFact queries, one page each")
    parser.add_argument("--page-size", type=int, default=50, help="BM25 hits per page")
    parser.add_argument("--document-words", type=int, default=0,
                        help="words kept of each title + abstract; 0 keeps whole abstracts (cut at the max length)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--output", type=Path, default=None, help="also write the report as JSON here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the query order")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Score the pages with fp32 and int8 ONNX models and print the comparison."""
    from rerank_server.model import ModelSettings
    from rerank_server.onnx_backend import OnnxCrossEncoderModel

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    pages = Workload(document_words=args.document_words, seed=args.seed).pages(args.pages, args.page_size)
    settings = ModelSettings(model=str(args.model), device="cpu", threads=args.threads)
    scores: dict[str, list[np.ndarray]] = {}
    timing: dict[str, float] = {}
    for precision, quantize in (("fp32", None), ("int8", "int8")):
        model = OnnxCrossEncoderModel(settings, quantize=quantize)
        model.warm_up()
        started = time.perf_counter()
        scores[precision] = []
        for page in tqdm(pages, desc=precision, unit="page", leave=False, disable=args.no_progress):
            encoded = model.encode(page.query, page.documents, truncation="document_first")
            scores[precision].append(_score_sorted(model, encoded.pairs))
        timing[precision] = sum(page.size for page in pages) / (time.perf_counter() - started)

    summary = compare_pages(scores["fp32"], scores["int8"])
    summary.update({"fp32_pairs_per_s": timing["fp32"], "int8_pairs_per_s": timing["int8"],
                    "page_size": args.page_size, "document_words": args.document_words, "model": str(args.model)})
    rows = [[name, value] for name, value in summary.items() if isinstance(value, (int, float))]
    print(format_table(["int8 vs fp32", "value"], rows))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(summary, indent=1))
        print(f"report written: {args.output}")
    return 0


def _score_sorted(model: Any, pairs: Sequence[Any], batch_tokens: int = 4096) -> np.ndarray:
    """Score pairs in length-sorted batches of about ``batch_tokens`` padded tokens, as the batcher cuts them."""
    order = sorted(range(len(pairs)), key=lambda index: -pairs[index].length)
    scores = np.zeros(len(pairs), dtype=np.float32)
    start = 0
    while start < len(order):
        width = pairs[order[start]].length
        count = max(1, batch_tokens // width)
        chunk = order[start:start + count]
        scores[chunk] = model.score([pairs[index] for index in chunk])
        start += count
    return scores


if __name__ == "__main__":
    sys.exit(main())
