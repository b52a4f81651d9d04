"""Diffusion around any denoiser callable: diffusers schedules, the training loss, guidance and samplers."""

from libcem.diffusion.config import DiffusionConfig
from libcem.diffusion.guidance import guided
from libcem.diffusion.loss import diffusion_loss
from libcem.diffusion.samplers import SAMPLERS, sample
from libcem.diffusion.schedule import sampling_scheduler, training_scheduler

__all__ = ["DiffusionConfig", "guided", "diffusion_loss", "SAMPLERS", "sample", "sampling_scheduler", "training_scheduler"]
