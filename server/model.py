"""Cross-encoder loading, pair encoding and scoring.

The model is loaded through sentence-transformers' ``CrossEncoder``, the same path
as ``CrossEncoder(name).predict``. Encoding and the forward pass are done here so
that the batcher can cut batches by token count across requests. For pairs that fit
the max length, the raw scores equal ``CrossEncoder.predict`` with the identity
activation, up to float rounding from different batch shapes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Position tables of these architectures reserve the first two slots for padding.
_POSITION_OFFSET_TWO = ("roberta", "xlm-roberta", "camembert", "longformer", "mpnet")


class ModelLoadError(RuntimeError):
    """The model could not be loaded or cannot serve as a one-label reranker."""


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one (query, document) pair, special tokens included."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    document_index: int

    @property
    def length(self) -> int:
        return len(self.input_ids)


@dataclass
class EncodedRequest:
    """All pairs of one request with the truncation figures for its usage report."""

    pairs: list[EncodedPair] = field(default_factory=list)
    tokens: int = 0
    documents_truncated: int = 0
    tokens_truncated: int = 0
    query_truncated: bool = False


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """Loading settings; a subset of the server config, so tests can load models directly."""

    model: str
    device: str = "auto"
    threads: int | None = None
    max_length: int | None = None


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` when a GPU is visible, else ``cpu``; check that cuda exists when asked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device} was requested but no CUDA device is visible; pass --device cpu")
    return device


def position_limit(config: object) -> int | None:
    """Return the max pair length the model's position table allows, or None if it has none."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    model_type = str(getattr(config, "model_type", ""))
    if model_type in _POSITION_OFFSET_TWO:
        return positions - 2
    return positions


