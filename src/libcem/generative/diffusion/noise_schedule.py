"""Noise schedules from `diffusers`: DDPM for training (Ho et al. 2020), its config reused by the samplers."""

from __future__ import annotations

from libcem.generative.diffusion.settings import DiffusionConfig


def training_scheduler(cfg: DiffusionConfig):
    """The DDPM scheduler whose `add_noise` / `get_velocity` define the training noise."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=cfg.train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction,
        clip_sample=False,
    )


def sampling_scheduler(cfg: DiffusionConfig, sampler: str):
    """A fresh sampling scheduler (they hold per-run state) on the training noise schedule.

    ddim: Song et al. 2021 (eta 0, deterministic); dpm++: DPM-Solver++ 2M (Lu et al. 2022);
    ddpm: ancestral sampling (Ho et al. 2020).
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    base = training_scheduler(cfg).config
    if sampler == "ddim":
        return DDIMScheduler.from_config(base, set_alpha_to_one=True, timestep_spacing="trailing")
    if sampler == "dpm++":
        return DPMSolverMultistepScheduler.from_config(
            base, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing", final_sigmas_type="zero"
        )
    if sampler == "ddpm":
        return DDPMScheduler.from_config(base, timestep_spacing="trailing")
    raise ValueError(f"unknown sampler {sampler!r}")
