"""Training settings shared by every model libcem trains."""

from __future__ import annotations

from dataclasses import dataclass

from libcem.config import check

PRECISIONS = ("no", "bf16", "fp16")
REPORT_TO = ("", "tensorboard", "wandb")  # the trackers of libcem.generative.training.trackers


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3  # peak learning rate (AdamW)
    betas: tuple[float, ...] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 100  # linear warmup from 0, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0  # max global gradient norm; 0 disables

    def __post_init__(self) -> None:
        check(0 < self.lr < 1, "optim.lr", "use a learning rate in (0, 1), e.g. 2e-4")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas", "two numbers in [0, 1)")
        check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        check(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", "use 0..1")
        check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 disables clipping)")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000  # optimizer steps
    batch_size: int = 64  # global batch per optimizer step (all processes, all accumulation steps)
    grad_accum: int = 1  # the batch is split into this many micro-batches
    precision: str = "no"  # no | bf16 | fp16 (fp16 needs a GPU)
    ema_decay: float = 0.999  # EMA of the weights used for sampling and export; 0 disables
    seed: int = 0  # drives data order, initialisation and every random choice
    log_every: int = 25  # metrics.jsonl line and loss.png refresh
    sample_every: int = 500  # image grid in samples/
    checkpoint_every: int = 500
    keep_checkpoints: int = 2  # the last N checkpoints are kept
    report_to: str = ""  # "" | tensorboard | wandb: also log metrics and snapshot grids there (Accelerate trackers)
    compile: bool = False  # torch.compile the model (a first step of minutes; faster steps on a GPU)

    def __post_init__(self) -> None:
        check(self.steps >= 1, "train.steps", "must be >= 1")
        check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        check(self.grad_accum >= 1, "train.grad_accum", "must be >= 1")
        check(self.batch_size % self.grad_accum == 0, "train.batch_size", "must be a multiple of train.grad_accum")
        check(self.precision in PRECISIONS, "train.precision", f"use one of {', '.join(PRECISIONS)}")
        check(0 <= self.ema_decay < 1, "train.ema_decay", "use 0 <= decay < 1")
        check(self.report_to in REPORT_TO, "train.report_to", f"use one of {', '.join(REPORT_TO[1:])}, or \"\"")
        for key in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints"):
            check(getattr(self, key) >= 1, f"train.{key}", "must be >= 1")
