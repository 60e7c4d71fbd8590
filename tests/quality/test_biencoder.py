"""The bi-encoder model kind: detection, scores equal to sentence-transformers, embedding cache."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from rerank_server.biencoder import BiEncoderModel, EmbeddingCache
from rerank_server.loading import detect_model_kind
from rerank_server.model import ModelLoadError, ModelSettings

QUERY = "how to descale a kettle"
DOCUMENTS = [
    "To descale a kettle, fill it with equal parts water and white vinegar, boil it, then rinse twice.",
    "The museum's east wing reopens after the roof repair.",
    "Citric acid dissolved in warm water removes limescale from kettles and coffee makers.",
    "Kettles collect mineral scale over time in hard-water areas.",
]


def reference_cosines(encoder, query: str, documents: list[str]) -> np.ndarray:
    """Cosines from sentence-transformers' own encode_query and encode_document."""
    query_vector = encoder.encode_query(query, normalize_embeddings=True)
    return encoder.encode_document(documents, normalize_embeddings=True) @ query_vector


@pytest.fixture(scope="module")
def bi_encoder(tiny_bi_encoder_dir: Path) -> BiEncoderModel:
    return BiEncoderModel(ModelSettings(model=str(tiny_bi_encoder_dir), device="cpu"), cache_size=1000)


# -- kind detection ---------------------------------------------------------------------------


def test_detect_kind_bi_encoder_folder(tiny_bi_encoder_dir: Path) -> None:
    assert detect_model_kind(str(tiny_bi_encoder_dir)) == ("bi-encoder", "modules.json has a Pooling module")


def test_detect_kind_cross_encoder_folder(tiny_model_dir: Path) -> None:
    kind, reason = detect_model_kind(str(tiny_model_dir))

    assert kind == "cross-encoder"
    assert reason == "config_sentence_transformers.json model_type is CrossEncoder"


