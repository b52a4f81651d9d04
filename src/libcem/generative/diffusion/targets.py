"""What the network predicts: one registry of DDPM prediction targets, each with its regression
target and its Min-SNR-gamma weight (Hang et al. 2023). Adding a target is one `PREDICTIONS` entry
(and its test in tests/test_sampler.py); `diffusion.prediction` names it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# (scheduler, x0, noise, t) -> the regression target, same shape as x0
Target = Callable[[object, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Prediction:
    help: str
    target: Target
    snr_weight: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (snr, min(snr, gamma)) -> loss weight


PREDICTIONS: dict[str, Prediction] = {
    "v_prediction": Prediction(
        "v = alpha * noise - sigma * x0 (Salimans & Ho 2022)",
        lambda sched, x0, noise, t: sched.get_velocity(x0, noise, t),
        lambda snr, clipped: clipped / (snr + 1),
    ),
    "epsilon": Prediction(
        "the added noise (Ho et al. 2020)",
        lambda sched, x0, noise, t: noise,
        lambda snr, clipped: clipped / snr,
    ),
    "sample": Prediction(
        "the clean sample x0",
        lambda sched, x0, noise, t: x0,
        lambda snr, clipped: clipped,
    ),
}
