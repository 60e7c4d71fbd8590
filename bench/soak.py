"""Soak test: hold a steady Rerank load on a real server process and watch its memory.

Starts ``rerank-server`` on 127.0.0.1, runs closed-loop clients against it for a
set time, samples the server's RSS, and stops it with SIGTERM at the end.
Reports RSS at start, after warm-up and at the end, requests by status code,
latency percentiles and the exit status, as text and as JSON.

Example (30 minutes, MiniLM-L6-sized model, two clients)::

    python bench/soak.py --duration-s 1800 --concurrency 2

Every loop is bounded by ``--duration-s`` and ``--max-requests``; all traffic goes
to the server this script starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from rerank_client._proto.rerank.v1 import rerank_pb2, rerank_pb2_grpc
from rerank_harness.sidecar import SidecarProcess

WORDS = ("kettle scale vinegar citric acid boil rinse water mineral museum roof repair library winter hours "
         "coffee maker limescale hard deposit heating element descaler filter spout lid handle").split()
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Sample:
    elapsed_s: float
    rss_kib: int
    requests: int


@dataclass
class SoakReport:
    """Measurements of one soak run, written as JSON next to the text summary."""

    hardware: dict[str, object]
    settings: dict[str, object]
    duration_s: float = 0.0
    requests: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    documents: int = 0
    latency_ms_p50: float = 0.0
    latency_ms_p99: float = 0.0
    latency_ms_max: float = 0.0
    rss_kib_start: int = 0
    rss_kib_after_warmup: int = 0
    rss_kib_end: int = 0
    rss_kib_peak: int = 0
    rss_growth_after_warmup_pct: float = 0.0
    exit_status: int | None = None
    samples: list[Sample] = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    model = args.model or _build_model(args.tiny)
    server_args = ["--threads", str(args.server_threads), "--metrics-port", "0", *shlex.split(args.server_args)]
    report = SoakReport(hardware=_hardware(), settings={**vars(args), "model": str(model),
                                                        "server_flags": server_args})
    server_env = dict(item.split("=", 1) for item in args.server_env)
    server = SidecarProcess(model, args=server_args, env=server_env, startup_timeout_s=300).start()
    try:
        run_load(server, args, report)
    finally:
        report.exit_status = server.stop(timeout=120)
    _write(report, args.output)
    return 0 if report.errors == 0 and report.exit_status == 0 else 1


def run_load(server: SidecarProcess, args: argparse.Namespace, report: SoakReport) -> None:
    """Run the clients until the duration or the request cap is reached, sampling RSS meanwhile."""
    assert server.pid is not None
    report.rss_kib_start = _rss_kib(server.pid)
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    started = time.monotonic()
    deadline = started + args.duration_s

    def client(number: int) -> None:
        rng = random.Random(args.seed + number)
        with grpc.insecure_channel(server.target) as channel:
            stub = rerank_pb2_grpc.RerankerStub(channel)
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    if sum(codes.values()) >= args.max_requests:
                        return
                item = _request(rng, args.max_documents)
                sent = time.perf_counter()
                try:
                    stub.Rerank(item, timeout=args.timeout_s)
                    code = "OK"
                except grpc.RpcError as error:
                    code = error.code().name
                elapsed = time.perf_counter() - sent
                with lock:
                    codes[code] += 1
                    latencies.append(elapsed)
                    report.documents += len(item.documents)
                if args.think_ms:
                    stop.wait(args.think_ms / 1000)

    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(args.concurrency)]
    for thread in threads:
        thread.start()
    warmup_end = started + min(args.warmup_s, args.duration_s / 2)
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        time.sleep(max(0.0, min(args.sample_s, deadline - time.monotonic())))
        with lock:
            count = sum(codes.values())
        sample = Sample(round(time.monotonic() - started, 1), _rss_kib(server.pid), count)
        report.samples.append(sample)
        if not report.rss_kib_after_warmup and time.monotonic() >= warmup_end:
            report.rss_kib_after_warmup = sample.rss_kib
        print(f"t={sample.elapsed_s:7.1f}s requests={count} rss_mib={sample.rss_kib / 1024:.1f}", flush=True)
    stop.set()
    for thread in threads:
        thread.join(timeout=args.timeout_s)

    report.duration_s = round(time.monotonic() - started, 1)
    report.rss_kib_end = _rss_kib(server.pid)
    report.rss_kib_peak = _proc_status_kib(server.pid, "VmHWM")
    report.rss_kib_after_warmup = report.rss_kib_after_warmup or report.rss_kib_end
    report.rss_growth_after_warmup_pct = round(
        100.0 * (report.rss_kib_end - report.rss_kib_after_warmup) / report.rss_kib_after_warmup, 2)
    report.codes = dict(codes)
    report.requests = sum(codes.values())
    report.errors = report.requests - codes.get("OK", 0)
    if latencies:
        ordered = sorted(latencies)
        report.latency_ms_p50 = round(statistics.median(ordered) * 1000, 1)
        report.latency_ms_p99 = round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1)
        report.latency_ms_max = round(ordered[-1] * 1000, 1)


def _request(rng: random.Random, max_documents: int) -> rerank_pb2.RerankRequest:
    """Build a search-like request: a short query and 1 to ``max_documents`` documents of 10 to 300 words."""
    query = " ".join(rng.choices(WORDS, k=rng.randint(2, 8)))
    documents = [" ".join(rng.choices(WORDS, k=rng.randint(10, 300))) for _ in range(rng.randint(1, max_documents))]
    return rerank_pb2.RerankRequest(query=query, documents=[rerank_pb2.Document(text=text) for text in documents])


def _build_model(tiny: bool) -> Path:
    from rerank_harness.models import build_tiny_cross_encoder, export_minilm_cross_encoder

    folder = Path(tempfile.mkdtemp(prefix="rerank-soak-model-"))
    return build_tiny_cross_encoder(folder) if tiny else export_minilm_cross_encoder(folder)


def _rss_kib(pid: int) -> int:
    return _proc_status_kib(pid, "VmRSS")


def _proc_status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{name} missing from /proc/{pid}/status")


def _hardware() -> dict[str, object]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = _proc_status_meminfo("MemTotal")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_kib / 1024 / 1024, 1),
            "python": platform.python_version(), "system": platform.platform()}


def _proc_status_meminfo(name: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def _write(report: SoakReport, output: Path | None) -> None:
    summary = (
        f"soak: {report.duration_s:.0f} s, {report.requests} requests ({report.documents} documents), "
        f"errors {report.errors} {report.codes}\n"
        f"latency ms: p50 {report.latency_ms_p50} p99 {report.latency_ms_p99} max {report.latency_ms_max}\n"
        f"server RSS MiB: start {report.rss_kib_start / 1024:.1f}, after warm-up "
        f"{report.rss_kib_after_warmup / 1024:.1f}, end {report.rss_kib_end / 1024:.1f}, peak "
        f"{report.rss_kib_peak / 1024:.1f} (growth after warm-up {report.rss_growth_after_warmup_pct:+.2f}%)\n"
        f"server exit status {report.exit_status}; hardware {report.hardware['cpu']}, "
        f"{report.hardware['cores']} cores, {report.hardware['memory_gib']} GiB"
    )
    print(summary)
    if output is None:
        DEFAULT_RESULTS.mkdir(parents=True, exist_ok=True)
        output = DEFAULT_RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
    print(f"report written to {output}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=1800.0, help="length of the load phase in seconds")
    parser.add_argument("--warmup-s", type=float, default=120.0,
                        help="seconds after which the warm RSS is taken; at most half the duration")
    parser.add_argument("--concurrency", type=int, default=2, help="client threads, each one call at a time")
    parser.add_argument("--think-ms", type=float, default=20.0, help="pause of each client between its calls")
    parser.add_argument("--max-documents", type=int, default=40, help="max documents per request")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="stop after this many requests")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="deadline of each call")
    parser.add_argument("--sample-s", type=float, default=30.0, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=1, help="seed of the request generator")
    parser.add_argument("--model", type=Path, default=None,
                        help="CrossEncoder folder; default: a MiniLM-L6-sized model with a random head")
    parser.add_argument("--tiny", action="store_true", help="with no --model, use the tiny 2-layer test model")
    parser.add_argument("--server-threads", type=int, default=1, help="--threads of the server")
    parser.add_argument("--server-args", default="", help="more server flags, as one shell-quoted string")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable for the server; repeat for more")
    parser.add_argument("--output", type=Path, default=None, help="JSON report path; default bench/results/")
    args = parser.parse_args(argv)
    if args.duration_s <= 0 or args.concurrency < 1 or args.max_documents < 1:
        parser.error("--duration-s, --concurrency and --max-documents must be positive")
    for item in args.server_env:
        if "=" not in item:
            parser.error(f"--server-env {item!r} is invalid; expected NAME=VALUE")
    return args


if __name__ == "__main__":
    sys.exit(main())
