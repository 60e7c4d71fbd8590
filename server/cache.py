"""Bounded LRU cache of raw scores, keyed by model, query, document and cut settings.

Keys hash the texts with BLAKE2b, so the cache stores 16-byte digests, not texts.
The next page of the same query then costs nothing for documents scored before.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict


class ScoreCache:
    """Thread-safe LRU of raw scores with a fixed capacity in entries."""

    def __init__(self, capacity: int, model: str) -> None:
        self.capacity = capacity
        self._model = model
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def _key(self, query: str, text: str, truncation: str, pooling: str | None) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        for part in (self._model, truncation, pooling or "", query, text):
            encoded = part.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
        return digest.digest()

    def get(self, query: str, text: str, truncation: str, pooling: str | None) -> float | None:
        key = self._key(query, text, truncation, pooling)
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, query: str, text: str, truncation: str, pooling: str | None, score: float) -> None:
        key = self._key(query, text, truncation, pooling)
        with self._lock:
            self._entries[key] = score
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
