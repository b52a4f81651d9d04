"""The denoising loss: noise a clean batch at a random DDPM level and regress the scheduler's target."""

from __future__ import annotations

from typing import Callable

import torch

from libcem.generative.diffusion.targets import PREDICTIONS

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> prediction, same shape as x_t


def snr_weights(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), expressed for the scheduler's prediction target."""
    abar = scheduler.alphas_cumprod.to(t.device)[t].float()
    snr = (abar / (1 - abar)).clamp(min=1e-12)
    return PREDICTIONS[scheduler.config.prediction_type].snr_weight(snr, snr.clamp(max=gamma))


def diffusion_loss(denoiser: Denoiser, x0: torch.Tensor, scheduler, generator: torch.Generator,
                   min_snr_gamma: float = 0.0) -> torch.Tensor:
    """Mean squared error of `denoiser` against the epsilon / v / sample target (Ho et al. 2020).

    x0 (B, ...) clean data; timesteps and noise are drawn from `generator` (on the CPU, then moved).
    `min_snr_gamma` > 0 weights each example by min(SNR, gamma) (Hang et al. 2023); 0: plain MSE.
    """
    b = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    t = t.to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    target = PREDICTIONS[scheduler.config.prediction_type].target(scheduler, x0, noise, t)
    err = (denoiser(x_t, t).float() - target.float()).pow(2).flatten(1).mean(1)  # (B,)
    if min_snr_gamma > 0:
        err = err * snr_weights(scheduler, t, min_snr_gamma)
    return err.mean()
