"""Training objectives: one registry, `diffusion.objective` names the entry. An objective turns the
diffusion config into a loss `(denoiser, x0, generator) -> scalar` and names the default sampler of
the models it trains (samplers say which objective they fit). Adding an objective is one
`OBJECTIVES` entry (and its toy-problem test in tests/test_objectives.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from libcem.generative.diffusion.flow import flow_loss
from libcem.generative.diffusion.loss import diffusion_loss
from libcem.generative.diffusion.noise_schedule import training_scheduler
from libcem.generative.diffusion.settings import DiffusionConfig

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> prediction, same shape as x_t
Loss = Callable[[Denoiser, torch.Tensor, torch.Generator], torch.Tensor]  # (denoiser, x0 (B, ...), generator) -> loss


def _ddpm(cfg: DiffusionConfig) -> Loss:
    scheduler = training_scheduler(cfg)  # built once
    return lambda denoiser, x0, generator: diffusion_loss(denoiser, x0, scheduler, generator, cfg.min_snr_gamma)


def _flow(cfg: DiffusionConfig) -> Loss:
    return lambda denoiser, x0, generator: flow_loss(denoiser, x0, generator, cfg.train_timesteps)


@dataclass(frozen=True)
class Objective:
    help: str
    loss: Callable[[DiffusionConfig], Loss]
    sampler: str  # the default sampler of models trained with it (diffusion.sampler = "")


OBJECTIVES: dict[str, Objective] = {
    "ddpm": Objective("DDPM noise levels, diffusion.prediction target, Min-SNR weights (Ho et al. 2020)", _ddpm, "dpm++"),
    "flow": Objective("rectified flow, velocity target, logit-normal times (Liu et al. 2023; Esser et al. 2024)",
                      _flow, "euler"),
}


def training_loss(cfg: DiffusionConfig) -> Loss:
    """The loss of the configured objective."""
    return OBJECTIVES[cfg.objective].loss(cfg)
