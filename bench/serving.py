"""Serving benchmark: GEMM peak, in-process baseline, the real sidecar per backend, infinity-emb.

One run, in this order, on the same SciFact pages (``bench.workload``):

1. Hardware, versions and the fp32 GEMM peak (``bench.limits``).
2. Baseline: sentence-transformers ``CrossEncoder.predict`` with its defaults,
   in this process, one page at a time.
3. Per backend: the in-process engine (the server's model and batcher without
   gRPC) on 50-document pages. Then a real ``rerank-server`` process
   (``SidecarProcess``), timed from start to SERVING. ``RerankClient`` threads
   measure it for every page size and client count and on a mixed workload,
   and its scores are compared with the baseline's.
4. Optionally infinity-emb serving the same model folder (``--infinity-venv``).

It prints Markdown tables and the target verdicts, writes the full result as
JSON and draws latency against page size. Run from the repository root::

    python -m bench.serving --plot docs/latency.png
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import limits, report
from .infinity import InfinityError, InfinityProcess, find_executable
from .load import CellResult, Sender, run_closed_loop
from .workload import Page, Workload

logger = logging.getLogger("bench.serving")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_MODEL_DIR = RESULTS_DIR / "minilm-l6-h384"
MODEL_DESCRIPTION = "MiniLM-L6-H384 cross-encoder shape"
ENGINE_PAGE_SIZE = 50


def build_parser() -> argparse.ArgumentParser:
    from rerank_server.config import ServerConfig

    server = ServerConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help=f"CrossEncoder folder; default: all-MiniLM-L6-v2's body with a new one-label head, "
                             f"written once to {DEFAULT_MODEL_DIR}")
    parser.add_argument("--backends", default="torch,onnx", help="comma-separated sidecar backends to measure")
    parser.add_argument("--page-sizes", default="10,50,100", help="documents per page, comma-separated")
    parser.add_argument("--clients", default="1,4,16", help="concurrent client threads, comma-separated")
    parser.add_argument("--min-pages", type=int, default=8, help="min pages per (page size, clients) cell")
    parser.add_argument("--pages-per-client", type=int, default=2,
                        help="pages each client sends in a cell when that exceeds --min-pages; each client's "
                             "first page is left out of the percentiles")
    parser.add_argument("--mixed-pages", type=int, default=24, help="pages of the mixed workload (all page sizes)")
    parser.add_argument("--mixed-clients", type=int, default=4, help="clients sending the mixed workload")
    parser.add_argument("--max-cell-seconds", type=float, default=90.0,
                        help="no new page starts in a cell after this many seconds")
    parser.add_argument("--document-words", type=int, default=24,
                        help="words kept of each title + abstract (0 keeps whole abstracts, about 330 tokens)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads everywhere; default: all CPUs")
    parser.add_argument("--batch-size", type=int, default=server.batch_size, help="server --batch-size")
    parser.add_argument("--max-batch-tokens", type=int, default=server.max_batch_tokens,
                        help="server --max-batch-tokens")
    parser.add_argument("--max-queue-delay-ms", type=float, default=server.max_queue_delay_ms,
                        help="server --max-queue-delay-ms")
    parser.add_argument("--infinity-venv", type=Path, default=None,
                        help="virtual environment with infinity-emb 0.0.78; omitted: the stage is skipped")
    parser.add_argument("--gemm-seconds", type=float, default=1.0, help="time per GEMM peak measurement")
    parser.add_argument("--gemm-sizes", default="1024,2048", help="square GEMM sizes for the peak")
    parser.add_argument("--output", type=Path, default=None, help="JSON result; default: bench/results/serving-<time>.json")
    parser.add_argument("--plot", type=Path, default=None, help="PNG plot; default: beside the JSON result")
    parser.add_argument("--seed", type=int, default=0, help="seed of the query order and the page-size mix")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and return 0. A failing stage raises, except infinity-emb, which is skipped with its reason."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in ("transformers", "sentence_transformers", "httpx", "huggingface_hub", "rerank_server"):
        logging.getLogger(name).setLevel(logging.WARNING)
    threads = args.threads or limits.hardware()["cpus"]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS_DIR / f"serving-{stamp}.json"
    plot = args.plot or output.with_suffix(".png")
    settings = _settings(args, threads)
    model_dir = _model_dir(args.model)

    result: dict[str, Any] = {"command": ["python", "-m", "bench.serving", *(argv if argv is not None else sys.argv[1:])],
                              "started_utc": stamp, "settings": settings, "hardware": limits.hardware(),
                              "versions": limits.versions()}
    print(f"hardware: {result['hardware']}\nversions: {result['versions']}", flush=True)
    result["gemm"] = limits.measure_gemm_peak(threads=threads, seconds=args.gemm_seconds,
                                              sizes=tuple(_numbers(args.gemm_sizes)))
    print(f"GEMM peak: {result['gemm']}", flush=True)

    workload = Workload(document_words=args.document_words, seed=args.seed)
    plan = _plan_pages(workload, settings)
    baseline = _Baseline(model_dir, threads)
    result["model"] = {"path": str(model_dir), "description": MODEL_DESCRIPTION if args.model is None else model_dir.name,
                       **baseline.shape_dict()}
    result["workload"] = baseline.describe(plan["mixed"], args.document_words)
    result["limit"] = _limit(result)
    print(f"workload: {result['workload']}\nlimit: {result['limit']}", flush=True)

    result["baseline"] = _run_baseline(baseline, plan, settings, progress=not args.no_progress)
    result["backends"] = {}
    for backend in settings["backends"]:
        result["backends"][backend] = _run_backend(backend, model_dir, plan, settings,
                                                   result["baseline"]["check_scores"], progress=not args.no_progress)
    result["infinity"] = _run_infinity(args.infinity_venv, model_dir, plan, settings,
                                       result["baseline"]["check_scores"], progress=not args.no_progress)
    result["targets"] = report.evaluate_targets(result)
    result["finished_utc"] = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result["hardware"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    _print_tables(result)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1))
    print(f"result written: {output}")
    skipped = report.plot_latency(result, plot)
    print(f"plot skipped: {skipped}" if skipped else f"plot written: {plot}")
    return 0


# -- set-up --------------------------------------------------------------------------------


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _settings(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    return {
        "backends": [part.strip() for part in args.backends.split(",") if part.strip()],
        "page_sizes": _numbers(args.page_sizes), "clients": _numbers(args.clients),
        "min_pages": args.min_pages, "pages_per_client": args.pages_per_client,
        "mixed_pages": args.mixed_pages, "mixed_clients": args.mixed_clients,
        "max_cell_seconds": args.max_cell_seconds, "document_words": args.document_words, "threads": threads,
        "batch_size": args.batch_size, "max_batch_tokens": args.max_batch_tokens,
        "max_queue_delay_ms": args.max_queue_delay_ms, "seed": args.seed,
    }


def _model_dir(requested: Path | None) -> Path:
    if requested is not None:
        return requested
    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        from rerank_harness.models import export_minilm_cross_encoder

        print(f"writing the benchmark model to {DEFAULT_MODEL_DIR}", flush=True)
        export_minilm_cross_encoder(DEFAULT_MODEL_DIR)
    return DEFAULT_MODEL_DIR


def _plan_pages(workload: Workload, settings: dict[str, Any]) -> dict[str, Any]:
    """Build every page up front, so each system scores exactly the same texts."""
    cells = {}
    for size in settings["page_sizes"]:
        for clients in settings["clients"]:
            count = max(settings["min_pages"], clients * settings["pages_per_client"])
            cells[(size, clients)] = workload.pages(count, size)
    mixed = workload.mixed(settings["mixed_pages"], settings["page_sizes"])
    return {"cells": cells, "mixed": mixed, "check": workload.pages(3, min(settings["page_sizes"]))}


def _limit(result: dict[str, Any]) -> dict[str, float]:
    """Return the GEMM-bound pairs/s for the mixed workload's mean FLOPs per pair."""
    flops = result["workload"]["mean_pair_gflop"] * 1e9
    peak = result["gemm"]["peak_fp32_gflops"] * 1e9
    return {"peak_fp32_gflops": peak / 1e9, "mean_pair_gflop": flops / 1e9, "pairs_per_s": peak / flops}


