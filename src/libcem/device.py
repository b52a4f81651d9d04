"""Where work runs by default: a CUDA GPU this torch can run on, else Apple's MPS, else the CPU.

A GPU whose compute capability the installed torch was not built for (a P100 under a recent torch)
is reported in one line and skipped, instead of failing in its first kernel.
"""

from __future__ import annotations

import os
import re
import warnings

import torch

from libcem.errors import LibcemError

MPS_FALLBACK = "PYTORCH_ENABLE_MPS_FALLBACK"  # ops MPS lacks run on the CPU (read when torch is imported)


def arch_supported(archs: list[str], major: int, minor: int) -> bool:
    """Can a torch built for `archs` (torch.cuda.get_arch_list()) run on compute capability major.minor?
    An sm_XY binary runs on X.Y and later minors of X; compute_XY (PTX) is compiled for any later GPU."""
    for arch in archs:
        match = re.fullmatch(r"(sm|compute)_(\d+)\w*", arch)
        if not match:
            continue
        version = int(match.group(2))
        if match.group(1) == "sm" and version // 10 == major and version % 10 <= minor:
            return True
        if match.group(1) == "compute" and version <= 10 * major + minor:
            return True
    return False


def cuda_unsupported(index: int = 0) -> str | None:
    """None when there is no CUDA GPU or this torch can run on GPU `index`; else one sentence why not."""
    if not torch.cuda.is_available():
        return None
    archs = torch.cuda.get_arch_list()
    major, minor = torch.cuda.get_device_capability(index)
    if not archs or arch_supported(archs, major, minor):
        return None
    return (f"the GPU {torch.cuda.get_device_name(index)} (compute capability {major}.{minor}) is not supported by "
            f"this torch {torch.__version__} (built for {' '.join(archs)})")


def cuda_usable() -> bool:
    return torch.cuda.is_available() and cuda_unsupported() is None


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def default_device() -> torch.device:
    """This process's GPU when torch can run on it (cuda:LOCAL_RANK under `accelerate launch`), else
    Apple's MPS (ops it lacks fall back to the CPU), else the CPU."""
    if torch.cuda.is_available():
        reason = cuda_unsupported()
        if reason is None:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        warnings.warn(f"{reason}: using the CPU instead", stacklevel=2)
    if mps_available():
        if os.environ.get(MPS_FALLBACK) != "1":
            warnings.warn(f"set {MPS_FALLBACK}=1 before importing torch so ops MPS lacks run on the CPU",
                          stacklevel=2)
        return torch.device("mps")
    return torch.device("cpu")


def check_precision(precision: str) -> None:
    """Refuse mixed precision the GPU cannot do natively: bf16 on a GPU before Ampere (a T4, a P100)."""
    if precision == "bf16" and cuda_usable() and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise LibcemError(f"precision bf16: the GPU {torch.cuda.get_device_name()} has no native bf16 (it needs "
                          "compute capability 8.0, e.g. an A100, L4 or H100); use --precision fp16 on it")
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
    if dev.type == "mps" and not mps_available():
        raise LibcemError("device 'mps' is not available here; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise LibcemError(f"device '{dev}' is not supported; use cpu, cuda or cuda:N")
    return dev
