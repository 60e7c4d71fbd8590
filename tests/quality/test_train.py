"""rerank-train end to end on the tiny cross-encoder: a few steps, checkpoints, resume, model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rerank_quality import train_cli

PAIRS = (
    "query\tdocument\tlabel\n"
    "how to descale a kettle\tFill the kettle with vinegar and water, boil, then rinse.\t1\n"
    "how to descale a kettle\tThe museum's east wing reopens after the roof repair.\t0\n"
    "limescale removal\tCitric acid removes limescale from kettles.\t1\n"
    "limescale removal\tLibrary opening hours change during the winter months.\t0\n"
)


@pytest.fixture
def pair_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.tsv"
    path.write_text(PAIRS, encoding="utf-8")
    return path


def run_train(base: Path, pairs: Path, output: Path, *extra: str) -> int:
    return train_cli.main(["--base", str(base), "--pairs", str(pairs), "--output", str(output),
                           "--batch-size", "2", "--save-steps", "2", "--logging-steps", "1", "--max-length", "64",
                           "--no-progress", "--log-level", "WARNING", *extra])


def test_train_few_steps_writes_model_and_card(tiny_model_dir: Path, pair_file: Path, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    output = tmp_path / "trained"

    assert run_train(tiny_model_dir, pair_file, output, "--max-steps", "3") == 0

    log = json.loads((output / "training_log.json").read_text())
    assert log["steps"] == 3
    assert log["stopped_by"] == "--max-steps 3"
    assert [row["step"] for row in log["loss_curve"]] == [1, 2, 3]
    assert (output / "checkpoints" / "checkpoint-2").is_dir()
    card = (output / "README.md").read_text()
    for heading in ("## Training data", "## Hyper-parameters", "## Loss curve", "## Evaluation"):
        assert heading in card
    assert "- pairs: 4" in card
    assert "| learning_rate | 5e-05 |" in card
    trained = CrossEncoder(str(output), device="cpu")
    scores = trained.predict([("how to descale a kettle", "Use vinegar.")])
    assert np.isfinite(scores).all()


def test_train_changes_weights(tiny_model_dir: Path, pair_file: Path, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    output = tmp_path / "trained"
    pair = ("how to descale a kettle", "Fill the kettle with vinegar and water, boil, then rinse.")
    before = CrossEncoder(str(tiny_model_dir), device="cpu").predict([pair])

    assert run_train(tiny_model_dir, pair_file, output, "--max-steps", "2", "--learning-rate", "1e-3") == 0

    after = CrossEncoder(str(output), device="cpu").predict([pair])
    assert abs(float(after[0]) - float(before[0])) > 1e-6


def test_train_resume_continues_from_checkpoint(tiny_model_dir: Path, pair_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "trained"
    assert run_train(tiny_model_dir, pair_file, output, "--max-steps", "2") == 0

    assert run_train(tiny_model_dir, pair_file, output, "--max-steps", "4", "--resume") == 0

    log = json.loads((output / "training_log.json").read_text())
    assert log["steps"] == 4
    assert log["resumed_from"].endswith("checkpoint-2")
    assert [row["step"] for row in log["loss_curve"]] == [1, 2, 3, 4]


def test_train_resume_without_checkpoint_fails(tiny_model_dir: Path, pair_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert run_train(tiny_model_dir, pair_file, tmp_path / "fresh", "--max-steps", "1", "--resume") == 1

    assert "has no checkpoint-<step> folder; start without --resume" in capsys.readouterr().err


def test_train_rejects_invalid_label(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("query\tdocument\tlabel\nq\td\tyes\n", encoding="utf-8")

    assert run_train(tiny_model_dir, path, tmp_path / "out", "--max-steps", "1") == 1

    assert f"{path}:2: label 'yes' is not a number" in capsys.readouterr().err


def test_train_mse_loss_for_soft_labels(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "soft.jsonl"
    path.write_text("\n".join(json.dumps({"sentence_0": "kettle", "sentence_1": f"text {index}",
                                          "label": index / 4}) for index in range(5)) + "\n", encoding="utf-8")
    output = tmp_path / "soft"

    assert run_train(tiny_model_dir, path, output, "--max-steps", "2", "--loss", "mse") == 0

    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["hyper_parameters"]["loss"] == "mse"
    assert summary["data"]["mean label"] == 0.5
