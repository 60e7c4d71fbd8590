"""ONNX Runtime backend: the same cross-encoder, exported once and run by onnxruntime.

:class:`OnnxCrossEncoderModel` keeps the tokenizer and ``encode`` of
:class:`~.model.CrossEncoderModel` and replaces only the forward pass. Loading:

1. The parent loads the model with sentence-transformers on the CPU; it is the
   torch reference and the source of the export.
2. The export for the model's key is reused, or written by ``export.export_fp32``.
3. Sample pairs are scored by torch and by the fp32 file, in one padded batch
   and one by one. A max absolute difference above ``EXPORT_TOLERANCE`` raises
   :class:`~.model.ModelLoadError`, so a wrong export never serves.
4. With ``quantize="int8"`` (CPU) or on a CUDA device (fp16), the file derived
   from the checked fp32 file serves. Its difference from torch is logged, not
   enforced, because reduced precision moves scores by design; the int8
   fidelity report (``python -m bench.fidelity``) measures what it does to rankings.
5. The torch weights are released.

Threads: ONNX Runtime runs each batch with ``threads`` intra-op threads
(default: the CPUs this process may use) and one inter-op thread, because the
batcher sends one batch at a time and a BERT graph has no parallel branches
worth a second pool.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import export
from .model import CrossEncoderModel, EncodedPair, ModelLoadError, ModelSettings, resolve_device

logger = logging.getLogger(__name__)

EXPORT_TOLERANCE = 1e-4
QUANTIZATIONS = ("int8",)

_SAMPLE_QUERY = "does vitamin d supplementation lower the risk of respiratory infections"
_SAMPLE_DOCUMENTS = (
    "Vitamin D",
    "A randomized trial of daily vitamin D3 in adults found fewer acute respiratory infections.",
    "Gene expression in zebrafish fin regeneration depends on retinoic acid signalling.",
    "Short.",
    # Long enough to be cut at the max length, so the check covers the last positions.
    "Observational cohorts report an association between serum 25-hydroxyvitamin D and infection risk. " * 80,
)


class OnnxCrossEncoderModel(CrossEncoderModel):
    """A cross-encoder whose ``score`` runs an ONNX Runtime session.

    Args:
        settings: Model, device, threads and max length, as for the torch backend.
            ``device`` ``cuda`` serves fp16 with the CUDA execution provider, which
            needs the onnxruntime-gpu package.
        quantize: ``"int8"`` serves a dynamically quantized copy (CPU only); None
            serves fp32 (fp16 on CUDA).
        cache_dir: Export cache to use instead of the model folder.
        force_export: Delete an existing export with the same key and export again.
        tolerance: Max absolute difference between fp32 ONNX and torch scores.

    Raises:
        ModelLoadError: The model cannot be loaded, the requested device or
            quantization is not available, or the fp32 export fails its check.
    """

    backend = "onnx"

    def __init__(self, settings: ModelSettings, *, quantize: str | None = None, cache_dir: Path | None = None,
                 force_export: bool = False, tolerance: float = EXPORT_TOLERANCE) -> None:
        import onnxruntime

        started = time.perf_counter()
        device = _resolve_onnx_device(settings.device)
        if quantize is not None and quantize not in QUANTIZATIONS:
            raise ModelLoadError(f"quantization {quantize!r} is invalid; expected one of {', '.join(QUANTIZATIONS)}")
        if quantize is not None and device != "cpu":
            raise ModelLoadError(f"int8 quantization runs on the CPU only, but device {device!r} was selected; "
                                 "pass --device cpu, or drop the quantization to serve fp16 on the GPU")
        # The torch reference stays on the CPU: it only exports and checks.
        super().__init__(dataclasses.replace(settings, device="cpu"))
        self.threads = settings.threads or _available_cpus()
        self.precision = "int8" if quantize else ("fp16" if device != "cpu" else "fp32")

        folder, reused = self._ensure_export(cache_dir, force_export)
        fp32_session = _create_session(folder / export.FP32_FILE, device="cpu", threads=self.threads)
        fp32_difference = self._max_difference(fp32_session)
        metadata = export.read_metadata(folder)
        metadata["max_abs_diff_fp32"] = fp32_difference
        logger.info("onnx export checked against torch max_abs_diff=%.3g tolerance=%.0e folder=%s reused=%s",
                    fp32_difference, tolerance, folder, reused)
        if not fp32_difference <= tolerance:
            raise ModelLoadError(
                f"the ONNX export of {self.name!r} differs from torch by {fp32_difference:.3g} on sample pairs, "
                f"over the tolerance {tolerance:.0e}; not serving it. Delete {folder} and export again with "
                "rerank-onnx-export --force, or serve with --backend torch")

        served_path = folder / export.FP32_FILE
        self._session = fp32_session
        difference = fp32_difference
        if self.precision != "fp32":
            served_path = export.quantize_int8(folder) if quantize else export.convert_fp16(folder)
            self._session = _create_session(served_path, device=device, threads=self.threads)
            difference = self._max_difference(self._session)
            metadata[f"max_abs_diff_{self.precision}"] = difference
            logger.info("onnx %s model checked against torch max_abs_diff=%.3g (not enforced; reduced "
                        "precision)", self.precision, difference)
        export.write_metadata(folder, metadata)

        self._input_names = [node.name for node in self._session.get_inputs()]
        self.export_report: dict[str, object] = {
            "model": self.name, "path": str(served_path), "precision": self.precision, "device": device,
            "max_abs_diff": difference, "max_abs_diff_fp32": fp32_difference, "reused": reused,
            "threads": self.threads, "onnxruntime": onnxruntime.__version__,
            "load_seconds": round(time.perf_counter() - started, 3),
        }
        self._release_torch()
        self.device = device
        logger.info("onnx session ready precision=%s device=%s intra_op_threads=%d inter_op_threads=1 "
                    "path=%s", self.precision, device, self.threads, served_path)

    # -- loading ----------------------------------------------------------------------------

    def _ensure_export(self, cache_dir: Path | None, force: bool) -> tuple[Path, bool]:
        """Return the export folder for this model, exporting when missing, and whether it was reused."""
        versions = export.exporter_versions()
        key = export.export_key(self._model, {**versions, "token_types": self._uses_token_types})
        folder = export.export_root(self.name, cache_dir) / key
        if force and folder.exists():
            logger.info("onnx export deleted for --force folder=%s", folder)
            for path in sorted(folder.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            folder.rmdir()
        if (folder / export.FP32_FILE).exists():
            return folder, True

        logger.info("onnx export started model=%s folder=%s", self.name, folder)
        try:
            figures = export.export_fp32(self._model, folder, self._export_sample())
        except OSError as error:
            raise ModelLoadError(f"could not write the ONNX export to {folder}: {error}; pass a writable "
                                 f"folder in {export.CACHE_DIR_ENV}") from error
        export.write_metadata(folder, {"model": self.name, "key": key, **versions, **figures})
        logger.info("onnx export written seconds=%.2f fused=%s", figures["export_seconds"], figures["fused"])
        return folder, False

    def _sample_pairs(self) -> list[EncodedPair]:
        return self.encode(_SAMPLE_QUERY, _SAMPLE_DOCUMENTS, truncation="document_first").pairs

    def _export_sample(self) -> dict[str, np.ndarray]:
        # Two rows of different length, so the trace sees padding and a masked batch.
        return pad_batch(self._sample_pairs()[:2], self._pad_id, self._uses_token_types)

    def _max_difference(self, session: object) -> float:
        """Return the max absolute difference from torch over the sample pairs, batched and one by one."""
        pairs = self._sample_pairs()
        expected = CrossEncoderModel.score(self, pairs)
        batched = _run(session, pad_batch(pairs, self._pad_id, self._uses_token_types))
        single = np.concatenate([_run(session, pad_batch([pair], self._pad_id, self._uses_token_types))
                                 for pair in pairs])
        return float(max(np.max(np.abs(batched - expected)), np.max(np.abs(single - expected))))

    def _release_torch(self) -> None:
        """Drop the torch weights; only the tokenizer and the session are needed from here on."""
        self._model = None
        self._cross_encoder = None
        gc.collect()

    # -- scoring ----------------------------------------------------------------------------

    def score(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        """Run one padded batch through the session and return the raw scores (float32), one per pair."""
        return _run(self._session, pad_batch(pairs, self._pad_id, self._uses_token_types))


def pad_batch(pairs: Sequence[EncodedPair], pad_id: int, token_types: bool) -> dict[str, np.ndarray]:
    """Pad pairs on the right to the longest one; return int64 model inputs by name.

    The key order is the ONNX input order: input_ids, attention_mask, then
    token_type_ids when the tokenizer uses them.
    """
    width = max(pair.length for pair in pairs)
    input_ids = np.full((len(pairs), width), pad_id, dtype=np.int64)
    attention = np.zeros((len(pairs), width), dtype=np.int64)
    types = np.zeros((len(pairs), width), dtype=np.int64)
    for row, pair in enumerate(pairs):
        input_ids[row, : pair.length] = pair.input_ids
        attention[row, : pair.length] = 1
        if pair.token_type_ids is not None:
            types[row, : pair.length] = pair.token_type_ids
    features = {"input_ids": input_ids, "attention_mask": attention}
    if token_types:
        features["token_type_ids"] = types
    return features


def _run(session: object, features: dict[str, np.ndarray]) -> np.ndarray:
    (logits,) = session.run([export.OUTPUT_NAME], features)  # type: ignore[attr-defined]
    return np.asarray(logits, dtype=np.float32).reshape(-1)


def _create_session(path: Path, *, device: str, threads: int) -> object:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if device.startswith("cuda"):
        device_id = int(device.partition(":")[2] or 0)
        providers: list[object] = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    return onnxruntime.InferenceSession(str(path), options, providers=providers)


def _resolve_onnx_device(requested: str) -> str:
    """Map the device flag to ``cpu`` or ``cuda[:N]`` for ONNX Runtime.

    ``auto`` falls back to the CPU, with a WARNING, when a GPU is visible but
    the installed onnxruntime has no CUDA execution provider; an explicit
    ``cuda`` raises instead.
    """
    import onnxruntime

    device = resolve_device(requested)
    if not device.startswith("cuda"):
        return "cpu"
    providers = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" in providers:
        return device
    if requested == "auto":
        logger.warning("a GPU is visible but onnxruntime %s has no CUDA execution provider; serving on the CPU. "
                       "Install onnxruntime-gpu in place of onnxruntime to serve fp16 on the GPU",
                       onnxruntime.__version__)
        return "cpu"
    raise ModelLoadError(
        f"--device {requested} with --backend onnx needs the CUDA execution provider, but onnxruntime "
        f"{onnxruntime.__version__} has only {', '.join(providers)}; install onnxruntime-gpu in place of "
        "onnxruntime, or pass --device cpu")


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


__all__ = ["EXPORT_TOLERANCE", "OnnxCrossEncoderModel", "pad_batch"]
