"""Fixtures of the quality tests: a tiny random bi-encoder and a real bi-encoder sidecar."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

TINY_HIDDEN_SIZE = 32


def build_tiny_bi_encoder(target: Path, *, seed: int = 0) -> Path:
    """Write a random 2-layer BERT bi-encoder (hidden size 32, mean pooling, normalized) to ``target``.

    It uses the real BERT uncased vocabulary of all-MiniLM-L6-v2, so texts
    tokenize as they do for the real model, and it is saved with
    ``SentenceTransformer.save`` like a hub bi-encoder.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rerank_harness.models import minilm_model_dir

    target.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f"{target.name}-hf"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_model_dir()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=TINY_HIDDEN_SIZE, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
                        initializer_range=0.2)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    transformer = Transformer(str(staging), max_seq_length=128)
    encoder = SentenceTransformer(modules=[transformer, Pooling(TINY_HIDDEN_SIZE, pooling_mode="mean"), Normalize()],
                                  device="cpu")
    encoder.save(str(target))
    return target


@pytest.fixture(scope="session")
def tiny_bi_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bi_encoder(tmp_path_factory.mktemp("tiny-bi-encoder") / "model")


@pytest.fixture(scope="session")
def reference_bi_encoder(tiny_bi_encoder_dir: Path):
    """sentence-transformers' own SentenceTransformer on the tiny bi-encoder, the reference for scores."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_bi_encoder_dir), device="cpu")


@pytest.fixture(scope="session")
def bi_encoder_sidecar(tiny_bi_encoder_dir: Path) -> Iterator[object]:
    """One real ``rerank-server`` process serving the tiny bi-encoder, kind detected from the folder."""
    from rerank_harness.sidecar import SidecarProcess

    process = SidecarProcess(tiny_bi_encoder_dir, args=["--model-kind", "auto", "--log-level", "DEBUG"]).start()
    yield process
    process.stop()