class _Baseline:
    """sentence-transformers ``CrossEncoder.predict`` with its defaults (batches of 32), in this process."""

    def __init__(self, model_dir: Path, threads: int) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(threads)
        self.cross_encoder = CrossEncoder(str(model_dir), device="cpu")
        self.shape = limits.model_shape(self.cross_encoder.model)
        self._identity = torch.nn.Identity()

    def shape_dict(self) -> dict[str, int]:
        return {"layers": self.shape.layers, "hidden_size": self.shape.hidden_size,
                "encoder_parameters": self.shape.encoder_parameters}

    def scores(self, page: Page) -> np.ndarray:
        # Identity keeps raw logits whatever activation the model folder saved, as the sidecar returns them.
        return np.asarray(self.cross_encoder.predict([(page.query, text) for text in page.documents],
                                                     show_progress_bar=False, activation_fn=self._identity))

    def describe(self, pages: Sequence[Page], document_words: int) -> dict[str, Any]:
        """Return token and FLOPs figures of ``pages`` as the model's tokenizer cuts them."""
        tokenizer = self.cross_encoder.tokenizer
        # sentence-transformers 6.3 deprecates max_length in favour of max_seq_length.
        max_length = getattr(self.cross_encoder, "max_seq_length", None) or self.cross_encoder.max_length
        lengths = []
        for page in pages:
            encoded = tokenizer([page.query] * page.size, page.documents, truncation="longest_first",
                                max_length=max_length)
            lengths.extend(len(ids) for ids in encoded["input_ids"])
        flops = [self.shape.pair_flops(length) for length in lengths]
        return {"source": "SciFact queries and their BM25 top hits (title + abstract)",
                "document_words": document_words, "mixed_pages": len(pages), "mixed_pairs": len(lengths),
                "mean_pair_tokens": float(np.mean(lengths)), "p90_pair_tokens": float(np.percentile(lengths, 90)),
                "mean_pair_gflop": float(np.mean(flops) / 1e9)}


