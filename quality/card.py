"""Model card (README.md) of a model trained by ``rerank-train``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .measures import MEASURE_NAMES
from .train import TrainOutcome

_MAX_CURVE_ROWS = 30


def render_card(*, settings: dict[str, Any], data: dict[str, Any], outcome: TrainOutcome,
                evaluation: dict[str, Any] | None, hardware: str) -> str:
    """Return the Markdown model card: data size, hyper-parameters, loss curve and evaluation."""
    lines = [
        "# Cross-encoder trained with rerank-train",
        "",
        f"A one-label CrossEncoder fine-tuned from `{settings['base']}`. It outputs raw logits (identity "
        "activation). Serve it with `rerank-server --model <this folder> --model-kind cross-encoder`.",
        "",
        "## Training data",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in data.items()]
    lines += ["", "## Hyper-parameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in settings.items()]
    lines += [
        "",
        "## Run",
        "",
        f"- steps: {outcome.steps} of {outcome.planned_steps} planned ({outcome.epochs_done:g} epochs)",
        f"- wall time: {outcome.seconds:.0f} s on {hardware}",
        f"- stopped by: {outcome.stopped_by or 'end of schedule'}",
    ]
    if outcome.resumed_from:
        lines.append(f"- resumed from: `{Path(outcome.resumed_from).name}`")
    lines += ["", "## Loss curve", "", "Training loss as logged (every row is one logging step; "
              "`training_log.json` has every logged value).", "", "| step | epoch | loss |", "|---:|---:|---:|"]
    curve = outcome.loss_curve
    stride = max(1, -(-len(curve) // _MAX_CURVE_ROWS))
    rows = curve[::stride] + ([curve[-1]] if curve and (len(curve) - 1) % stride else [])
    lines += [f"| {row['step']} | {row['epoch']:g} | {row['loss']:.4f} |" for row in rows]
    lines += ["", "## Evaluation", ""]
    if evaluation is None:
        lines.append("Not run: pass --eval-dataset (or train from --beir) to evaluate after training.")
    else:
        lines.append(f"Reranking the BM25 top {evaluation['k']} of {evaluation['queries']} "
                     f"`{evaluation['split']}` queries of `{evaluation['dataset']}` "
                     "(OpenSearch BM25, title and text).")
        lines += ["", "| system | " + " | ".join(MEASURE_NAMES) + " |", "|---|" + "---:|" * len(MEASURE_NAMES)]
        for system, values in evaluation["systems"].items():
            lines.append(f"| {system} | " + " | ".join(f"{values[name]:.3f}" for name in MEASURE_NAMES) + " |")
    return "\n".join(lines) + "\n"
