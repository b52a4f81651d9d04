"""Classifier-free guidance (Ho & Salimans 2022): pred = uncond + scale * (cond - uncond), applied
only where the noise level lies in a guidance interval (Kynkaanniemi et al. 2024, "Applying
guidance in a limited interval improves sample and distribution quality in diffusion models"):
outside it the conditional prediction is used alone, which also saves the unconditional pass."""

from __future__ import annotations

from typing import Callable

import torch

# (x_t, t, conditioned) -> prediction; `conditioned` False asks for the unconditional prediction
CondDenoiser = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]

FULL_INTERVAL = (0.0, 1.0)  # guidance at every noise level


def valid_interval(interval) -> bool:
    """A guidance interval: two numbers 0 <= lo < hi <= 1 (NaN fails every comparison)."""
    return len(interval) == 2 and 0.0 <= interval[0] < interval[1] <= 1.0


def guided(denoiser: CondDenoiser, scale: float, interval: tuple[float, float] = FULL_INTERVAL,
           time_scale: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A plain (x_t, t) denoiser from a conditional one; scale 1 is exactly the conditional prediction.

    `interval` (lo, hi): guidance applies to the rows whose noise level t / time_scale (0 = data,
    1 = pure noise; the network's time input over `time_scale`, i.e. diffusion.train_timesteps)
    lies in [lo, hi]; the other rows get the conditional prediction. The full interval (0, 1) guides
    every row whatever its time."""
    lo, hi = interval
    everywhere = (lo, hi) == FULL_INTERVAL

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = denoiser(x, t, True)
        if scale == 1.0:
            return cond
        level = t.float() / time_scale  # (B,)
        inside = None if everywhere else (level >= lo) & (level <= hi)
        if inside is not None and not bool(inside.any()):
            return cond
        uncond = denoiser(x, t, False)
        out = uncond + scale * (cond - uncond)
        if inside is None or bool(inside.all()):
            return out
        return torch.where(inside.view(-1, *[1] * (x.dim() - 1)), out, cond)

    return fn


def interval_words(interval) -> str:
    """' at noise levels LO-HI (...)' for a limited guidance interval; '' when it is the full one (or None)."""
    if not interval or tuple(interval) == FULL_INTERVAL:
        return ""
    return f" at noise levels {interval[0]:g}-{interval[1]:g} (0 = data, 1 = pure noise)"
