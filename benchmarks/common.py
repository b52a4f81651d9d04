"""What several benchmarks share: the device's name and timed optimizer steps of a training stage."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch


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
