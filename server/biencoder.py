"""Bi-encoder scoring: cosine similarity of query and document embeddings.

A sentence-transformers bi-encoder (for example all-MiniLM-L6-v2) embeds the
query and each document apart, with the model's own pooling. The score of a pair
is the cosine similarity of the two embeddings, so raw scores lie in [-1, 1].
The normalized score is the same number (the activation is the identity): the
cosine is already bounded and comparable across queries, and blending with a
first-stage score keeps its scale.

The model plugs into the batcher like the cross-encoder. ``encode`` embeds the
query once per request and tokenizes each document; every pair carries the
document tokens and a reference to the query embedding. ``score`` embeds the
documents of a batch in one forward pass and returns the cosines. Document
embeddings are kept in a bounded LRU keyed by a hash of the text, because search
pages return the same documents for many queries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .model import (
    EncodedRequest,
    ModelLoadError,
    ModelSettings,
    _set_threads,
    check_model_path,
    load_failure_reason,
    position_limit,
    resolve_device,
    split_into_chunks,
)

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_CACHE_SIZE = 50_000


@dataclass(frozen=True)
class QueryEmbedding:
    """L2-normalized query embedding shared by all pairs of one request."""

    vector: np.ndarray


@dataclass(frozen=True)
class EmbeddingPair:
    """One document (or one chunk of it) waiting to be compared with the query.

    ``input_ids`` is empty when the document embedding was already cached at
    encoding time, and ``embedding`` then contains it. ``length`` is what the batcher
    budgets: the tokens still to run through the model, at least 1.
    """

    input_ids: list[int]
    token_type_ids: list[int] | None
    document_index: int
    digest: bytes
    query: QueryEmbedding
    embedding: np.ndarray | None = None

    @property
    def length(self) -> int:
        return max(1, len(self.input_ids))


class EmbeddingCache:
    """Thread-safe LRU of document embeddings by content digest, with hit and miss counts.

    A capacity of 0 disables caching: every lookup misses and nothing is stored.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._hit_counter: Any = None
        self._miss_counter: Any = None
        self._entries_gauge: Any = None

    def register_metrics(self, registry: Any) -> None:
        """Add ``rerank_embedding_cache{result}`` and ``rerank_embedding_cache_entries`` to ``registry``.

        Counts from before this call are carried over. Call once per registry.
        """
        from prometheus_client import Counter, Gauge

        counter = Counter("rerank_embedding_cache", "document embedding cache lookups, by result", ["result"],
                          registry=registry)
        with self._lock:
            self._hit_counter = counter.labels(result="hit")
            self._miss_counter = counter.labels(result="miss")
            self._hit_counter.inc(self.hits)
            self._miss_counter.inc(self.misses)
            self._entries_gauge = Gauge("rerank_embedding_cache_entries", "document embeddings cached",
                                        registry=registry)
            self._entries_gauge.set(len(self._entries))

    def get(self, digest: bytes) -> np.ndarray | None:
        """Return the cached embedding and count a hit, or return None and count a miss."""
        with self._lock:
            vector = self._entries.get(digest)
            if vector is None:
                self.misses += 1
                if self._miss_counter is not None:
                    self._miss_counter.inc()
                return None
            self._entries.move_to_end(digest)
            self.hits += 1
            if self._hit_counter is not None:
                self._hit_counter.inc()
            return vector

    def record_hit(self, digest: bytes) -> None:
        """Count a hit for an embedding found earlier by ``peek``, and refresh its LRU position."""
        with self._lock:
            if digest in self._entries:
                self._entries.move_to_end(digest)
            self.hits += 1
            if self._hit_counter is not None:
                self._hit_counter.inc()

    def peek(self, digest: bytes) -> np.ndarray | None:
        """Return the cached embedding without counting the lookup."""
        with self._lock:
            return self._entries.get(digest)

    def put(self, digest: bytes, vector: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._entries[digest] = vector
            self._entries.move_to_end(digest)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            if self._entries_gauge is not None:
                self._entries_gauge.set(len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


class BiEncoderModel:
    """A loaded sentence-transformers bi-encoder with the interface of ``CrossEncoderModel``.

    ``encode`` may be called from many threads at once. A lock serializes the
    tokenizer and another serializes forward passes, so the query embedding of a
    request and the document batches of the batcher thread never run the model
    concurrently. ``score`` is called by the single batcher thread only.

    Args:
        settings: Model folder or hub id, device, threads and max length.
        cache_size: Document embeddings kept in the LRU; 0 disables the cache.
    """

    model_kind = "bi-encoder"
    backend = "torch"
    num_labels = 1
    activation = "identity"

    def __init__(self, settings: ModelSettings, *, cache_size: int = DEFAULT_EMBEDDING_CACHE_SIZE) -> None:
        import torch

        self.name = settings.model
        self.device = resolve_device(settings.device)
        _set_threads(settings.threads)
        self._torch = torch
        self._encoder = _load_sentence_transformer(settings.model, self.device)
        self._encoder.eval()
        self.tokenizer = self._encoder.tokenizer
        if self.tokenizer is None:
            raise ModelLoadError(f"model {self.name!r} has no text tokenizer; a bi-encoder must embed text")
        self._tokenizer_lock = threading.Lock()
        self._forward_lock = threading.Lock()

        self.max_length = self._resolve_max_length(settings.max_length)
        self._special_tokens = self.tokenizer.num_special_tokens_to_add(pair=False)
        self._uses_token_types = "token_type_ids" in self.tokenizer.model_input_names
        self._pad_id = int(self.tokenizer.pad_token_id or 0)
        prompts = getattr(self._encoder, "prompts", None) or {}
        # NOTE: prompts are prepended as text, as encode_query/encode_document do. Models whose
        # pooling leaves the prompt tokens out (include_prompt=False) get slightly different
        # embeddings here than from SentenceTransformer.encode.
        self._query_prompt = prompts.get("query") or ""
        self._document_prompt = prompts.get("document") or ""
        self.cache = EmbeddingCache(cache_size)
        self._key_prefix = f"{self.name}\0{self.max_length}\0{self._document_prompt}\0".encode()

    def _resolve_max_length(self, requested: int | None) -> int:
        config = getattr(self._encoder[0], "config", None)
        limit = position_limit(config) if config is not None else None
        own = int(self._encoder.max_seq_length or 0) or limit or 512
        if requested is None:
            return min(own, limit) if limit else own
        if limit is not None and requested > limit:
            logger.warning("--max-length %d exceeds the %d positions of model %s; clamped to %d",
                           requested, limit, self.name, limit)
            return limit
        return requested

    def register_metrics(self, registry: Any) -> None:
        """Expose the embedding cache counters in a Prometheus registry (the server's own)."""
        self.cache.register_metrics(registry)

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, query: str, texts: Sequence[str], *, truncation: str, pooling: str | None = None,
               max_document_chars: int | None = None) -> EncodedRequest:
        """Embed the query and tokenize the documents, cut to the max length.

        Args:
            query: Search text, embedded once for all pairs.
            texts: Document texts, none of them blank.
            truncation: Accepted for interface parity and ignored: query and
                document are embedded apart, so only the document is ever cut,
                whichever strategy is asked for.
            pooling: ``max`` or ``mean`` splits a document longer than the max
                length into windows overlapping by a quarter, one pair each;
                None cuts it at the max length.
            max_document_chars: Characters of each text kept before tokenization.

        Returns:
            The pairs in document order and the truncation figures. ``tokens``
            counts the document tokens still to embed (cache misses).
        """
        del truncation
        if max_document_chars is not None:
            texts = [text[:max_document_chars] for text in texts]
        encoded = EncodedRequest()
        query_vector, encoded.query_truncated = self._embed_query(query)
        shared_query = QueryEmbedding(query_vector)
        room = self.max_length - self._special_tokens

        with self._tokenizer_lock:
            prompted = [self._document_prompt + text for text in texts]
            full_ids = self.tokenizer(prompted, add_special_tokens=False, return_attention_mask=False,
                                      return_token_type_ids=False, verbose=False)["input_ids"]
            if pooling:
                pieces, owners = self._chunk(prompted, full_ids, room)
            else:
                pieces, owners = prompted, list(range(len(prompted)))
            batch = self.tokenizer(pieces, truncation=True, max_length=self.max_length,
                                   return_attention_mask=False, return_token_type_ids=self._uses_token_types)

        for position, owner in enumerate(owners):
            digest = self._digest(pieces[position])
            cached = self.cache.peek(digest)
            if cached is not None:
                # Counted as a hit in ``score``, where every pair is counted exactly once.
                encoded.pairs.append(EmbeddingPair([], None, owner, digest, shared_query, cached))
                continue
            ids = list(batch["input_ids"][position])
            types = list(batch["token_type_ids"][position]) if self._uses_token_types else None
            encoded.pairs.append(EmbeddingPair(ids, types, owner, digest, shared_query))
            encoded.tokens += len(ids)
        if not pooling:
            for ids in full_ids:
                if len(ids) > room:
                    encoded.documents_truncated += 1
                    encoded.tokens_truncated += len(ids) - room
        return encoded

    def _embed_query(self, query: str) -> tuple[np.ndarray, bool]:
        text = self._query_prompt + query
        with self._tokenizer_lock:
            full = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            ids = self.tokenizer(text, truncation=True, max_length=self.max_length, return_attention_mask=False,
                                 return_token_type_ids=self._uses_token_types)
        truncated = len(full) > self.max_length - self._special_tokens
        types = [ids["token_type_ids"]] if self._uses_token_types else None
        vectors = self._embed([ids["input_ids"]], types)
        return vectors[0], truncated

    def _chunk(self, texts: Sequence[str], full_ids: list[list[int]], room: int) -> tuple[list[str], list[int]]:
        return split_into_chunks(self.tokenizer, texts, full_ids, room)

    def _digest(self, text: str) -> bytes:
        digest = hashlib.blake2b(self._key_prefix, digest_size=16)
        digest.update(text.encode("utf-8"))
        return digest.digest()

    # -- scoring ----------------------------------------------------------------------------

    def score(self, pairs: Sequence[EmbeddingPair]) -> np.ndarray:  # type: ignore[override]
        """Embed the uncached documents of one batch in one forward pass; return cosines (float32).

        Pairs with the same document digest are embedded once. Each pair counts
        as one cache lookup: a hit when its embedding was cached at encoding
        time or is cached now, else a miss.
        """
        vectors: list[np.ndarray | None] = []
        to_embed: dict[bytes, EmbeddingPair] = {}
        for pair in pairs:
            vector = pair.embedding
            if vector is not None:
                self.cache.record_hit(pair.digest)
            else:
                vector = self.cache.get(pair.digest)
                if vector is None and pair.digest not in to_embed:
                    to_embed[pair.digest] = pair
            vectors.append(vector)

        if to_embed:
            pending = list(to_embed.values())
            types = None
            if self._uses_token_types:
                types = [pair.token_type_ids or [0] * len(pair.input_ids) for pair in pending]
            embedded = self._embed([pair.input_ids for pair in pending], types)
            fresh = {pair.digest: embedded[row] for row, pair in enumerate(pending)}
            for digest, vector in fresh.items():
                self.cache.put(digest, vector)
            vectors = [fresh[pair.digest] if vector is None else vector for pair, vector in zip(pairs, vectors)]

        scores = np.empty(len(pairs), dtype=np.float32)
        for row, (pair, vector) in enumerate(zip(pairs, vectors)):
            scores[row] = float(np.dot(pair.query.vector, vector))  # type: ignore[arg-type]
        logger.debug("embedded documents=%d pairs=%d cache_entries=%d", len(to_embed), len(pairs), len(self.cache))
        return scores

    def _embed(self, input_ids: list[list[int]], token_type_ids: list[list[int]] | None) -> np.ndarray:
        """Run one padded batch through the bi-encoder; return L2-normalized float32 embeddings."""
        torch = self._torch
        width = max(len(ids) for ids in input_ids)
        ids_array = np.full((len(input_ids), width), self._pad_id, dtype=np.int64)
        attention = np.zeros((len(input_ids), width), dtype=np.int64)
        for row, ids in enumerate(input_ids):
            ids_array[row, : len(ids)] = ids
            attention[row, : len(ids)] = 1
        features: dict[str, Any] = {
            "input_ids": torch.from_numpy(ids_array).to(self.device),
            "attention_mask": torch.from_numpy(attention).to(self.device),
            "modality": "text",
        }
        if token_type_ids is not None:
            types_array = np.zeros((len(input_ids), width), dtype=np.int64)
            for row, types in enumerate(token_type_ids):
                types_array[row, : len(types)] = types
            features["token_type_ids"] = torch.from_numpy(types_array).to(self.device)
        with self._forward_lock, torch.inference_mode():
            embeddings = self._encoder(features)["sentence_embedding"]
            # Models without a Normalize module return unnormalized vectors; the
            # cosine needs unit length either way.
            embeddings = torch.nn.functional.normalize(embeddings.float(), p=2, dim=1)
        return embeddings.cpu().numpy()

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Return the cosines unchanged (float64): they are already bounded to [-1, 1]."""
        return np.array(raw, dtype=np.float64)

    def warm_up(self) -> float:
        """Embed a short and a full-length document without caching them; return the seconds it took."""
        started = time.perf_counter()
        filler = "warm up " * self.max_length
        for text in ("a short warm-up document", filler):
            with self._tokenizer_lock:
                ids = self.tokenizer([text] * 4, truncation=True, max_length=self.max_length,
                                     return_attention_mask=False, return_token_type_ids=self._uses_token_types)
            types = ids["token_type_ids"] if self._uses_token_types else None
            self._embed(ids["input_ids"], types)
        return time.perf_counter() - started


def _load_sentence_transformer(name: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    check_model_path(name)
    path = Path(name).expanduser()
    marker = read_model_type(path) if path.is_dir() else None
    if marker == "CrossEncoder":
        raise ModelLoadError(
            f"model {name!r} is a CrossEncoder (config_sentence_transformers.json model_type), not a "
            "bi-encoder; pass --model-kind cross-encoder or auto"
        )
    try:
        return SentenceTransformer(str(path) if path.exists() else name, device=device)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"model {name!r} could not be loaded as a SentenceTransformer: {load_failure_reason(error)}. "
            "Without hub access, "
            "pass --model with a local SentenceTransformer folder"
        ) from error


def read_model_type(folder: Path) -> str | None:
    """Return ``model_type`` from ``config_sentence_transformers.json`` in ``folder``, if it has one."""
    try:
        config = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("model_type") if isinstance(config, dict) else None
    return value if isinstance(value, str) else None


__all__ = [
    "DEFAULT_EMBEDDING_CACHE_SIZE",
    "BiEncoderModel",
    "EmbeddingCache",
    "EmbeddingPair",
    "QueryEmbedding",
    "read_model_type",
]
