"""Choose and load the model implementation for the configured kind and backend.

``--model-kind auto`` reads the model folder (see :func:`detect_model_kind`); the
cross-encoder is the default whenever the folder does not say otherwise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .config import ServerConfig
from .model import CrossEncoderModel, ModelLoadError, ModelSettings, check_model_path

logger = logging.getLogger(__name__)


def load_model(config: ServerConfig) -> CrossEncoderModel:
    """Load the model named by ``config`` with the configured kind and backend.

    Raises:
        ModelLoadError: the model cannot be found, has the wrong shape, or the
            kind and backend cannot serve it.
    """
    check_model_path(config.model)
    settings = ModelSettings(model=config.model, device=config.device, threads=config.threads,
                             max_length=config.max_length)
    kind = config.model_kind
    if kind == "auto":
        kind, reason = detect_model_kind(config.model)
        logger.info("model kind detected kind=%s reason=%s", kind, reason)
    if config.backend == "onnx":
        from .onnx_backend import OnnxCrossEncoderModel

        if kind == "bi-encoder":
            raise ModelLoadError("--backend onnx serves cross-encoders only; pass --backend torch for a "
                                 "bi-encoder")
        quantize = None if config.onnx_quantize == "none" else config.onnx_quantize
        return OnnxCrossEncoderModel(settings, quantize=quantize, cache_dir=config.onnx_cache_dir)
    if kind == "bi-encoder":
        from .biencoder import BiEncoderModel

        return BiEncoderModel(settings, cache_size=config.embedding_cache_size)  # type: ignore[return-value]
    return CrossEncoderModel(settings)


def detect_model_kind(model: str) -> tuple[str, str]:
    """Return ``(kind, reason)`` for ``--model-kind auto``, reading only files in a local folder.

    The first rule that matches decides:

    1. ``config_sentence_transformers.json`` has ``model_type`` ``CrossEncoder``
       (written by sentence-transformers 4 and later): cross-encoder.
    2. ``config.json`` lists an architecture ending in
       ``ForSequenceClassification``: cross-encoder.
    3. ``modules.json`` lists a ``Pooling`` module: bi-encoder.
    4. ``config_sentence_transformers.json`` exists (``model_type``
       ``SentenceTransformer`` or none): bi-encoder.
    5. Anything else, including a hub id that is not a local folder:
       cross-encoder, the default.
    """
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return "cross-encoder", "not a local folder, so the default applies"
    st_config = _read_json(folder / "config_sentence_transformers.json")
    model_type = st_config.get("model_type") if isinstance(st_config, dict) else None
    if model_type == "CrossEncoder":
        return "cross-encoder", "config_sentence_transformers.json model_type is CrossEncoder"
    hf_config = _read_json(folder / "config.json")
    architectures = hf_config.get("architectures") if isinstance(hf_config, dict) else None
    if isinstance(architectures, list) and any(str(name).endswith("ForSequenceClassification")
                                               for name in architectures):
        return "cross-encoder", "config.json has a sequence-classification architecture"
    modules = _read_json(folder / "modules.json")
    if isinstance(modules, list) and any(isinstance(module, dict) and str(module.get("type", "")).endswith(".Pooling")
                                         for module in modules):
        return "bi-encoder", "modules.json has a Pooling module"
    if st_config is not None:
        return "bi-encoder", "config_sentence_transformers.json has no CrossEncoder model_type"
    return "cross-encoder", "no sentence-transformers marker found, so the default applies"


def _read_json(path: Path) -> object | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
