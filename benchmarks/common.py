"""What several benchmarks share: the device's name, timed optimizer steps of a training stage, and
images side by side."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def side_by_side(path: Path, panels: list[np.ndarray], crop: int | None = None, gap: int = 8) -> None:
    """Images on the 0..255 scale (H, W) or (H, W, 3), all the same shape, in one row with
    `gap`-pixel white gaps, saved as an 8-bit PNG; with `crop`, the central crop x crop of each."""
    from PIL import Image

    if crop is not None:
        h, w = panels[0].shape[:2]
        top, left = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
        panels = [p[top:top + crop, left:left + crop] for p in panels]
    sep = np.full((panels[0].shape[0], gap) + panels[0].shape[2:], 255.0)
    row = np.concatenate([part for p in panels for part in (sep, p)][1:], axis=1)
    Image.fromarray(np.clip(np.round(row), 0, 255).astype(np.uint8)).save(path, optimize=True)


def device_name() -> str:
    """The GPU's name, else the CPU with its thread count."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({torch.get_num_threads()} threads)"


def time_train_steps(cfg, task, warmup: int, steps: int) -> float:
    """Seconds for `steps` optimizer steps of `task` in a Trainer set up as `libcem train` sets it up
    (Accelerate, EMA, the config's precision), after `warmup` untimed steps; the GPU is synchronised
    before each clock reading."""
    from libcem.generative.training.trainer import Trainer

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(Path(tmp), cfg, task, progress=False)
        trainer.prepare(resume=False)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for step in range(warmup):
            trainer.train_step(step)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for step in range(warmup, warmup + steps):
            trainer.train_step(step)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0
