"""ONNX Runtime backend: scores equal to torch, the export cache, the load-time check and the command."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

from rerank_server import export  # noqa: E402
from rerank_server.config import ServerConfig  # noqa: E402
from rerank_server.loading import load_model  # noqa: E402
from rerank_server.model import ModelLoadError, ModelSettings  # noqa: E402
from rerank_server.onnx_backend import OnnxCrossEncoderModel  # noqa: E402

FIDELITY_TOLERANCE = 1e-5
LONG_DOCUMENT = "Limescale builds up where hard water is boiled again and again. " * 60


@pytest.fixture(scope="module")
def onnx_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's tiny model, so exports written beside it stay out of other tests."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("onnx") / "tiny"))


@pytest.fixture(scope="module")
def onnx_model(onnx_model_dir: Path) -> OnnxCrossEncoderModel:
    return OnnxCrossEncoderModel(ModelSettings(model=str(onnx_model_dir), device="cpu"))


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny"))


def _documents(texts: dict[str, str]) -> list[str]:
    return [texts["D_REL"], texts["D_IRR"], texts["D_MID"], texts["D_REL2"], texts["D_IRR2"], LONG_DOCUMENT]


def test_onnx_scores_equal_torch_backend(onnx_model, tiny_model, texts):
    encoded = onnx_model.encode(texts["Q"], _documents(texts), truncation="document_first")

    served = onnx_model.score(encoded.pairs)
    reference = tiny_model.score(encoded.pairs)

    assert served.dtype == np.float32
    assert served.shape == (6,)
    assert np.abs(served - reference).max() <= FIDELITY_TOLERANCE


def test_onnx_scores_equal_cross_encoder_predict(onnx_model, reference_encoder, texts):
    documents = _documents(texts)[:5]
    encoded = onnx_model.encode(texts["Q"], documents, truncation="longest_first")

    served = onnx_model.score(encoded.pairs)
    reference = reference_encoder.predict([(texts["Q"], document) for document in documents])

    assert np.abs(served - reference).max() <= FIDELITY_TOLERANCE


def test_onnx_score_of_pair_independent_of_batch(onnx_model, texts):
    pairs = onnx_model.encode(texts["Q"], _documents(texts), truncation="document_first").pairs

    batched = onnx_model.score(pairs)
    alone = np.concatenate([onnx_model.score([pair]) for pair in pairs])

    assert np.abs(batched - alone).max() <= FIDELITY_TOLERANCE


def test_onnx_model_reports_backend_and_check(onnx_model, onnx_model_dir):
    report = onnx_model.export_report

    assert onnx_model.backend == "onnx"
    assert onnx_model.precision == "fp32"
    assert report["max_abs_diff_fp32"] <= FIDELITY_TOLERANCE
    assert Path(report["path"]).parent.parent == onnx_model_dir / "onnx"
    assert Path(report["path"]).name == export.FP32_FILE


def test_export_cache_reused_on_second_load(model_copy):
    first = OnnxCrossEncoderModel(ModelSettings(model=str(model_copy), device="cpu"))
    path = Path(first.export_report["path"])
    written_at = path.stat().st_mtime_ns

    second = OnnxCrossEncoderModel(ModelSettings(model=str(model_copy), device="cpu"))

    assert first.export_report["reused"] is False
    assert first.export_report["torch_loaded"] is True
    assert second.export_report["reused"] is True
    assert second.export_report["torch_loaded"] is False
    assert second.export_report["path"] == str(path)
    assert path.stat().st_mtime_ns == written_at
    assert [entry.name for entry in (model_copy / "onnx").iterdir()] == [path.parent.name]


def test_fast_start_matches_torch_load(onnx_model_dir, onnx_model, tiny_model, texts):
    fast = OnnxCrossEncoderModel(ModelSettings(model=str(onnx_model_dir), device="cpu"))
    documents = _documents(texts)
    pairs = fast.encode(texts["Q"], documents, truncation="document_first").pairs
    raw = fast.score(pairs)

    assert fast.export_report["torch_loaded"] is False
    assert fast.max_length == tiny_model.max_length
    assert fast.max_query_tokens == tiny_model.max_query_tokens
    assert fast.activation == tiny_model.activation
    assert [pair.input_ids for pair in pairs] == [
        pair.input_ids for pair in tiny_model.encode(texts["Q"], documents, truncation="document_first").pairs]
    assert np.abs(raw - tiny_model.score(pairs)).max() <= FIDELITY_TOLERANCE
    assert np.abs(fast.normalize(raw) - tiny_model.normalize(raw)).max() == 0.0


def test_fast_start_skipped_for_other_max_length(onnx_model_dir, onnx_model):
    other = OnnxCrossEncoderModel(ModelSettings(model=str(onnx_model_dir), device="cpu", max_length=128))

    assert other.export_report["torch_loaded"] is True
    assert other.export_report["reused"] is True
    assert other.max_length == 128


def test_fast_start_skipped_after_file_change(model_copy):
    OnnxCrossEncoderModel(ModelSettings(model=str(model_copy), device="cpu"))
    config = model_copy / "config.json"
    config.write_text(config.read_text() + "\n")

    again = OnnxCrossEncoderModel(ModelSettings(model=str(model_copy), device="cpu"))

    assert again.export_report["torch_loaded"] is True
    assert again.export_report["reused"] is True


def test_export_metadata_records_versions_and_check(onnx_model):
    folder = Path(onnx_model.export_report["path"]).parent

    metadata = json.loads((folder / export.METADATA_FILE).read_text())

    assert metadata["key"] == folder.name
    assert metadata["opset"] == str(export.ONNX_OPSET)
    assert metadata["max_abs_diff_fp32"] == onnx_model.export_report["max_abs_diff_fp32"]
    assert metadata["fused"] is True


def test_export_goes_to_cache_dir_when_given(model_copy, tmp_path):
    cache_dir = tmp_path / "cache"

    model = OnnxCrossEncoderModel(ModelSettings(model=str(model_copy), device="cpu"), cache_dir=cache_dir)

    assert Path(model.export_report["path"]).is_relative_to(cache_dir)
    assert not (model_copy / "onnx").exists()


def test_export_root_of_hub_id_is_cache_dir(tmp_path):
    root = export.export_root("cross-encoder/ms-marco-MiniLM-L6-v2", tmp_path)

    assert root == tmp_path / "cross-encoder--ms-marco-MiniLM-L6-v2"


def test_default_cache_dir_follows_env(tmp_path):
    assert export.default_cache_dir({export.CACHE_DIR_ENV: str(tmp_path)}) == tmp_path
    assert export.default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "rerank-sidecar" / "onnx"


def test_changed_export_rejected_at_load(model_copy):
    first = OnnxCrossEncoderModel(ModelSettings(model=str(model_copy), device="cpu"))
    path = Path(first.export_report["path"])
    graph = onnx.load(str(path))
    bias = next(tensor for tensor in graph.graph.initializer if tensor.name.endswith("classifier.bias"))
    values = onnx.numpy_helper.to_array(bias) + 0.5
    bias.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), bias.name))
    onnx.save(graph, str(path))

    with pytest.raises(ModelLoadError, match=r"differs from torch by 0\.5 on sample pairs, over the tolerance "
                                             r"1e-04; not serving it"):
        OnnxCrossEncoderModel(ModelSettings(model=str(model_copy), device="cpu"))


def test_unreadable_export_rejected_at_load(model_copy):
    first = OnnxCrossEncoderModel(ModelSettings(model=str(model_copy), device="cpu"))
    Path(first.export_report["path"]).write_bytes(b"not an onnx file")

    with pytest.raises(ModelLoadError, match=r"ONNX Runtime could not load .*model\.onnx: .* Export it again "
                                             r"with rerank-onnx-export --model .* --force"):
        OnnxCrossEncoderModel(ModelSettings(model=str(model_copy), device="cpu"))


def test_force_export_replaces_changed_file(model_copy):
    first = OnnxCrossEncoderModel(ModelSettings(model=str(model_copy), device="cpu"))
    path = Path(first.export_report["path"])
    path.write_bytes(b"not an onnx file")

    second = OnnxCrossEncoderModel(ModelSettings(model=str(model_copy), device="cpu"), force_export=True)

    assert second.export_report["reused"] is False
    assert second.export_report["max_abs_diff_fp32"] <= FIDELITY_TOLERANCE


def test_int8_model_serves_quantized_file(onnx_model_dir, onnx_model, texts):
    quantized = OnnxCrossEncoderModel(ModelSettings(model=str(onnx_model_dir), device="cpu"), quantize="int8")
    pairs = quantized.encode(texts["Q"], _documents(texts), truncation="document_first").pairs

    scores = quantized.score(pairs)

    assert quantized.precision == "int8"
    assert Path(quantized.export_report["path"]).name == export.INT8_FILE
    assert quantized.export_report["max_abs_diff_fp32"] <= FIDELITY_TOLERANCE
    assert np.all(np.isfinite(scores))
    # Dynamic int8 moves scores by design; the tiny model's logits span about 1.
    assert np.abs(scores - onnx_model.score(pairs)).max() < 0.2


def test_unknown_quantization_rejected(onnx_model_dir):
    with pytest.raises(ModelLoadError, match=re.escape("quantization 'int4' is invalid; expected one of int8")):
        OnnxCrossEncoderModel(ModelSettings(model=str(onnx_model_dir), device="cpu"), quantize="int4")


def test_cuda_without_gpu_rejected(onnx_model_dir):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible; this test covers machines without one")

    with pytest.raises(ModelLoadError, match=re.escape("--device cuda was requested but no CUDA device is visible")):
        OnnxCrossEncoderModel(ModelSettings(model=str(onnx_model_dir), device="cuda"))


def test_load_model_picks_onnx_backend(onnx_model_dir):
    model = load_model(ServerConfig(model=str(onnx_model_dir), backend="onnx", device="cpu"))

    assert isinstance(model, OnnxCrossEncoderModel)
    assert model.export_report["reused"] is True


def test_export_command_prints_report(onnx_model_dir, capsys):
    status = export.main(["--model", str(onnx_model_dir)])

    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert report["precision"] == "fp32"
    assert report["reused"] is True
    assert report["max_abs_diff_fp32"] <= FIDELITY_TOLERANCE


def test_export_command_fails_on_missing_model(tmp_path, capsys):
    status = export.main(["--model", str(tmp_path / "missing")])

    assert status == 3
    assert "rerank-onnx-export: model folder" in capsys.readouterr().err


@pytest.mark.slow
def test_sidecar_onnx_backend_scores_equal_predict(onnx_model_dir, onnx_model, reference_encoder, texts):
    from rerank_client import RerankClient
    from rerank_harness.sidecar import SidecarProcess

    documents = _documents(texts)[:5]
    reference = reference_encoder.predict([(texts["Q"], document) for document in documents])

    with SidecarProcess(onnx_model_dir, args=["--backend", "onnx", "--device", "cpu"]) as sidecar:
        with RerankClient(sidecar.target, timeout=30.0) as client:
            results = client.rerank(texts["Q"], documents)
        log = sidecar.log_text()

    served = np.zeros(len(documents))
    for result in results:
        served[result.index] = result.score
    assert np.abs(served - reference).max() <= FIDELITY_TOLERANCE
    assert [result.index for result in results] == list(np.argsort(-reference, kind="stable"))
    assert "backend=onnx" in log
    assert "onnx export checked against torch" in log
