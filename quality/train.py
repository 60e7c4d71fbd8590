"""Fine-tune a one-label CrossEncoder with the sentence-transformers trainer.

The defaults are the reference recipe of the cross-encoder MS MARCO models:
``BinaryCrossEntropyLoss`` on logits (identity activation), learning rate 5e-5,
batch 16, 3 epochs, a linear schedule without warm-up, weight decay 0, seed 42
and max length 512. Distillation swaps the loss for an MSE between the sigmoid
of the logit and the teacher's score in [0, 1]. The saved model keeps the
identity activation, so the sidecar serves raw logits either way.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .pairs import Pair

logger = logging.getLogger(__name__)

LOSSES = ("bce", "mse")


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Hyper-parameters and bounds of one training run. See ``rerank-train --help`` for each."""

    base: str
    output: Path
    loss: str = "bce"
    learning_rate: float = 5e-5
    batch_size: int = 16
    epochs: float = 3.0
    scheduler: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    seed: int = 42
    max_length: int = 512
    max_steps: int = -1
    max_minutes: float | None = None
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 10
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"--loss {self.loss!r} is invalid; expected one of {', '.join(LOSSES)}")
        for flag, value in (("--batch-size", self.batch_size), ("--max-length", self.max_length),
                            ("--save-steps", self.save_steps), ("--logging-steps", self.logging_steps)):
            if value < 1:
                raise ValueError(f"{flag} {value} is invalid; expected 1 or more")
        if self.learning_rate <= 0 or self.epochs <= 0:
            raise ValueError("--learning-rate and --epochs must be positive")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"--max-minutes {self.max_minutes} is invalid; expected a positive number")

    def hyper_parameters(self) -> dict[str, Any]:
        values = asdict(self)
        for name in ("output", "progress"):
            values.pop(name)
        return values


@dataclass
class TrainOutcome:
    """Outcome of a run: steps, the bound that stopped it, if any, and the logged loss curve."""

    steps: int
    planned_steps: int
    epochs_done: float
    seconds: float
    stopped_by: str | None
    loss_curve: list[dict[str, float]] = field(default_factory=list)
    resumed_from: str | None = None


def checkpoint_dir(output: Path) -> Path:
    return output / "checkpoints"


def latest_checkpoint(output: Path) -> Path | None:
    """Return the newest ``checkpoint-<step>`` folder under ``output/checkpoints``, if any."""
    folders = [path for path in checkpoint_dir(output).glob("checkpoint-*") if path.name.split("-")[-1].isdigit()]
    return max(folders, key=lambda path: int(path.name.split("-")[-1]), default=None)


def train(settings: TrainSettings, pairs: list[Pair], *, resume: bool | Path = False) -> tuple[Any, TrainOutcome]:
    """Train a CrossEncoder from ``settings.base`` on ``pairs`` and save it to ``settings.output``.

    Checkpoints go to ``output/checkpoints`` every ``save_steps`` steps and when
    a bound (``max_steps``, ``max_minutes``) stops the run. ``resume=True``
    continues from the newest checkpoint there; a path continues from that one.

    Returns:
        The trained CrossEncoder and the outcome.

    Raises:
        ValueError: ``resume`` is set but no checkpoint exists.
    """
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, MSELoss

    resume_from: str | None = None
    if resume is True:
        found = latest_checkpoint(settings.output)
        if found is None:
            raise ValueError(f"--resume was given but {checkpoint_dir(settings.output)} has no checkpoint-<step> "
                             "folder; start without --resume")
        resume_from = str(found)
    elif resume:
        resume_from = str(resume)

    device = None if settings.device == "auto" else settings.device
    model = CrossEncoder(settings.base, num_labels=1, max_length=settings.max_length,
                         activation_fn=torch.nn.Identity(), device=device)
    if settings.loss == "bce":
        loss = BinaryCrossEntropyLoss(model, activation_fn=torch.nn.Identity())
    else:
        # Teacher scores are in [0, 1]; the sigmoid puts the student's logit on that scale.
        loss = MSELoss(model, activation_fn=torch.nn.Sigmoid())
    dataset = Dataset.from_dict({"query": [pair.query for pair in pairs],
                                 "document": [pair.document for pair in pairs],
                                 "label": [float(pair.label) for pair in pairs]})
    arguments = CrossEncoderTrainingArguments(
        output_dir=str(checkpoint_dir(settings.output)),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.scheduler,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        seed=settings.seed,
        data_seed=settings.seed,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        logging_steps=settings.logging_steps,
        logging_first_step=True,
        report_to="none",
        disable_tqdm=not settings.progress,
        use_cpu=settings.device == "cpu",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available() and settings.device != "cpu",
    )
    clock = _TimeLimit(settings.max_minutes)
    trainer = CrossEncoderTrainer(model=model, args=arguments, train_dataset=dataset, loss=loss,
                                  callbacks=[clock])
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started

    state = trainer.state
    stopped_by = None
    if clock.fired:
        stopped_by = f"--max-minutes {settings.max_minutes:g}"
    elif settings.max_steps > 0 and state.global_step >= settings.max_steps:
        stopped_by = f"--max-steps {settings.max_steps}"
    outcome = TrainOutcome(
        steps=state.global_step, planned_steps=state.max_steps, epochs_done=round(state.epoch or 0.0, 3),
        seconds=round(seconds, 1), stopped_by=stopped_by, resumed_from=resume_from,
        loss_curve=[{"step": entry["step"], "epoch": round(entry.get("epoch", 0.0), 3), "loss": entry["loss"]}
                    for entry in state.log_history if "loss" in entry],
    )
    model.save(str(settings.output))
    (settings.output / "training_log.json").write_text(json.dumps(asdict(outcome), indent=2) + "\n")
    return model, outcome


class _TimeLimit(TrainerCallback):
    """Trainer callback that stops training, with a checkpoint, once ``minutes`` have passed."""

    def __init__(self, minutes: float | None) -> None:
        self.minutes = minutes
        self.fired = False
        self._started = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.minutes is not None and time.monotonic() - self._started >= self.minutes * 60:
            self.fired = True
            control.should_training_stop = True
            control.should_save = True
        return control
