"""Samplers: run a diffusers scheduler with any (x_t, t) -> prediction callable.

The sampler never sees the network. Randomness is per image: `generators[i]` drives row i's
initial noise and any noise the scheduler adds, so an image does not depend on the batch it
was drawn in.
"""

from __future__ import annotations

from typing import Callable

import torch

from libcem.generative.diffusion.noise_schedule import sampling_scheduler
from libcem.generative.diffusion.settings import DiffusionConfig

SAMPLERS = {
    "dpm++": "DPM-Solver++ 2M, deterministic (Lu et al. 2022)",
    "ddim": "DDIM, eta 0, deterministic (Song et al. 2021)",
    "ddpm": "ancestral DDPM, stochastic (Ho et al. 2020)",
}


def initial_noise(shape: tuple[int, ...], generators: list[torch.Generator]) -> torch.Tensor:
    """(B, *shape) standard normal noise, row i drawn from generators[i] (on the CPU)."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


@torch.no_grad()
def sample(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: DiffusionConfig,
    shape: tuple[int, ...],
    generators: list[torch.Generator],
    steps: int,
    sampler: str = "dpm++",
    device: str | torch.device = "cpu",
    progress: Callable | None = None,
) -> torch.Tensor:
    """Integrate from pure noise to data: returns (B, *shape) with B = len(generators)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    sched = sampling_scheduler(cfg, sampler)
    sched.set_timesteps(steps)
    x = (initial_noise(shape, generators) * sched.init_noise_sigma).to(device)
    timesteps = sched.timesteps
    for t in progress(timesteps) if progress else timesteps:
        tt = torch.full((x.shape[0],), int(t), device=device, dtype=torch.long)
        pred = denoiser(sched.scale_model_input(x, t), tt)
        extra = {"generator": generators} if sampler == "ddpm" else {}
        x = sched.step(pred, t, x, **extra).prev_sample
    return x
