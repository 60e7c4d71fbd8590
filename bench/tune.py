"""Sweep the batching settings on the in-process engine and print latency and throughput per setting.

For each combination of ``--max-batch-tokens``, ``--batch-size`` and
``--max-queue-delay-ms`` it starts the server's engine in this process around
one model loaded once. There is no gRPC, so only batching differs. It measures
the p50 of 50-document pages sent one at a time, and the pairs/s and p99 of a
mixed workload sent by several clients. Run from the repository root::

    python -m bench.tune --backend onnx --max-batch-tokens 1024,2048,4096 --batch-size 32,64
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .load import Sender, run_closed_loop
from .report import format_table
from .serving import DEFAULT_MODEL_DIR, _model_dir
from .workload import Workload


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.tune", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help=f"CrossEncoder folder; default {DEFAULT_MODEL_DIR}")
    parser.add_argument("--backend", default="onnx", choices=("torch", "onnx"), help="server backend")
    parser.add_argument("--threads", type=int, default=None, help="inference threads; default: all CPUs")
    parser.add_argument("--max-batch-tokens", default="1024,2048,4096,8192", help="values to try, comma-separated")
    parser.add_argument("--batch-size", default="32,64,128", help="values to try, comma-separated")
    parser.add_argument("--max-queue-delay-ms", default="2", help="values to try, comma-separated")
    parser.add_argument("--single-pages", type=int, default=4, help="50-document pages sent one at a time")
    parser.add_argument("--mixed-pages", type=int, default=16, help="pages of the mixed workload")
    parser.add_argument("--mixed-clients", type=int, default=8, help="clients sending the mixed workload")
    parser.add_argument("--document-words", type=int, default=24, help="words kept of each title + abstract")
    parser.add_argument("--output", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep and print one row per setting."""
    from rerank_server.config import parse_config
    from rerank_server.engine import RerankOptions
    from rerank_server.loading import load_model
    from rerank_server.main import create_server

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    model_dir = _model_dir(args.model)
    base = ["--model", str(model_dir), "--backend", args.backend, "--device", "cpu", "--port", "0",
            "--metrics-port", "0", "--host", "127.0.0.1", *(["--threads", str(args.threads)] if args.threads else [])]
    model = load_model(parse_config(base, environ={}))
    model.warm_up()
    workload = Workload(document_words=args.document_words)
    single = workload.pages(args.single_pages, 50)
    mixed = workload.mixed(args.mixed_pages, [10, 50, 100])

    rows: list[dict[str, Any]] = []
    grid = itertools.product(_floats(args.max_batch_tokens), _floats(args.batch_size), _floats(args.max_queue_delay_ms))
    for tokens, pairs, delay in grid:
        config = parse_config([*base, "--max-batch-tokens", str(int(tokens)), "--batch-size", str(int(pairs)),
                               "--max-queue-delay-ms", str(delay), "--warmup", "false"], environ={})
        running = create_server(config)
        try:
            engine = running.load(model=model)

            def make_sender() -> Sender:
                return lambda page: [item.score for item in engine.rerank(page.query, page.documents,
                                                                          RerankOptions()).ranked]

            alone = run_closed_loop(make_sender, single, system="tune", page_size=50, clients=1, max_seconds=300,
                                    progress=not args.no_progress)
            loaded = run_closed_loop(make_sender, mixed, system="tune", page_size="mixed",
                                     clients=args.mixed_clients, max_seconds=600, progress=not args.no_progress)
        finally:
            running.stop(grace=0)
        rows.append({"max_batch_tokens": int(tokens), "batch_size": int(pairs), "max_queue_delay_ms": delay,
                     "p50_50doc_ms": alone.percentile_ms(50), "mixed_pairs_per_s": loaded.pairs_per_s,
                     "mixed_p50_ms": loaded.percentile_ms(50), "mixed_p99_ms": loaded.percentile_ms(99)})
        print(json.dumps(rows[-1]), flush=True)

    headers = list(rows[0]) if rows else []
    print(format_table(headers, [[row[name] for name in headers] for row in rows]))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"model": str(model_dir), "backend": args.backend, "rows": rows}, indent=1))
    return 0


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


if __name__ == "__main__":
    sys.exit(main())