class CrossEncoderModel:
    """A loaded one-label cross-encoder: encodes pairs and returns raw scores.

    ``encode`` may be called from many threads at once: a lock serializes the
    tokenizer, because Hugging Face fast tokenizers fail with "Already borrowed"
    when two threads change truncation settings concurrently. ``score`` is called
    by the single batcher thread only.
    """

    model_kind = "cross-encoder"
    backend = "torch"

    def __init__(self, settings: ModelSettings) -> None:
        import torch

        self.name = settings.model
        self.device = resolve_device(settings.device)
        _set_threads(settings.threads)
        self._cross_encoder = _load_cross_encoder(settings.model, self.device)
        self._model = self._cross_encoder.model
        self._model.eval()
        self.tokenizer = self._cross_encoder.tokenizer
        self._tokenizer_lock = threading.Lock()
        self._torch = torch

        self.num_labels = int(self._model.config.num_labels)
        if self.num_labels != 1:
            raise ModelLoadError(
                f"model {self.name!r} has {self.num_labels} output labels, but a reranker needs exactly 1 "
                "(one relevance score per pair); pass --model with a one-label cross-encoder such as "
                "cross-encoder/ms-marco-MiniLM-L6-v2"
            )
        self.max_length = self._resolve_max_length(settings.max_length)
        self._special_tokens = self.tokenizer.num_special_tokens_to_add(pair=True)
        self.max_query_tokens = max(1, (self.max_length - self._special_tokens) // 2)
        self._uses_token_types = "token_type_ids" in self.tokenizer.model_input_names
        self._pad_id = int(self.tokenizer.pad_token_id or 0)
        self.activation, self._normalize = _pick_activation(self._cross_encoder.activation_fn)

    def _resolve_max_length(self, requested: int | None) -> int:
        limit = position_limit(self._model.config)
        own = int(getattr(self._cross_encoder, "max_seq_length", None) or 0)
        if requested is None:
            if own <= 0 or own > 1_000_000:
                own = limit or 512
            if limit is not None and own > limit:
                logger.warning("model max length %d exceeds its position table %d; using %d", own, limit, limit)
                return limit
            return own
        if limit is not None and requested > limit:
            logger.warning(
                "--max-length %d exceeds the %d positions of model %s; clamped to %d",
                requested, limit, self.name, limit,
            )
            return limit
        return requested

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, query: str, texts: Sequence[str], *, truncation: str, pooling: str | None = None,
               max_document_chars: int | None = None) -> EncodedRequest:
        """Tokenize (query, text) pairs, cutting them to the max length.

        Args:
            query: Search text. With ``document_first`` it is cut to half the max
                length when longer; ``longest_first`` may cut it further.
            texts: Document texts, none of them blank.
            truncation: ``document_first`` keeps the query and cuts the document;
                ``longest_first`` cuts as ``CrossEncoder.predict`` does.
            pooling: ``max`` or ``mean`` splits a document that does not fit into
                overlapping chunks, one pair each; None truncates it.
            max_document_chars: Characters of each text kept before tokenization.

        Returns:
            The pairs in document order (a chunked document gives consecutive pairs)
            and the truncation figures.
        """
        if max_document_chars is not None:
            texts = [text[:max_document_chars] for text in texts]
        encoded = EncodedRequest()
        with self._tokenizer_lock:
            if truncation == "document_first":
                query, encoded.query_truncated = self._cut_query(query)
            doc_ids = self.tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False,
                                     return_token_type_ids=False, verbose=False)["input_ids"]
            query_length = len(self.tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"])
            room = self.max_length - self._special_tokens - query_length
            if pooling:
                pair_texts, owners = self._chunk(texts, doc_ids, room)
            else:
                pair_texts, owners = list(texts), list(range(len(texts)))
            strategy = "only_second" if truncation == "document_first" else "longest_first"
            batch = self.tokenizer([query] * len(pair_texts), pair_texts, truncation=strategy,
                                   max_length=self.max_length, return_attention_mask=False,
                                   return_token_type_ids=self._uses_token_types)

        for position, owner in enumerate(owners):
            ids = batch["input_ids"][position]
            types = batch["token_type_ids"][position] if self._uses_token_types else None
            encoded.pairs.append(EncodedPair(ids, types, owner))
            encoded.tokens += len(ids)
        if not pooling:
            for position, ids in enumerate(doc_ids):
                # Count what the tokenizer kept of the document, whatever the strategy.
                kept = sum(1 for sequence in batch.sequence_ids(position) if sequence == 1)
                if kept < len(ids):
                    encoded.documents_truncated += 1
                    encoded.tokens_truncated += len(ids) - kept
        return encoded

    def _cut_query(self, query: str) -> tuple[str, bool]:
        pieces = self.tokenizer(query, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = pieces["offset_mapping"]
        if len(offsets) <= self.max_query_tokens:
            return query, False
        return query[: offsets[self.max_query_tokens - 1][1]], True

    def _chunk(self, texts: Sequence[str], doc_ids: list[list[int]], room: int) -> tuple[list[str], list[int]]:
        return split_into_chunks(self.tokenizer, texts, doc_ids, room)

    # -- scoring ----------------------------------------------------------------------------

    def score(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        """Run one padded batch and return the raw scores (float32), one per pair."""
        torch = self._torch
        width = max(pair.length for pair in pairs)
        input_ids = np.full((len(pairs), width), self._pad_id, dtype=np.int64)
        attention = np.zeros((len(pairs), width), dtype=np.int64)
        token_types = np.zeros((len(pairs), width), dtype=np.int64) if self._uses_token_types else None
        for row, pair in enumerate(pairs):
            input_ids[row, : pair.length] = pair.input_ids
            attention[row, : pair.length] = 1
            if token_types is not None and pair.token_type_ids is not None:
                token_types[row, : pair.length] = pair.token_type_ids
        features = {
            "input_ids": torch.from_numpy(input_ids).to(self.device),
            "attention_mask": torch.from_numpy(attention).to(self.device),
        }
        if token_types is not None:
            features["token_type_ids"] = torch.from_numpy(token_types).to(self.device)
        with torch.inference_mode():
            logits = self._model(**features).logits
        return logits.float().reshape(-1).cpu().numpy()

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Apply the activation in float64, so distinct raw scores stay distinct."""
        return self._normalize(np.asarray(raw, dtype=np.float64))

    def warm_up(self) -> float:
        """Score a few pairs of short and full length; return the seconds it took."""
        started = time.perf_counter()
        filler = "warm up " * self.max_length
        for text in ("a short warm-up document", filler):
            encoded = self.encode("warm-up query", [text] * 4, truncation="document_first")
            self.score(encoded.pairs)
        return time.perf_counter() - started


def split_into_chunks(tokenizer: object, texts: Sequence[str], token_ids: Sequence[Sequence[int]],
                      room: int) -> tuple[list[str], list[int]]:
    """Split texts longer than ``room`` tokens into windows overlapping by a quarter.

    Returns the chunk texts and, for each chunk, the index of the text it came
    from. Texts that fit are kept whole. Cuts fall on token boundaries, taken from
    the tokenizer's character offsets.
    """
    chunks: list[str] = []
    owners: list[int] = []
    stride = max(1, (room * 3) // 4)
    for index, (text, ids) in enumerate(zip(texts, token_ids)):
        if len(ids) <= room:
            chunks.append(text)
            owners.append(index)
            continue
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,  # type: ignore[operator]
                            verbose=False)["offset_mapping"]
        start = 0
        while True:
            end = min(start + room, len(offsets))
            chunks.append(text[offsets[start][0]: offsets[end - 1][1]])
            owners.append(index)
            if end >= len(offsets):
                break
            start += stride
    return chunks, owners


def _pick_activation(activation: object) -> tuple[str, object]:
    """Return the name and float64 function used for normalized scores."""
    import torch

    if activation is None or isinstance(activation, torch.nn.Identity):
        return "sigmoid", _sigmoid
    if isinstance(activation, torch.nn.Sigmoid):
        return "sigmoid", _sigmoid
    if isinstance(activation, torch.nn.Tanh):
        return "tanh", np.tanh

    def apply(raw: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return activation(torch.from_numpy(raw)).numpy()  # type: ignore[operator]

    return type(activation).__name__.lower(), apply


def _sigmoid(raw: np.ndarray) -> np.ndarray:
    # exp of a large negative argument underflows to 0 only past about -745 in float64,
    # so logits in the usual range keep distinct normalized scores.
    return np.where(raw >= 0, 1.0 / (1.0 + np.exp(-np.abs(raw))), np.exp(-np.abs(raw)) / (1.0 + np.exp(-np.abs(raw))))


def _set_threads(threads: int | None) -> None:
    import torch

    count = threads or os.cpu_count() or 1
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        # Already set once in this process (for example by an earlier model in tests).
        pass


def check_model_path(name: str) -> None:
    """Raise ModelLoadError when ``name`` is written as a local path and nothing is there.

    A name that starts with ``/``, ``./``, ``../`` or ``~`` is a path; anything
    else may be a hub id such as ``cross-encoder/ms-marco-MiniLM-L6-v2``. The
    check needs no torch import, so a wrong path fails in milliseconds.
    """
    looks_local = name.startswith(("/", "./", "../", "~")) or os.sep in name.strip("/").split("/", 1)[0]
    if looks_local and not Path(name).expanduser().exists():
        raise ModelLoadError(
            f"model folder {name!r} not found; pass --model with an existing model folder (one written by "
            "CrossEncoder.save or SentenceTransformer.save) or a Hugging Face hub id"
        )


def load_failure_reason(error: Exception) -> str:
    """Return a loader error's message without its final full stop, to go inside a longer message."""
    return str(error).rstrip(". ")


def _load_cross_encoder(name: str, device: str) -> object:
    from sentence_transformers import CrossEncoder
    from transformers.utils import logging as transformers_logging

    # Progress bars from weight loading would interleave with the server's log lines.
    transformers_logging.disable_progress_bar()

    check_model_path(name)
    path = Path(name).expanduser()
    try:
        return CrossEncoder(str(path) if path.exists() else name, device=device)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"model {name!r} could not be loaded: {load_failure_reason(error)}. Without hub access, pass --model "
            "with a local CrossEncoder folder, or set HF_HOME to a cache that contains this model and "
            "HF_HUB_OFFLINE=1"
        ) from error


__all__ = [
    "CrossEncoderModel",
    "EncodedPair",
    "EncodedRequest",
    "ModelLoadError",
    "ModelSettings",
]
