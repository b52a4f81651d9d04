"""Learning-rate schedule: linear warmup, then cosine decay (Loshchilov & Hutter 2017, SGDR)."""

from __future__ import annotations

import math

from libcem.generative.training.settings import OptimConfig


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