# -- stages --------------------------------------------------------------------------------


def _cells(system: str, make_sender: Callable[[], Sender], plan: dict[str, Any], settings: dict[str, Any],
           *, client_counts: Sequence[int], page_sizes: Sequence[int], progress: bool) -> list[dict[str, Any]]:
    cells = []
    for size in page_sizes:
        for clients in client_counts:
            cell = run_closed_loop(make_sender, plan["cells"][(size, clients)], system=system, page_size=size,
                                   clients=clients, max_seconds=settings["max_cell_seconds"], progress=progress)
            _report_cell(cell)
            cells.append(cell.to_dict())
    return cells


def _mixed(system: str, make_sender: Callable[[], Sender], plan: dict[str, Any], clients: int,
           settings: dict[str, Any], progress: bool) -> dict[str, Any]:
    cell = run_closed_loop(make_sender, plan["mixed"], system=system, page_size="mixed", clients=clients,
                           max_seconds=settings["max_cell_seconds"] * 2, progress=progress)
    _report_cell(cell)
    return cell.to_dict()


def _report_cell(cell: CellResult) -> None:
    print(f"  {cell.system:<16} page={cell.page_size!s:<5} clients={cell.clients:<3} pages={cell.pages:<4} "
          f"p50={cell.percentile_ms(50) or 0:9.1f} ms p99={cell.percentile_ms(99) or 0:9.1f} ms "
          f"pairs/s={cell.pairs_per_s:8.1f} errors={cell.errors}", flush=True)
    if cell.first_error:
        print(f"  first error: {cell.first_error}", flush=True)


def _run_baseline(baseline: _Baseline, plan: dict[str, Any], settings: dict[str, Any], *,
                  progress: bool) -> dict[str, Any]:
    print("stage: baseline, CrossEncoder.predict in process", flush=True)
    baseline.scores(plan["check"][0])  # warm-up
    cells = _cells("baseline", lambda: baseline.scores, plan, settings, client_counts=[1],
                   page_sizes=settings["page_sizes"], progress=progress)
    mixed = _mixed("baseline", lambda: baseline.scores, plan, 1, settings, progress)
    return {"cells": cells, "mixed": mixed, "check_scores": [baseline.scores(page).tolist() for page in plan["check"]]}


def _server_args(settings: dict[str, Any], backend: str) -> list[str]:
    return ["--backend", backend, "--device", "cpu", "--threads", str(settings["threads"]),
            "--batch-size", str(settings["batch_size"]), "--max-batch-tokens", str(settings["max_batch_tokens"]),
            "--max-queue-delay-ms", str(settings["max_queue_delay_ms"])]


def _run_engine(backend: str, model_dir: Path, plan: dict[str, Any], settings: dict[str, Any],
                progress: bool) -> dict[str, Any]:
    """Measure the server's engine without gRPC: same model, batcher and settings, called directly."""
    from rerank_server.config import parse_config
    from rerank_server.engine import RerankOptions
    from rerank_server.main import create_server

    config = parse_config(["--model", str(model_dir), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
                           *_server_args(settings, backend)], environ={})
    started = time.perf_counter()
    running = create_server(config)
    try:
        engine = running.load()
        load_s = time.perf_counter() - started
        options = RerankOptions()

        def make_sender() -> Sender:
            return lambda page: [item.score for item in sorted(engine.rerank(page.query, page.documents,
                                                                             options).ranked,
                                                               key=lambda item: item.index)]

        cell = run_closed_loop(make_sender, plan["cells"][(ENGINE_PAGE_SIZE, 1)], system=f"engine {backend}",
                               page_size=ENGINE_PAGE_SIZE, clients=1, max_seconds=settings["max_cell_seconds"],
                               progress=progress)
        _report_cell(cell)
        report_figures = getattr(engine.model, "export_report", None)
    finally:
        running.stop(grace=0)
    return {**cell.to_dict(), "load_s": round(load_s, 3), "export": report_figures}


