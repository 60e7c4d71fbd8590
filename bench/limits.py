"""The machine's limit: hardware facts, the measured GEMM peak and FLOPs per pair.

FLOPs of one (query, document) pair of ``T`` tokens through a BERT encoder with
``L`` layers of width ``H``::

    FLOPs(pair) = 2 * P * T + 4 * L * H * T**2

``P`` counts the weights of the encoder layers only: embeddings are table
lookups, and the pooler and head run once per pair, not once per token. The
first term is every weight used in one multiply-add per token; the second is
the attention scores (Q K^T) and their weighted sum (A V). Padding is not
counted, so the limit is for the real tokens of the workload.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

_INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")
_VERSIONED_PACKAGES = ("torch", "onnxruntime", "onnx", "transformers", "sentence-transformers", "tokenizers",
                       "numpy", "grpcio")


@dataclass(frozen=True)
class ModelShape:
    """What the FLOPs formula needs of a model."""

    layers: int
    hidden_size: int
    encoder_parameters: int

    def pair_flops(self, tokens: int) -> float:
        return 2.0 * self.encoder_parameters * tokens + 4.0 * self.layers * self.hidden_size * tokens**2


def model_shape(model: Any) -> ModelShape:
    """Read the shape of a Hugging Face BERT-like model (``CrossEncoder.model``)."""
    encoder = getattr(getattr(model, "base_model", model), "encoder", None)
    if encoder is None:
        raise ValueError(f"{type(model).__name__} has no encoder module; the FLOPs formula covers BERT-like models")
    parameters = sum(parameter.numel() for parameter in encoder.parameters())
    return ModelShape(layers=int(model.config.num_hidden_layers), hidden_size=int(model.config.hidden_size),
                      encoder_parameters=int(parameters))


def hardware() -> dict[str, object]:
    """Return the CPU model, CPU count and the SIMD flags that matter for GEMM speed."""
    model_name = platform.processor() or "unknown"
    flags: set[str] = set()
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        output = ""
    for line in output.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "Model name":
            model_name = value.strip()
        elif name.strip() == "Flags":
            flags = set(value.split())
    if not flags and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            match = re.search(r"^flags\s*:\s*(.*)$", cpuinfo.read(), re.MULTILINE)
        flags = set(match.group(1).split()) if match else set()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": model_name,
        "cpus": cpus,
        "flags": {flag: flag in flags for flag in _INTERESTING_FLAGS},
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict[str, str]:
    """Return the Python version and the versions of the packages on the serving path."""
    found = {"python": platform.python_version()}
    for package in _VERSIONED_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def measure_gemm_peak(*, threads: int, seconds: float = 1.0, sizes: tuple[int, ...] = (1024, 2048)) -> dict[str, Any]:
    """Measure fp32 GEMM FLOP/s with numpy and torch, and int8 with ``torch._int_mm`` where it exists.

    Each measurement multiplies two square matrices for about ``seconds`` and
    keeps the fastest single call. ``peak_fp32`` is the best fp32 figure.
    """
    import torch

    torch.set_num_threads(threads)
    results: dict[str, Any] = {"threads": threads, "sizes": list(sizes)}
    rng = np.random.default_rng(0)
    best_numpy = best_torch = best_int8 = 0.0
    for size in sizes:
        left = rng.standard_normal((size, size), dtype=np.float32)
        right = rng.standard_normal((size, size), dtype=np.float32)
        operations = 2.0 * size**3
        best_numpy = max(best_numpy, operations / _fastest(lambda: left @ right, seconds))
        left_tensor, right_tensor = torch.from_numpy(left), torch.from_numpy(right)
        best_torch = max(best_torch, operations / _fastest(lambda: left_tensor @ right_tensor, seconds))
        try:
            left_int8 = torch.randint(-128, 127, (size, size), dtype=torch.int8)
            right_int8 = torch.randint(-128, 127, (size, size), dtype=torch.int8)
            best_int8 = max(best_int8, operations / _fastest(lambda: torch._int_mm(left_int8, right_int8), seconds))
        except (RuntimeError, AttributeError, NotImplementedError):
            pass
    results["numpy_fp32_gflops"] = round(best_numpy / 1e9, 1)
    results["torch_fp32_gflops"] = round(best_torch / 1e9, 1)
    results["torch_int8_gops"] = round(best_int8 / 1e9, 1) if best_int8 else None
    results["peak_fp32_gflops"] = max(results["numpy_fp32_gflops"], results["torch_fp32_gflops"])
    return results


def _fastest(operation: Any, seconds: float) -> float:
    """Run ``operation`` once to warm up, then repeatedly for ``seconds`` (at least 3 times); return the min time."""
    operation()
    best = float("inf")
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < 3 or (time.perf_counter() < deadline and runs < 10_000):
        started = time.perf_counter()
        operation()
        best = min(best, time.perf_counter() - started)
        runs += 1
    return best
