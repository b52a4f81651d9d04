"""Where work runs by default."""

from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    """This process's GPU when there is one (cuda:LOCAL_RANK under `accelerate launch`), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")
