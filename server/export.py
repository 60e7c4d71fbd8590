"""Export a cross-encoder to ONNX, cache the files, and the ``rerank-onnx-export`` command.

Files of one model live in one folder named by an export key. The key hashes
the weights, the model config and the exporter versions, so a changed model or
a new torch gets a new export and an unchanged one is reused::

    <model folder>/onnx/<key>/model.onnx        fp32, checked against torch
    <model folder>/onnx/<key>/model-int8.onnx   dynamic int8, CPU only
    <model folder>/onnx/<key>/model-fp16.onnx   fp16, CUDA only
    <model folder>/onnx/<key>/export.json       versions and check figures

When the model folder is read-only, or the model is a hub id, the same layout
is used under ``$RERANK_ONNX_CACHE_DIR/<model name>/`` (default
``~/.cache/rerank-sidecar/onnx``).

Example::

    rerank-onnx-export --model ./ms-marco-MiniLM-L6-v2 --quantize int8
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
# Bump when the exported graph changes for the same weights, so old caches are not reused.
EXPORT_FORMAT_VERSION = 1
CACHE_DIR_ENV = "RERANK_ONNX_CACHE_DIR"
FP32_FILE = "model.onnx"
INT8_FILE = "model-int8.onnx"
FP16_FILE = "model-fp16.onnx"
METADATA_FILE = "export.json"
OUTPUT_NAME = "logits"
_VERSIONED_PACKAGES = ("torch", "transformers", "sentence-transformers", "tokenizers", "onnx", "onnxruntime")

# Architectures whose graphs ONNX Runtime's BERT fusions (attention, skip layer
# norm, embedding layer norm, bias GELU) understand; others run unfused.
_FUSABLE_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "electra", "camembert")


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return ``$RERANK_ONNX_CACHE_DIR``, else ``$XDG_CACHE_HOME/rerank-sidecar/onnx``, else under ``~/.cache``."""
    env = os.environ if environ is None else environ
    if value := env.get(CACHE_DIR_ENV):
        return Path(value).expanduser()
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "rerank-sidecar" / "onnx"


def export_root(model_name: str, cache_dir: Path | None = None) -> Path:
    """Pick the folder that contains the export folders of ``model_name``.

    A local model folder that the process may write gets an ``onnx`` folder of
    its own, so the export travels with the model. Anything else (a read-only
    folder, a hub id) uses ``cache_dir`` or :func:`default_cache_dir`.
    """
    folder = Path(model_name).expanduser()
    if cache_dir is None and folder.is_dir() and os.access(folder, os.W_OK):
        return folder / "onnx"
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "--", str(folder.resolve() if folder.is_dir() else model_name))
    return (cache_dir or default_cache_dir()) / safe_name.strip("-")


def export_key(model: Any, extra: Mapping[str, object]) -> str:
    """Hash the weights, the config and ``extra`` (versions, opset) into a 16-byte hex key.

    Hashing the loaded tensors and the config without its path, not the files,
    gives the same key for a moved folder or a hub copy of the same weights. It
    reads every weight once (an estimate: half a second for 90 MB on 2 cores).
    """
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        raw = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        digest.update(raw.tobytes())
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, value in sorted(extra.items()):
        digest.update(f"{name}={value}".encode())
    return digest.hexdigest()


def exporter_versions() -> dict[str, str]:
    """Return the versions that shape an exported graph or its check, for the key and ``export.json``.

    Read from package metadata, so a fast start does not import torch for them.
    """
    found = {"format": str(EXPORT_FORMAT_VERSION), "opset": str(ONNX_OPSET)}
    for package in _VERSIONED_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def folder_fingerprint(model_name: str) -> str | None:
    """Hash the names, sizes and modification times of a local model folder's files, plus the versions.

    Returns None for a hub id. Reading only file metadata costs microseconds,
    unlike :func:`export_key`, which reads every weight. A file replaced in
    place with the same size and modification time goes unnoticed.
    """
    folder = Path(model_name).expanduser()
    if not folder.is_dir():
        return None
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(folder.iterdir()):
        if path.is_file():
            status = path.stat()
            digest.update(f"{path.name}:{status.st_size}:{status.st_mtime_ns}\n".encode())
    for name, value in sorted(exporter_versions().items()):
        digest.update(f"{name}={value}\n".encode())
    return digest.hexdigest()


