"""Choose and load the model implementation for the configured kind and backend."""

from __future__ import annotations

from .config import ServerConfig
from .model import CrossEncoderModel, ModelLoadError, ModelSettings


def load_model(config: ServerConfig) -> CrossEncoderModel:
    """Load the model named by ``config`` with the configured kind and backend.

    Raises:
        ModelLoadError: the model cannot be found, has the wrong shape, or the
            kind and backend cannot serve it.
    """
    settings = ModelSettings(model=config.model, device=config.device, threads=config.threads,
                             max_length=config.max_length)
    if config.model_kind == "bi-encoder":
        raise ModelLoadError("--model-kind bi-encoder is not supported yet; use cross-encoder")
    if config.backend == "onnx":
        raise ModelLoadError("--backend onnx is not supported yet; use torch")
    return CrossEncoderModel(settings)
