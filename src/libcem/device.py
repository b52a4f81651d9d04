"""Where work runs by default."""

from __future__ import annotations

import os

import torch

from libcem.errors import LibcemError


def default_device() -> torch.device:
    """This process's GPU when there is one (cuda:LOCAL_RANK under `accelerate launch`), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def resolve_device(spec: str | torch.device | None = None) -> torch.device:
    """A device the user named (None: `default_device()`), checked to exist on this machine."""
    if spec is None or spec == "":
        return default_device()
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise LibcemError(f"unknown device '{str(spec)[:40]}'; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise LibcemError(f"device '{dev}' is not available here (CUDA GPUs found: "
                          f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}); use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise LibcemError("device 'mps' is not available here; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise LibcemError(f"device '{dev}' is not supported; use cpu, cuda or cuda:N")
    return dev