def find_by_fingerprint(root: Path, fingerprint: str) -> tuple[Path, dict[str, Any]] | None:
    """Return the export folder under ``root`` recorded with ``fingerprint``, and its metadata."""
    if not root.is_dir():
        return None
    for folder in sorted(root.iterdir()):
        metadata = read_metadata(folder) if folder.is_dir() else {}
        if metadata.get("fingerprint") == fingerprint and (folder / FP32_FILE).exists():
            return folder, metadata
    return None


def export_fp32(model: Any, folder: Path, sample: Mapping[str, np.ndarray]) -> dict[str, object]:
    """Export ``model`` (a Hugging Face sequence classifier) to ``folder/model.onnx``.

    The file is written in a temporary folder and moved into place, so a
    reader never sees a half-written file, and two processes exporting at once
    both end with a complete folder.

    Args:
        model: The torch module; it is left in eval mode.
        folder: Export folder; created when missing.
        sample: Example inputs with padding in at least one row and at least
            two rows, so the trace keeps the attention mask and no shape is
            baked in as a constant.

    Returns:
        Figures for ``export.json``: seconds and whether the graph was fused.
    """
    import torch

    started = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        names = list(sample)
        wrapper = _logits_only(model)
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(sample[name])) for name in names)
        dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
        dynamic_axes[OUTPUT_NAME] = {0: "batch"}
        # The eager attention graph is the pattern ONNX Runtime's attention fusion
        # matches; the SDPA graph exports correctly but runs unfused.
        with _quiet_exporter(), torch.no_grad(), _eager_attention(model):
            # The TorchScript exporter; the dynamo exporter needs onnxscript, which
            # the server extra does not install.
            torch.onnx.export(wrapper, tensors, str(staging / FP32_FILE), input_names=names,
                              output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
                              opset_version=ONNX_OPSET, dynamo=False)
        # torch 2.15's exporter leaves the module in training mode, which turns
        # dropout on for every later torch forward pass.
        model.eval()
        fused = _fuse(staging / FP32_FILE, model.config)
        _publish(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"export_seconds": round(time.perf_counter() - started, 3), "fused": fused}


