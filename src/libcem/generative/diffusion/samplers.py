"""Samplers: one registry, run with any (x_t, t) -> prediction callable: diffusers schedulers for
the ddpm objective, ODE integrators of the velocity for the flow objective.

The sampler never sees the network. Randomness is per image: `generators[i]` drives row i's
initial noise and any noise the scheduler adds, so an image does not depend on the batch it
was drawn in. Adding a sampler is one `SAMPLERS` entry (and its test in tests/test_sampler.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from libcem.config import ConfigError
from libcem.generative.diffusion import ode
from libcem.generative.diffusion.noise_schedule import training_scheduler
from libcem.generative.diffusion.settings import DiffusionConfig


def _dpmpp(base) -> Any:
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(
        base, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing", final_sigmas_type="zero"
    )


def _ddim(base) -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(base, set_alpha_to_one=True, timestep_spacing="trailing")


def _ddpm(base) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(base, timestep_spacing="trailing")


@dataclass(frozen=True)
class Sampler:
    help: str
    scheduler: Callable[[Any], Any] | None  # the training scheduler's config -> a fresh diffusers sampling scheduler
    stochastic: bool = False  # its step() draws noise: it gets the per-image generators
    objective: str = "ddpm"  # the training objective whose models it samples
    ode: Callable | None = None  # flow: (velocity, x, times, progress) -> x, in place of a scheduler


SAMPLERS: dict[str, Sampler] = {
    "dpm++": Sampler("DPM-Solver++ 2M, deterministic (Lu et al. 2022)", _dpmpp),
    "ddim": Sampler("DDIM, eta 0, deterministic (Song et al. 2021)", _ddim),
    "ddpm": Sampler("ancestral DDPM, stochastic (Ho et al. 2020)", _ddpm, stochastic=True),
    "euler": Sampler("Euler ODE, flow objective only", None, objective="flow", ode=ode.euler),
    "heun": Sampler("Heun ODE, 2 evaluations per step, flow objective only (Karras et al. 2022)", None,
                    objective="flow", ode=ode.heun),
}


def sampler_help() -> str:
    return "; ".join(f"{name}: {s.help}" for name, s in SAMPLERS.items())


def resolve_sampler(cfg: DiffusionConfig, sampler: str) -> str:
    """`sampler`, or "" -> the objective's default; a ConfigError unless it samples `cfg.objective`."""
    from libcem.generative.diffusion.objectives import OBJECTIVES

    name = sampler or OBJECTIVES[cfg.objective].sampler
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if SAMPLERS[name].objective != cfg.objective:
        fits = ", ".join(n for n, s in SAMPLERS.items() if s.objective == cfg.objective)
        raise ConfigError(f"sampler '{name}' fits the '{SAMPLERS[name].objective}' objective, not '{cfg.objective}': "
                          f"use one of {fits}")
    return name


def sampling_scheduler(cfg: DiffusionConfig, sampler: str):
    """A fresh sampling scheduler (they hold per-run state) on the training noise schedule; None for
    the flow ODE samplers, which need none."""
    spec = SAMPLERS[resolve_sampler(cfg, sampler)]
    return None if spec.ode else spec.scheduler(training_scheduler(cfg).config)


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
    """Integrate from pure noise to data: returns (B, *shape) with B = len(generators).

    `sampler` "" is the objective's default; a sampler of another objective is a ConfigError."""
    sampler = resolve_sampler(cfg, sampler)
    if SAMPLERS[sampler].ode:
        return sample_flow(denoiser, cfg, shape, generators, steps, sampler, device, progress)
    sched = sampling_scheduler(cfg, sampler)
    sched.set_timesteps(steps)
    x = (initial_noise(shape, generators) * sched.init_noise_sigma).to(device)
    timesteps = sched.timesteps
    extra = {"generator": generators} if SAMPLERS[sampler].stochastic else {}
    for t in progress(timesteps) if progress else timesteps:
        tt = torch.full((x.shape[0],), int(t), device=device, dtype=torch.long)
        pred = denoiser(sched.scale_model_input(x, t), tt)
        x = sched.step(pred, t, x, **extra).prev_sample
    return x


def sample_flow(denoiser, cfg: DiffusionConfig, shape: tuple[int, ...], generators: list[torch.Generator], steps: int,
                sampler: str, device: str | torch.device = "cpu", progress: Callable | None = None) -> torch.Tensor:
    """The flow ODE from noise at t = 1 to data at t = 0; the network sees time t * train_timesteps."""
    x = initial_noise(shape, generators).to(device)

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        return denoiser(x, torch.full((x.shape[0],), t * cfg.train_timesteps, device=device))

    return SAMPLERS[sampler].ode(velocity, x, ode.time_grid(steps), progress)
