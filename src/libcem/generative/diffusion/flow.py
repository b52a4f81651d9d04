"""Rectified flow / flow matching (Lipman et al. 2023; Liu et al. 2023): the straight path
x_t = (1 - t) x0 + t eps from data (t = 0) to noise (t = 1), whose velocity v = eps - x0 the
network regresses, at times drawn logit-normal (Esser et al. 2024, "Scaling rectified flow
transformers", SD3: the logit-normal(0, 1) sampling they found best)."""

from __future__ import annotations

from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, network time) -> velocity, same shape as x_t

LOGIT_MEAN, LOGIT_STD = 0.0, 1.0  # SD3's logit-normal time density


def logit_normal_times(n: int, generator: torch.Generator, mean: float = LOGIT_MEAN, std: float = LOGIT_STD) -> torch.Tensor:
    """(n,) times in (0, 1): sigmoid of N(mean, std^2) draws (Esser et al. 2024)."""
    return torch.sigmoid(mean + std * torch.randn(n, generator=generator))


def flow_path(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t eps, t (B,) broadcast over the other dimensions of x0 (B, ...)."""
    t = t.view(-1, *[1] * (x0.dim() - 1)).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def flow_loss(denoiser: Denoiser, x0: torch.Tensor, generator: torch.Generator, time_scale: float) -> torch.Tensor:
    """Mean squared error of `denoiser` against the velocity eps - x0 (conditional flow matching).

    x0 (B, ...) clean data; times and noise are drawn from `generator` (on the CPU, then moved).
    The network sees time t * time_scale (its timestep input keeps the DDPM range 0..train_timesteps).
    """
    t = logit_normal_times(x0.shape[0], generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    t = t.to(x0.device)
    target = noise - x0
    err = (denoiser(flow_path(x0, noise, t), t * time_scale).float() - target.float()).pow(2).flatten(1).mean(1)  # (B,)
    return err.mean()
