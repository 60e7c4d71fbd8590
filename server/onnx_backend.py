"""ONNX Runtime backend: the same cross-encoder, exported once and run by onnxruntime.

:class:`OnnxCrossEncoderModel` keeps the tokenizer and ``encode`` of
:class:`~.model.CrossEncoderModel` and replaces only the forward pass.

First start (or a changed model folder): the parent loads the model with
sentence-transformers on the CPU. The export for the weights' key is reused or
written (``export.export_fp32``). Then torch and the fp32 file score sample
pairs, in one padded batch and one by one. A max absolute difference
above ``EXPORT_TOLERANCE`` raises :class:`~.model.ModelLoadError`, so a wrong
export never serves. The torch scores, the sample's token ids and the
tokenizer facts go into ``export.json`` with a fingerprint of the folder's files.

Later starts of an unchanged local folder skip sentence-transformers and the
weights: the tokenizer alone is loaded, the sample must tokenize to the stored
ids, and the fp32 file must still reproduce the stored torch scores within the
tolerance. Any other difference falls back to the first-start path.

With ``quantize="int8"`` (CPU) or on a CUDA device (fp16), the file derived
from the checked fp32 file serves. Its difference from torch is logged, not
enforced, because reduced precision moves scores by design; the int8 fidelity
report (``python -m bench.fidelity``) measures what it does to rankings.

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
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import export
from .model import CrossEncoderModel, EncodedPair, ModelLoadError, ModelSettings, _sigmoid, resolve_device

logger = logging.getLogger(__name__)

EXPORT_TOLERANCE = 1e-4
QUANTIZATIONS = ("int8",)

_SAMPLE_QUERY = "does vitamin d supplementation lower the risk of respiratory infections"
_SAMPLE_DOCUMENTS = (
    "Vitamin D",
    "A randomized trial of daily vitamin D3 in adults found fewer acute respiratory infections.",
    "Gene expression in zebrafish fin regeneration depends on retinoic acid signalling.",
    "Short.",
    "Observational cohorts report an association between serum 25-hydroxyvitamin D and infection risk. " * 8,
)
# Activations whose float64 function the fast start can rebuild without torch.
_NORMALIZERS = {"sigmoid": _sigmoid, "tanh": np.tanh}


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
        self.threads = settings.threads or _available_cpus()
        if quantize:
            self.precision = quantize
        elif device != "cpu":
            self.precision = "fp16"
        else:
            self.precision = "fp32"
        self._tolerance = tolerance

        fingerprint = export.folder_fingerprint(settings.model)
        cached = None if force_export or fingerprint is None else export.find_by_fingerprint(
            export.export_root(settings.model, cache_dir), fingerprint)
        adopted = cached is not None and self._adopt(settings, *cached)
        if adopted:
            folder, metadata = cached  # type: ignore[misc]
            reused = True
        else:
            folder, metadata, reused = self._load_and_export(settings, cache_dir, force_export, fingerprint)

        fp32_session = _open_session(folder / export.FP32_FILE, device="cpu", threads=self.threads, model=self.name)
        fp32_difference = self._max_difference(fp32_session, np.asarray(metadata["reference"]["scores"]))
        metadata["max_abs_diff_fp32"] = fp32_difference
        logger.info("onnx export checked against torch max_abs_diff=%.3g tolerance=%.0e folder=%s reused=%s "
                    "torch_loaded=%s", fp32_difference, tolerance, folder, reused, not adopted)
        if not fp32_difference <= tolerance:
            raise ModelLoadError(
                f"the ONNX export of {self.name!r} differs from torch by {fp32_difference:.3g} on sample pairs, "
                f"over the tolerance {tolerance:.0e}; not serving it. Export it again with rerank-onnx-export "
                f"--model {self.name} --force, or serve with --backend torch")

        served_path = folder / export.FP32_FILE
        self._session = fp32_session
        difference = fp32_difference
        if self.precision != "fp32":
            served_path = export.quantize_int8(folder) if quantize else export.convert_fp16(folder)
            self._session = _open_session(served_path, device=device, threads=self.threads, model=self.name)
            difference = self._max_difference(self._session, np.asarray(metadata["reference"]["scores"]))
            metadata[f"max_abs_diff_{self.precision}"] = difference
            logger.info("onnx %s model checked against torch max_abs_diff=%.3g (not enforced; reduced "
                        "precision)", self.precision, difference)
        if not adopted or self.precision != "fp32":
            export.write_metadata(folder, metadata)

        self.device = device
        self.export_report: dict[str, object] = {
            "model": self.name, "path": str(served_path), "precision": self.precision, "device": device,
            "max_abs_diff": difference, "max_abs_diff_fp32": fp32_difference, "reused": reused,
            "torch_loaded": not adopted, "threads": self.threads, "onnxruntime": onnxruntime.__version__,
            "load_seconds": round(time.perf_counter() - started, 3),
        }
        logger.info("onnx session ready precision=%s device=%s intra_op_threads=%d inter_op_threads=1 "
                    "path=%s", self.precision, device, self.threads, served_path)

    # -- first start: torch, export, reference scores ---------------------------------------

    def _load_and_export(self, settings: ModelSettings, cache_dir: Path | None, force: bool,
                         fingerprint: str | None) -> tuple[Path, dict[str, Any], bool]:
        """Load with sentence-transformers, find or write the export, record torch's sample scores."""
        # The torch reference stays on the CPU: it only exports and checks.
        super().__init__(dataclasses.replace(settings, device="cpu"))
        versions = export.exporter_versions()
        key = export.export_key(self._model, {**versions, "token_types": self._uses_token_types})
        folder = export.export_root(self.name, cache_dir) / key
        if force and folder.exists():
            logger.info("onnx export deleted for --force folder=%s", folder)
            for path in sorted(folder.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            folder.rmdir()

        reused = (folder / export.FP32_FILE).exists()
        metadata = export.read_metadata(folder) if reused else {}
        if not reused:
            logger.info("onnx export started model=%s folder=%s", self.name, folder)
            try:
                figures = export.export_fp32(self._model, folder, self._export_sample())
            except OSError as error:
                raise ModelLoadError(f"could not write the ONNX export to {folder}: {error}; set "
                                     f"{export.CACHE_DIR_ENV} to a writable folder") from error
            metadata = {"model": self.name, "key": key, **versions, **figures}
            logger.info("onnx export written seconds=%.2f fused=%s", figures["export_seconds"], figures["fused"])

        pairs = self._sample_pairs()
        metadata["fingerprint"] = fingerprint
        metadata["reference"] = {
            "input_ids": [pair.input_ids for pair in pairs],
            "scores": CrossEncoderModel.score(self, pairs).tolist(),
        }
        metadata["encoder"] = {"max_length_setting": settings.max_length, "max_length": self.max_length,
                               "activation": self.activation}
        self._release_torch()
        return folder, metadata, reused

    def _export_sample(self) -> dict[str, np.ndarray]:
        # Two rows of different length, so the traced graph keeps the padding mask.
        return pad_batch(self._sample_pairs()[:2], self._pad_id, self._uses_token_types)

    def _release_torch(self) -> None:
        """Drop the torch weights; only the tokenizer and the session are needed from here on."""
        self._model = None
        self._cross_encoder = None
        gc.collect()

    # -- later starts: tokenizer only -------------------------------------------------------

    def _adopt(self, settings: ModelSettings, folder: Path, metadata: dict[str, Any]) -> bool:
        """Set up the tokenizer from a checked export without torch weights; False when it does not apply.

        It applies when the export was made with the same --max-length setting
        and an activation rebuilt here, and the sample tokenizes to the stored ids.
        """
        encoder = metadata.get("encoder") or {}
        if encoder.get("max_length_setting") != settings.max_length or encoder.get("activation") not in _NORMALIZERS:
            return False
        from transformers import AutoTokenizer

        # NOTE: these attributes mirror CrossEncoderModel.__init__; an attribute the
        # parent adds for encode() must be added here too (the fast-start tests fail otherwise).
        self.name = settings.model
        self.device = "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(settings.model)
        self._tokenizer_lock = threading.Lock()
        self._model = None
        self._cross_encoder = None
        self.num_labels = 1
        self.max_length = int(encoder["max_length"])
        self._special_tokens = self.tokenizer.num_special_tokens_to_add(pair=True)
        self.max_query_tokens = max(1, (self.max_length - self._special_tokens) // 2)
        self._uses_token_types = "token_type_ids" in self.tokenizer.model_input_names
        self._pad_id = int(self.tokenizer.pad_token_id or 0)
        self.activation = str(encoder["activation"])
        self._normalize = _NORMALIZERS[self.activation]

        stored_ids = metadata.get("reference", {}).get("input_ids")
        if [pair.input_ids for pair in self._sample_pairs()] != stored_ids:
            logger.info("onnx fast start skipped: the tokenizer output differs from the export's; loading torch")
            return False
        return True

    # -- checks and scoring -----------------------------------------------------------------

    def _sample_pairs(self) -> list[EncodedPair]:
        return self.encode(_SAMPLE_QUERY, _SAMPLE_DOCUMENTS, truncation="document_first").pairs

    def _max_difference(self, session: object, expected: np.ndarray) -> float:
        """Return the max absolute difference from ``expected`` over the sample pairs, batched and one by one."""
        pairs = self._sample_pairs()
        batched = _run(session, pad_batch(pairs, self._pad_id, self._uses_token_types))
        single = np.concatenate([_run(session, pad_batch([pair], self._pad_id, self._uses_token_types))
                                 for pair in pairs])
        return float(max(np.max(np.abs(batched - expected)), np.max(np.abs(single - expected))))

    def warm_up(self) -> float:
        """Score one short and one full-length pair; return the seconds it took.

        Lighter than the torch warm-up (four pairs of each length), because the
        start-up check has already run the session: this only touches the
        allocations of the longest shape once before the first request does.
        """
        started = time.perf_counter()
        for text in ("a short warm-up document", "warm up " * self.max_length):
            self.score(self.encode("warm-up query", [text], truncation="document_first").pairs)
        return time.perf_counter() - started

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


def _open_session(path: Path, *, device: str, threads: int, model: str) -> object:
    try:
        return _create_session(path, device=device, threads=threads)
    except Exception as error:  # noqa: BLE001 - onnxruntime's pybind errors share no base class but Exception
        raise ModelLoadError(f"ONNX Runtime could not load {path}: {error}. Export it again with "
                             f"rerank-onnx-export --model {model} --force") from error


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

    ``cpu`` never imports torch. ``auto`` falls back to the CPU, with a
    WARNING, when a GPU is visible but the installed onnxruntime has no CUDA
    execution provider. An explicit ``cuda`` raises instead.
    """
    import onnxruntime

    if requested == "cpu":
        return "cpu"
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