def _run_backend(backend: str, model_dir: Path, plan: dict[str, Any], settings: dict[str, Any],
                 expected_scores: list[list[float]], *, progress: bool) -> dict[str, Any]:
    from rerank_client import RerankClient
    from rerank_harness.sidecar import SidecarProcess

    print(f"stage: sidecar backend={backend}", flush=True)
    data: dict[str, Any] = {}
    if ENGINE_PAGE_SIZE in settings["page_sizes"] and 1 in settings["clients"]:
        # Runs first: for onnx it also writes the export, so the process below starts from the cache.
        data["engine_50"] = _run_engine(backend, model_dir, plan, settings, progress)

    sidecar = SidecarProcess(model_dir, args=_server_args(settings, backend), startup_timeout_s=300)
    started = time.perf_counter()
    sidecar.start()
    data["startup_s"] = round(time.perf_counter() - started, 3)
    print(f"  started to SERVING in {data['startup_s']:.2f} s", flush=True)
    try:
        with RerankClient(sidecar.target, timeout=600) as client:
            def send(page: Page) -> list[float]:
                results = client.rerank(page.query, page.documents)
                scores = [0.0] * page.size
                for item in results:
                    scores[item.index] = float(item.score)
                return scores

            send(plan["check"][0])  # warm-up over gRPC
            data["cells"] = _cells(f"sidecar {backend}", lambda: send, plan, settings,
                                   client_counts=settings["clients"], page_sizes=settings["page_sizes"],
                                   progress=progress)
            data["mixed"] = _mixed(f"sidecar {backend}", lambda: send, plan, settings["mixed_clients"], settings,
                                   progress)
            data["max_abs_diff_vs_baseline"] = _max_difference(send, plan["check"], expected_scores)
    finally:
        sidecar.stop()
    print(f"  max abs score difference vs CrossEncoder.predict: {data['max_abs_diff_vs_baseline']:.2e}", flush=True)
    return data


def _max_difference(send: Sender, pages: Sequence[Page], expected_scores: list[list[float]]) -> float:
    """Return the max absolute difference between ``send``'s scores and the baseline's on ``pages``."""
    return float(max(np.max(np.abs(np.asarray(send(page)) - np.asarray(expected)))
                     for page, expected in zip(pages, expected_scores)))


def _run_infinity(venv: Path | None, model_dir: Path, plan: dict[str, Any], settings: dict[str, Any],
                  expected_scores: list[list[float]], *, progress: bool) -> dict[str, Any]:
    """Measure infinity-emb on 50-document pages at 1 and 4 clients; return ``skipped`` with the reason on failure."""
    print("stage: infinity-emb", flush=True)
    if venv is None:
        reason = "no --infinity-venv given"
        print(f"  skipped: {reason}", flush=True)
        return {"skipped": reason}
    process = None
    try:
        process = InfinityProcess(find_executable(venv), model_dir).start()
        print(f"  started to healthy in {process.startup_s:.2f} s", flush=True)
        process.make_sender()(plan["check"][0])  # warm-up
        client_counts = [count for count in (1, 4) if count in settings["clients"]]
        sizes = [size for size in (ENGINE_PAGE_SIZE,) if size in settings["page_sizes"]]
        cells = _cells("infinity-emb", process.make_sender, plan, settings, client_counts=client_counts,
                       page_sizes=sizes, progress=progress)
        return {"cells": cells, "startup_s": round(process.startup_s or 0.0, 3),
                "max_abs_diff_vs_baseline": _max_difference(process.make_sender(), plan["check"], expected_scores)}
    except (InfinityError, OSError) as error:
        print(f"  skipped: {error}", flush=True)
        return {"skipped": str(error)}
    finally:
        if process is not None:
            process.stop()


def _print_tables(result: dict[str, Any]) -> None:
    print("\n## Latency per page (client side, ms) and pages/s\n")
    print(report.latency_table(result))
    print("\n## Mixed-workload throughput\n")
    print(report.throughput_table(result))
    print("\n## Targets\n")
    print(report.targets_table(result["targets"]))
    print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
