"""Classifier-free guidance (Ho & Salimans 2022): pred = uncond + scale * (cond - uncond)."""

from __future__ import annotations

from typing import Callable

import torch

# (x_t, t, conditioned) -> prediction; `conditioned` False asks for the unconditional prediction
CondDenoiser = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


def guided(denoiser: CondDenoiser, scale: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A plain (x_t, t) denoiser from a conditional one; scale 1 is exactly the conditional prediction."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = denoiser(x, t, True)
        if scale == 1.0:
            return cond
        uncond = denoiser(x, t, False)
        return uncond + scale * (cond - uncond)

    return fn