def test_detect_kind_sequence_classification_without_markers(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (tmp_path / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Pooling"}]))

    assert detect_model_kind(str(tmp_path))[0] == "cross-encoder"


def test_detect_kind_hub_id_defaults_to_cross_encoder() -> None:
    assert detect_model_kind("cross-encoder/ms-marco-MiniLM-L6-v2") == (
        "cross-encoder", "not a local folder, so the default applies")


def test_bi_encoder_rejects_cross_encoder_folder(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=re.escape("is a CrossEncoder (config_sentence_transformers.json")):
        BiEncoderModel(ModelSettings(model=str(tiny_model_dir), device="cpu"))


# -- in-process scoring -----------------------------------------------------------------------


def test_bi_encoder_interface_fields(bi_encoder: BiEncoderModel) -> None:
    assert (bi_encoder.model_kind, bi_encoder.num_labels, bi_encoder.activation) == ("bi-encoder", 1, "identity")
    assert bi_encoder.max_length == 128


def test_bi_encoder_scores_equal_reference(bi_encoder: BiEncoderModel, reference_bi_encoder) -> None:
    encoded = bi_encoder.encode(QUERY, DOCUMENTS, truncation="document_first")

    scores = bi_encoder.score(encoded.pairs)

    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, reference_cosines(reference_bi_encoder, QUERY, DOCUMENTS), atol=1e-5)


def test_bi_encoder_scores_independent_of_batch_mates(bi_encoder: BiEncoderModel) -> None:
    # Pairs of two requests share one batch, as the batcher cuts them.
    first = bi_encoder.encode(QUERY, DOCUMENTS[:2], truncation="document_first").pairs
    second = bi_encoder.encode("kettle scale", DOCUMENTS[2:] + ["A fresh text that is in no cache yet."],
                               truncation="document_first").pairs

    together = bi_encoder.score(first + second)

    np.testing.assert_allclose(together[:2], bi_encoder.score(first), atol=1e-6)
    np.testing.assert_allclose(together[2:], bi_encoder.score(second), atol=1e-6)


def test_bi_encoder_normalize_is_identity(bi_encoder: BiEncoderModel) -> None:
    raw = np.array([0.25, -0.5], dtype=np.float64)

    np.testing.assert_array_equal(bi_encoder.normalize(raw), raw)


def test_bi_encoder_cache_hits_on_repeat(tiny_bi_encoder_dir: Path) -> None:
    model = BiEncoderModel(ModelSettings(model=str(tiny_bi_encoder_dir), device="cpu"), cache_size=100)
    first = model.encode(QUERY, DOCUMENTS, truncation="document_first")
    model.score(first.pairs)

    second = model.encode("another query", DOCUMENTS, truncation="document_first")
    model.score(second.pairs)

    assert (model.cache.hits, model.cache.misses) == (4, 4)
    assert [pair.length for pair in second.pairs] == [1, 1, 1, 1]
    assert second.tokens == 0


def test_bi_encoder_duplicate_documents_embedded_once(tiny_bi_encoder_dir: Path) -> None:
    model = BiEncoderModel(ModelSettings(model=str(tiny_bi_encoder_dir), device="cpu"), cache_size=100)
    encoded = model.encode(QUERY, [DOCUMENTS[0], DOCUMENTS[0]], truncation="document_first")

    scores = model.score(encoded.pairs)

    assert scores[0] == scores[1]
    assert len(model.cache) == 1


def test_bi_encoder_cache_size_zero_disables(tiny_bi_encoder_dir: Path) -> None:
    model = BiEncoderModel(ModelSettings(model=str(tiny_bi_encoder_dir), device="cpu"), cache_size=0)
    for _ in range(2):
        model.score(model.encode(QUERY, DOCUMENTS, truncation="document_first").pairs)

    assert (model.cache.hits, model.cache.misses, len(model.cache)) == (0, 8, 0)


def test_bi_encoder_long_document_truncated(bi_encoder: BiEncoderModel, reference_bi_encoder) -> None:
    long_text = "limescale " * 400

    encoded = bi_encoder.encode(QUERY, [long_text], truncation="longest_first")

    assert encoded.documents_truncated == 1
    assert encoded.pairs[0].length == bi_encoder.max_length
    np.testing.assert_allclose(bi_encoder.score(encoded.pairs),
                               reference_cosines(reference_bi_encoder, QUERY, [long_text]), atol=1e-5)


def test_bi_encoder_pooling_splits_long_document(bi_encoder: BiEncoderModel) -> None:
    long_text = " ".join(f"word{index}" for index in range(300))

    encoded = bi_encoder.encode(QUERY, [DOCUMENTS[0], long_text], truncation="document_first", pooling="max")

    owners = [pair.document_index for pair in encoded.pairs]
    assert owners[0] == 0
    assert owners.count(1) > 1
    assert all(pair.length <= bi_encoder.max_length for pair in encoded.pairs)


def test_embedding_cache_evicts_least_recent() -> None:
    cache = EmbeddingCache(2)
    for key in (b"a", b"b"):
        cache.put(key, np.ones(2, dtype=np.float32))
    cache.get(b"a")
    cache.put(b"c", np.ones(2, dtype=np.float32))

    assert cache.peek(b"b") is None
    assert cache.peek(b"a") is not None


def test_embedding_cache_metrics_in_server_registry(tiny_bi_encoder_dir: Path) -> None:
    from rerank_server.metrics import ServerMetrics

    model = BiEncoderModel(ModelSettings(model=str(tiny_bi_encoder_dir), device="cpu"), cache_size=100)
    metrics = ServerMetrics()
    model.register_metrics(metrics.registry)
    for query in (QUERY, "kettle"):
        model.score(model.encode(query, DOCUMENTS[:3], truncation="document_first").pairs)

    sample = metrics.registry.get_sample_value
    assert sample("rerank_embedding_cache_total", {"result": "hit"}) == 3.0
    assert sample("rerank_embedding_cache_total", {"result": "miss"}) == 3.0
    assert sample("rerank_embedding_cache_entries") == 3.0


# -- real sidecar process ---------------------------------------------------------------------


def test_sidecar_bi_encoder_model_info(bi_encoder_sidecar) -> None:
    from rerank_client import RerankClient

    with RerankClient(bi_encoder_sidecar.target, timeout=30.0) as client:
        info = client.model_info()

    assert (info.model_kind, info.num_labels, info.activation, info.max_length) == ("bi-encoder", 1, "identity", 128)


def test_sidecar_bi_encoder_scores_equal_reference(bi_encoder_sidecar, reference_bi_encoder) -> None:
    from rerank_client import RerankClient

    with RerankClient(bi_encoder_sidecar.target, timeout=30.0) as client:
        results = client.rerank(QUERY, DOCUMENTS)

    expected = reference_cosines(reference_bi_encoder, QUERY, DOCUMENTS)
    assert [result.index for result in results] == list(np.argsort(-expected, kind="stable"))
    for result in results:
        assert result.score == pytest.approx(float(expected[result.index]), abs=1e-5)


def test_sidecar_bi_encoder_cache_hits_on_repeat(bi_encoder_sidecar) -> None:
    from rerank_client import RerankClient

    documents = [f"{text} (cache check)" for text in DOCUMENTS]
    with RerankClient(bi_encoder_sidecar.target, timeout=30.0) as client:
        first = client.rerank(QUERY, documents)
        second = client.rerank("a different query about kettles", documents)

    assert sorted(result.index for result in first) == sorted(result.index for result in second)
    # The server logs one DEBUG line per batch; the second request embeds no document.
    deadline = time.monotonic() + 5.0
    log = bi_encoder_sidecar.log_text()
    while "embedded documents=0 pairs=4" not in log and time.monotonic() < deadline:
        time.sleep(0.1)
        log = bi_encoder_sidecar.log_text()
    assert "embedded documents=4 pairs=4" in log
    assert "embedded documents=0 pairs=4" in log


def test_sidecar_auto_kind_keeps_cross_encoder_default(sidecar_client) -> None:
    assert sidecar_client.model_info().model_kind == "cross-encoder"


def test_sidecar_bi_encoder_flag_on_copied_folder(tiny_bi_encoder_dir: Path, tmp_path: Path) -> None:
    from rerank_client import RerankClient
    from rerank_harness.sidecar import SidecarProcess

    # Without modules.json and config_sentence_transformers.json, auto would pick the
    # cross-encoder; the flag makes the folder a bi-encoder (sentence-transformers adds
    # mean pooling).
    folder = tmp_path / "plain"
    shutil.copytree(tiny_bi_encoder_dir, folder, ignore=shutil.ignore_patterns("modules.json",
                                                                               "config_sentence_transformers.json"))
    with SidecarProcess(folder, args=["--model-kind", "bi-encoder", "--warmup", "false"]) as process, \
            RerankClient(process.target, timeout=30.0) as client:
        assert client.model_info().model_kind == "bi-encoder"
        assert len(client.rerank(QUERY, DOCUMENTS)) == 4
