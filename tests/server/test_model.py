"""Model loading, encoding and scoring against sentence-transformers' CrossEncoder."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from rerank_harness.models import build_tiny_cross_encoder
from rerank_server.model import CrossEncoderModel, ModelLoadError, ModelSettings

FIDELITY_TOLERANCE = 1e-5


def _raw_scores(model: CrossEncoderModel, query: str, documents: list[str], truncation: str) -> np.ndarray:
    encoded = model.encode(query, documents, truncation=truncation)
    return model.score(encoded.pairs)


def test_scores_equal_cross_encoder_predict(tiny_model, reference_encoder, texts):
    documents = [texts["D_REL"], texts["D_IRR"], texts["D_MID"], texts["D_REL2"]]
    served = _raw_scores(tiny_model, texts["Q"], documents, "longest_first")
    reference = reference_encoder.predict([(texts["Q"], document) for document in documents])
    assert np.abs(served - reference).max() <= FIDELITY_TOLERANCE


def test_longest_first_matches_predict_on_overlong_pairs(tiny_model, reference_encoder):
    pairs = [("cat " * 300, "dog " * 300), ("cat " * 600, "dogs nap in the sun"), ("kettle", "scale " * 900)]
    served = np.concatenate([_raw_scores(tiny_model, query, [document], "longest_first")
                             for query, document in pairs])
    reference = reference_encoder.predict(pairs)
    assert np.abs(served - reference).max() <= FIDELITY_TOLERANCE


def test_document_first_keeps_query_whole(tiny_model, tokenizer_ids):
    encoded = tiny_model.encode("how to descale a kettle", ["scale " * 900], truncation="document_first")
    pair = encoded.pairs[0]
    assert pair.length == 512
    assert pair.input_ids[: len(tokenizer_ids)] == tokenizer_ids
    assert encoded.documents_truncated == 1
    query_tokens = len(tokenizer_ids) - 1  # without [CLS]
    assert encoded.tokens_truncated == 900 - (512 - 3 - query_tokens)
    assert encoded.query_truncated is False


@pytest.fixture
def tokenizer_ids(tiny_model) -> list[int]:
    return tiny_model.tokenizer("how to descale a kettle")["input_ids"][:-1]


def test_query_longer_than_half_is_cut(tiny_model):
    encoded = tiny_model.encode("cat " * 600, ["dogs nap in the sun"], truncation="document_first")
    assert encoded.query_truncated is True
    assert encoded.pairs[0].length <= tiny_model.max_length
    assert encoded.documents_truncated == 0


def test_pooling_splits_long_document_into_chunks(tiny_model):
    encoded = tiny_model.encode("kettle", ["word " * 2000], truncation="document_first", pooling="max")
    assert len(encoded.pairs) > 1
    assert {pair.document_index for pair in encoded.pairs} == {0}
    assert max(pair.length for pair in encoded.pairs) <= tiny_model.max_length


def test_document_chars_cap_applies_before_tokenization(tiny_model):
    long_text = "river stone " * 90000
    capped = tiny_model.encode("q", [long_text], truncation="document_first", max_document_chars=20_000)
    cut = tiny_model.encode("q", [long_text[:20_000]], truncation="document_first")
    assert capped.pairs[0].input_ids == cut.pairs[0].input_ids


def test_normalized_keeps_order_without_new_ties(tiny_model):
    # float64 keeps sigmoid values apart up to raw scores of about 36; beyond that both round to 1.0.
    raw = np.array([9.0, 8.999999, -3.0, -30.0, 30.0, 29.0])
    normalized = tiny_model.normalize(raw)
    assert list(np.argsort(-raw, kind="stable")) == list(np.argsort(-normalized, kind="stable"))
    assert len(set(normalized.tolist())) == len(raw)


def test_three_label_model_rejected_at_load(tmp_path):
    folder = build_tiny_cross_encoder(tmp_path / "three-labels", num_labels=3)
    expected = (f"model {str(folder)!r} has 3 output labels, but a reranker needs exactly 1 (one relevance "
                "score per pair); pass --model with a one-label cross-encoder such as "
                "cross-encoder/ms-marco-MiniLM-L6-v2")
    with pytest.raises(ModelLoadError, match=re.escape(expected)):
        CrossEncoderModel(ModelSettings(model=str(folder), device="cpu"))


def test_missing_model_folder_names_the_path(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelLoadError, match=re.escape(f"model folder {missing!r} not found")):
        CrossEncoderModel(ModelSettings(model=missing, device="cpu"))


def test_unknown_hub_id_offline_names_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=re.escape("model 'rerank-test/no-such-model' could not be loaded")):
        CrossEncoderModel(ModelSettings(model="rerank-test/no-such-model", device="cpu"))


def test_max_length_above_positions_is_clamped(tiny_model_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="rerank_server.model"):
        model = CrossEncoderModel(ModelSettings(model=str(tiny_model_dir), device="cpu", max_length=1024))
    assert model.max_length == 512
    assert "--max-length 1024 exceeds the 512 positions" in caplog.text


def test_max_length_below_positions_is_kept(tiny_model_dir):
    model = CrossEncoderModel(ModelSettings(model=str(tiny_model_dir), device="cpu", max_length=128))
    encoded = model.encode("q", ["word " * 400], truncation="document_first")
    assert model.max_length == 128
    assert encoded.pairs[0].length == 128
