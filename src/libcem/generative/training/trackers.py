"""Experiment trackers (`train.report_to`, `--report-to`): TensorBoard or Weights & Biases through
Accelerate's trackers, beside metrics.jsonl (which stays: resume reads it).

TensorBoard writes into RUN/logs (`StageRun.tracker_dir`); every logged row is a scalar per metric,
every snapshot grid an image. Accelerate itself imports the tracker's package, only when asked.
"""

from __future__ import annotations

from importlib import util
from pathlib import Path

from libcem.errors import LibcemError

PROJECT = "libcem"
TRACKERS = {  # name -> (the packages Accelerate can use for it, what to install)
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    "wandb": (("wandb",), "pip install wandb, then wandb login"),
}


def make_trackers(report_to: str) -> list:
    """What Accelerator(log_with=...) gets for `report_to` ("" for none); a clear error when its package is missing."""
    if not report_to:
        return []
    packages, install = TRACKERS[report_to]
    if not any(util.find_spec(p) for p in packages):
        raise LibcemError(f"--report-to {report_to} needs the {packages[0]} package: {install}")
    return [report_to]


def flat_config(table: dict, prefix: str = "") -> dict:
    """A nested config as {"train.steps": 3000, ...}, with lists as text (what trackers store as hparams)."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def log_grid(trackers: list, path: Path, step: int) -> None:
    """Log the snapshot grid at `path` as the image "samples" of `step` to every tracker."""
    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"))  # (H, W, 3) uint8
    for tracker in trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"samples": image[None]}, step, dataformats="NHWC")
        else:
            tracker.log_images({"samples": [image]}, step)
