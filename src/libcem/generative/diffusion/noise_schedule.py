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
