"""``rerank-train``: fine-tune a cross-encoder for the sidecar.

Examples::

    # Labelled pairs from a file (query, document, label in [0, 1]):
    rerank-train --base path/to/base --pairs pairs.tsv --output models/mine

    # Judged positives and BM25 hard negatives of SciFact train, from a real node:
    rerank-train --base path/to/base --beir data/scifact --negatives 4 --output models/scifact

    # Distillation: MSE on the blend of BM25 and the bi-encoder sidecar:
    rerank-train --base path/to/base --beir data/scifact --distill --output models/distilled

A run bounded by --max-steps or --max-minutes saves a checkpoint and a usable
model; --resume continues from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .pairs import Pair, PairFileError, mine_bm25_pairs, mine_teacher_pairs, read_pairs, write_pairs

logger = logging.getLogger("rerank_quality")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank-train",
        description="Fine-tune a one-label CrossEncoder on labelled pairs, BEIR positives with BM25 hard "
                    "negatives, or teacher scores (distillation). Defaults are the reference recipe.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--base", required=True, help="base model: Hugging Face hub id or local folder")
    parser.add_argument("--output", type=Path, required=True,
                        help="folder for the model, model card, training log and checkpoints")

    data = parser.add_argument_group("data (give --pairs or --beir)")
    data.add_argument("--pairs", type=Path, default=None,
                      help="CSV, TSV or JSONL with query, document, label (or sentence_0, sentence_1, label)")
    data.add_argument("--beir", type=Path, default=None, help="BEIR folder to build pairs from")
    data.add_argument("--split", default="train", help="split of --beir to build pairs from")
    data.add_argument("--queries", type=int, default=None, help="use only the first N queries of --split")
    data.add_argument("--negatives", type=int, default=3, help="BM25 hard negatives per query (label 0)")
    data.add_argument("--negative-depth", type=int, default=30,
                      help="BM25 hits per query from which the negatives are drawn")
    data.add_argument("--distill", action="store_true",
                      help="label the top --distill-depth BM25 hits with the teacher blend and train with MSE")
    data.add_argument("--distill-depth", type=int, default=30, help="BM25 hits per query labelled by the teacher")
    data.add_argument("--teacher-weight", type=float, default=0.7,
                      help="share of the teacher score in the label; the rest is the min-max normalized BM25 "
                           "score")
    data.add_argument("--teacher-target", default=None,
                      help="host:port of a running teacher sidecar; default: start one")
    data.add_argument("--teacher-model", default=None,
                      help="--model of the started teacher sidecar; default: the all-MiniLM-L6-v2 bi-encoder")
    data.add_argument("--max-pairs", type=int, default=None,
                      help="keep at most N pairs, drawn at random with --seed; default: all")
    data.add_argument("--save-pairs", type=Path, default=None, help="also write the pairs used to this JSONL file")

    recipe = parser.add_argument_group("hyper-parameters")
    recipe.add_argument("--loss", choices=("bce", "mse"), default=None,
                        help="bce: BinaryCrossEntropyLoss on logits; mse: MSELoss on sigmoid(logit); "
                             "default: mse with --distill, else bce")
    recipe.add_argument("--learning-rate", type=float, default=5e-5, help="peak learning rate (AdamW)")
    recipe.add_argument("--batch-size", type=int, default=16, help="pairs per training step")
    recipe.add_argument("--epochs", type=float, default=3.0, help="passes over the pairs")
    recipe.add_argument("--scheduler", default="linear", help="learning-rate schedule (transformers name)")
    recipe.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps")
    recipe.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    recipe.add_argument("--seed", type=int, default=42, help="seed of weights init, shuffling and sampling")
    recipe.add_argument("--max-length", type=int, default=512, help="max tokens of one pair")
    recipe.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    bounds = parser.add_argument_group("bounds, checkpoints and progress")
    bounds.add_argument("--max-steps", type=int, default=-1, help="stop after N steps; -1 runs every epoch")
    bounds.add_argument("--max-minutes", type=float, default=None, help="stop after N minutes of training")
    bounds.add_argument("--save-steps", type=int, default=500, help="checkpoint every N steps")
    bounds.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept")
    bounds.add_argument("--logging-steps", type=int, default=10, help="log the loss every N steps")
    bounds.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    bounds.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    evaluation = parser.add_argument_group("evaluation after training (for the model card)")
    evaluation.add_argument("--eval-dataset", type=Path, default=None,
                            help="BEIR folder to evaluate on; default: --beir when given")
    evaluation.add_argument("--eval-split", default="test", help="split to evaluate on")
    evaluation.add_argument("--eval-queries", type=int, default=None, help="first N queries only")
    evaluation.add_argument("--eval-k", type=int, default=100, help="BM25 hits reranked per query")
    evaluation.add_argument("--no-eval", action="store_true", help="skip the evaluation")

    services = parser.add_argument_group("services")
    services.add_argument("--opensearch-url", default=None,
                          help="URL of a running OpenSearch node; default: start one when needed")
    services.add_argument("--index", default=None, help="index name; default: rerank-eval-<dataset folder name>")
    services.add_argument("--log-level", default="INFO", help="logging level on stderr")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.pairs is None) == (args.beir is None):
        parser.error("give exactly one of --pairs FILE or --beir FOLDER")
    if args.distill and args.beir is None:
        parser.error("--distill needs --beir: the teacher labels BM25 candidates of a BEIR split")
    if not 0.0 <= args.teacher_weight <= 1.0:
        parser.error(f"--teacher-weight {args.teacher_weight} is invalid; expected a number in [0, 1]")
    if args.loss is None:
        args.loss = "mse" if args.distill else "bce"
    if args.eval_dataset is None and args.beir is not None:
        args.eval_dataset = args.beir
    if args.eval_dataset is not None and args.beir is not None and args.eval_split == args.split \
            and args.eval_dataset.resolve() == args.beir.resolve():
        logger.warning("evaluating on the training split %s; the figures will be optimistic", args.split)


def gather_pairs(args: argparse.Namespace, stack: ExitStack, opensearch: Any) -> tuple[list[Pair], dict[str, Any]]:
    """Read or mine the training pairs; return them with the data description for the card."""
    from rerank_client import RerankClient

    from .dataset import load_split
    from .services import ensure_index, sidecar_target

    progress = not args.no_progress
    if args.pairs is not None:
        pairs = read_pairs(args.pairs)
        data: dict[str, Any] = {"source": f"pair file `{args.pairs.name}`"}
    else:
        split = load_split(args.beir, args.split, limit=args.queries)
        index = args.index or f"rerank-eval-{split.name}"
        ensure_index(opensearch, index, split)
        data = {"source": f"BEIR `{split.name}` split `{split.split}`", "queries": len(split.queries)}
        if args.distill:
            target = stack.enter_context(sidecar_target(args.teacher_target, model=args.teacher_model))
            teacher = stack.enter_context(RerankClient(target, timeout=120.0))
            pairs = mine_teacher_pairs(opensearch, index, split, teacher, depth=args.distill_depth,
                                       weight=args.teacher_weight, progress=progress)
            data["labels"] = (f"teacher blend: {args.teacher_weight:g} x min-max teacher score + "
                              f"{1 - args.teacher_weight:g} x min-max BM25 score, top {args.distill_depth} "
                              f"BM25 hits per query; teacher `{args.teacher_model or args.teacher_target or 'all-MiniLM-L6-v2 bi-encoder'}`")
        else:
            pairs = mine_bm25_pairs(opensearch, index, split, negatives=args.negatives, depth=args.negative_depth,
                                    seed=args.seed, progress=progress)
            data["labels"] = (f"judged positives (1) and {args.negatives} BM25 hard negatives (0) per query "
                              f"from the top {args.negative_depth} hits")
    if args.max_pairs is not None and len(pairs) > args.max_pairs:
        import random

        pairs = random.Random(args.seed).sample(pairs, args.max_pairs)
    data["pairs"] = len(pairs)
    data["mean label"] = round(sum(pair.label for pair in pairs) / max(1, len(pairs)), 4)
    if args.save_pairs is not None:
        write_pairs(args.save_pairs, pairs)
    return pairs, data


def evaluate_trained(model: Any, args: argparse.Namespace, opensearch: Any) -> dict[str, Any]:
    """Rerank BM25 hits of the evaluation split in-process with the trained model; compare with BM25."""
    from .dataset import document_text, load_split
    from .evaluate import collect_candidates, compare_systems
    from .services import ensure_index

    split = load_split(args.eval_dataset, args.eval_split, limit=args.eval_queries)
    index = args.index or f"rerank-eval-{split.name}"
    ensure_index(opensearch, index, split)
    candidates, _ = collect_candidates(opensearch, index, split, None, k=args.eval_k, depth=max(args.eval_k, 100),
                                       progress=not args.no_progress, description="BM25 for evaluation")
    documents = split.documents_by_id
    queries = {query.query_id: query.text for query in split.queries}
    for entry in candidates:
        top = entry.doc_ids[: args.eval_k]
        if top:
            scores = model.predict([(queries[entry.query_id], document_text(documents[doc_id])) for doc_id in top],
                                   batch_size=32, show_progress_bar=False)
            entry.rerank = [float(score) for score in scores]
    systems = compare_systems(split, candidates, None)
    return {"dataset": split.name, "split": split.split, "queries": len(split.queries), "k": args.eval_k,
            "systems": {name: {key: round(value, 4) for key, value in values.items()}
                        for name, values in systems.items()}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from .card import render_card
    from .evaluate import hardware_description
    from .services import opensearch_client
    from .train import TrainSettings, train

    settings = TrainSettings(
        base=args.base, output=args.output, loss=args.loss, learning_rate=args.learning_rate,
        batch_size=args.batch_size, epochs=args.epochs, scheduler=args.scheduler, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, seed=args.seed, max_length=args.max_length, max_steps=args.max_steps,
        max_minutes=args.max_minutes, save_steps=args.save_steps, save_total_limit=args.save_total_limit,
        logging_steps=args.logging_steps, device=args.device, progress=not args.no_progress,
    )
    needs_opensearch = args.beir is not None or (args.eval_dataset is not None and not args.no_eval)
    with ExitStack() as stack:
        opensearch = stack.enter_context(opensearch_client(args.opensearch_url)) if needs_opensearch else None
        with ExitStack() as teacher_stack:
            pairs, data = gather_pairs(args, teacher_stack, opensearch)
        # The teacher sidecar, if one was started, has stopped here, so training gets its CPU.
        args.output.mkdir(parents=True, exist_ok=True)
        logger.info("training pairs=%d loss=%s base=%s output=%s", len(pairs), settings.loss, settings.base,
                    settings.output)
        model, outcome = train(settings, pairs, resume=args.resume)
        evaluation = None
        if args.eval_dataset is not None and not args.no_eval:
            evaluation = evaluate_trained(model, args, opensearch)
    hyper_parameters = settings.hyper_parameters()
    card = render_card(settings=hyper_parameters, data=data, outcome=outcome, evaluation=evaluation,
                       hardware=hardware_description())
    (args.output / "README.md").write_text(card, encoding="utf-8")
    summary = {"data": data, "hyper_parameters": hyper_parameters, "steps": outcome.steps,
               "planned_steps": outcome.planned_steps, "stopped_by": outcome.stopped_by,
               "seconds": outcome.seconds, "evaluation": evaluation}
    (args.output / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rerank-train``; return the exit status (0, or 1 when data, a service or training failed)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stderr)
    check_args(parser, args)
    for name in ("opensearch", "urllib3", "transformers", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from opensearchpy.exceptions import OpenSearchException

    from rerank_client import RerankError
    from rerank_harness.opensearch import OpenSearchNodeError
    from rerank_harness.sidecar import SidecarError

    try:
        summary = run(args)
    except (OSError, ValueError, PairFileError, OpenSearchException, OpenSearchNodeError, SidecarError,
            RerankError) as error:
        print(f"rerank-train: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
