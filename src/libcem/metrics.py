"""Image quality numbers."""

from __future__ import annotations

import torch


def psnr(x: torch.Tensor, ref: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of (B, C, H, W) `x` against `ref` (x is clipped to [0, peak])."""
    mse = ((x.clamp(0, peak) - ref) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse.clamp_min(1e-12))
