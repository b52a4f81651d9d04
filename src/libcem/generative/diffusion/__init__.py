"""Diffusion around any denoiser callable: diffusers schedules, the training loss, guidance and samplers."""

from libcem.generative.diffusion.guidance import guided
from libcem.generative.diffusion.loss import diffusion_loss
from libcem.generative.diffusion.noise_schedule import (
    sampling_scheduler,
    training_scheduler,
)
from libcem.generative.diffusion.samplers import SAMPLERS, sample
from libcem.generative.diffusion.settings import DiffusionConfig

__all__ = ["DiffusionConfig", "guided", "diffusion_loss", "SAMPLERS", "sample", "sampling_scheduler", "training_scheduler"]
