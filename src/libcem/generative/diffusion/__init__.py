"""Diffusion around any denoiser callable: training objectives (DDPM with diffusers schedules and
prediction targets, rectified flow), guidance and samplers."""

from libcem.generative.diffusion.guidance import guided
from libcem.generative.diffusion.loss import diffusion_loss
from libcem.generative.diffusion.noise_schedule import training_scheduler
from libcem.generative.diffusion.objectives import OBJECTIVES, training_loss
from libcem.generative.diffusion.samplers import SAMPLERS, sample, sampling_scheduler
from libcem.generative.diffusion.settings import DiffusionConfig
from libcem.generative.diffusion.targets import PREDICTIONS

__all__ = ["DiffusionConfig", "guided", "diffusion_loss", "training_loss", "OBJECTIVES", "SAMPLERS", "PREDICTIONS", "sample",
           "sampling_scheduler", "training_scheduler"]