def quantize_int8(folder: Path) -> Path:
    """Write ``model-int8.onnx`` from the fp32 file by dynamic quantization; return its path.

    Weights of MatMul and fused Attention nodes become signed int8 per tensor;
    activations are quantized to uint8 at run time from their observed range.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = folder / INT8_FILE
    if target.exists():
        return target
    handle, staging = tempfile.mkstemp(prefix=".int8-", suffix=".onnx", dir=folder)
    os.close(handle)
    try:
        # The quantizer logs its "consider pre-processing" advice to the root logger
        # at WARNING on every call. The fused contrib ops have no shape inference,
        # so the default float type is given for their outputs.
        with _quiet_exporter(logging.WARNING):
            quantize_dynamic(str(folder / FP32_FILE), staging, weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        os.replace(staging, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
    return target


def convert_fp16(folder: Path) -> Path:
    """Write ``model-fp16.onnx`` from the fp32 file, keeping int64 inputs and a float32 output."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    target = folder / FP16_FILE
    if target.exists():
        return target
    converted = convert_float_to_float16(onnx.load(str(folder / FP32_FILE)), keep_io_types=True)
    handle, staging = tempfile.mkstemp(prefix=".fp16-", suffix=".onnx", dir=folder)
    os.close(handle)
    try:
        onnx.save(converted, staging)
        os.replace(staging, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
    return target


def read_metadata(folder: Path) -> dict[str, Any]:
    path = folder / METADATA_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_metadata(folder: Path, metadata: Mapping[str, object]) -> None:
    """Write ``export.json`` atomically."""
    handle, staging = tempfile.mkstemp(prefix=".meta-", suffix=".json", dir=folder)
    with os.fdopen(handle, "w") as file:
        json.dump(metadata, file, indent=2, sort_keys=True)
    os.replace(staging, folder / METADATA_FILE)


def _logits_only(model: Any) -> Any:
    """Wrap a sequence classifier so the traced graph has one output, the logits."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            names = ("input_ids", "attention_mask", "token_type_ids")[: len(inputs)]
            return self.model(**dict(zip(names, inputs))).logits

    return LogitsOnly()


@contextlib.contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """Switch a transformers model to eager attention for the block, then back."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous in (None, "eager") or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def _fuse(path: Path, config: Any) -> bool:
    """Fuse BERT-family subgraphs in place; return False when the architecture or fusion fails.

    A failed fusion leaves the plain export, which ONNX Runtime still optimizes
    when it loads the session.
    """
    model_type = str(getattr(config, "model_type", ""))
    if model_type not in _FUSABLE_MODEL_TYPES:
        logger.info("onnx fusion skipped model_type=%s reason=unsupported architecture", model_type)
        return False
    from onnxruntime.transformers import optimizer

    try:
        with _quiet_exporter():
            fused = optimizer.optimize_model(str(path), model_type="bert",
                                             num_heads=int(config.num_attention_heads),
                                             hidden_size=int(config.hidden_size), opt_level=0)
            fused.save_model_to_file(str(path))
            statistics = fused.get_fused_operator_statistics()
    except Exception as error:  # noqa: BLE001 - the fusion scripts raise many types; the plain export still works
        logger.warning("onnx fusion failed, serving the plain export model_type=%s error=%s", model_type, error)
        return False
    logger.info("onnx graph fused operators=%s", {name: count for name, count in statistics.items() if count})
    return True


def _publish(staging: Path, folder: Path) -> None:
    """Move the staged export to ``folder``; keep the other one if a concurrent export got there first."""
    try:
        os.replace(staging, folder)
    except OSError:
        if not (folder / FP32_FILE).exists():
            raise
        logger.info("onnx export finished concurrently by another process; using folder=%s", folder)


@contextlib.contextmanager
def _quiet_exporter(level: int = logging.INFO) -> Iterator[None]:
    """Silence Python warnings and log records up to ``level`` while exporting or converting.

    The tracer warns about every traced branch, and the fusion scripts log
    through loggers named after their modules, not under one package name, so
    records are disabled process-wide while the block runs. Only loading runs
    then; the server is not yet serving.
    """
    previous = logging.root.manager.disable
    logging.disable(max(previous, level))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


# -- command -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank-onnx-export",
        description="Export a cross-encoder to ONNX once, check it against torch and cache it where "
                    "rerank-server --backend onnx looks for it. Exits 3 when the check fails.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="local CrossEncoder folder or Hugging Face hub id")
    parser.add_argument("--quantize", choices=("none", "int8"), default="none",
                        help="also write a dynamic int8 file (CPU only); see bench.fidelity for its ranking cost")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N to also write and check fp16")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"export cache outside the model folder [env {CACHE_DIR_ENV}]; default: "
                             "the model folder when writable")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--force", action="store_true", help="delete an existing export with the same key first")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Export and check; print one JSON object with the file, precision and max abs difference."""
    from .model import ModelLoadError, ModelSettings
    from .onnx_backend import OnnxCrossEncoderModel

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in ("transformers", "sentence_transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.WARNING)
    settings = ModelSettings(model=args.model, device=args.device, threads=args.threads)
    try:
        model = OnnxCrossEncoderModel(settings, quantize=None if args.quantize == "none" else args.quantize,
                                      cache_dir=args.cache_dir, force_export=args.force)
    except ModelLoadError as error:
        print(f"rerank-onnx-export: {error}", file=sys.stderr)
        return 3
    print(json.dumps(model.export_report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
