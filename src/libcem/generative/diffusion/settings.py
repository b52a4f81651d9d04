"""Settings of the diffusion process (schedule, target, guidance) and of the default sampler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from libcem.config import ConfigError, check
from libcem.generative.diffusion.guidance import FULL_INTERVAL, valid_interval

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")


@dataclass(frozen=True)
class DiffusionConfig:
    # defaults that changed: what a saved config without the key was trained with (config.with_saved_defaults)
    SAVED_DEFAULTS: ClassVar[dict] = {"objective": "ddpm", "guidance": 3.0}

    objective: str = "flow"  # training objective: flow (rectified flow) or ddpm (noise levels + prediction target)
    train_timesteps: int = 1000  # DDPM noise levels used in training; flow: the network sees time t * this
    beta_schedule: str = "squaredcos_cap_v2"  # diffusers beta schedule (cosine: Nichol & Dhariwal 2021)
    prediction: str = "v_prediction"  # ddpm: what the network predicts: v (Salimans & Ho 2022), epsilon or sample
    min_snr_gamma: float = 5.0  # ddpm: > 0: Min-SNR-gamma loss weighting (Hang et al. 2023); 0: plain MSE
    cond_drop: float = 0.1  # fraction of training examples whose text is dropped (classifier-free guidance)
    sampler: str = ""  # default sampler; "" = the objective's: dpm++ (DPM-Solver++ 2M) for ddpm, euler for flow
    steps: int = 20  # default sampling steps
    guidance: float = 2.0  # default classifier-free guidance scale (1 = plain conditional model)
    # noise levels (0 = data, 1 = pure noise) where guidance applies; elsewhere the conditional
    # prediction alone (Kynkaanniemi et al. 2024). (0, 1) = everywhere.
    guidance_interval: tuple[float, float] = FULL_INTERVAL

    def __post_init__(self) -> None:
        check(2 <= self.train_timesteps <= 100_000, "diffusion.train_timesteps", "use 2..100000")
        check(self.beta_schedule in BETA_SCHEDULES, "diffusion.beta_schedule", f"use one of {', '.join(BETA_SCHEDULES)}")
        from libcem.generative.diffusion.objectives import OBJECTIVES  # registries; imported here: they import this module
        from libcem.generative.diffusion.samplers import SAMPLERS, resolve_sampler
        from libcem.generative.diffusion.targets import PREDICTIONS

        check(self.objective in OBJECTIVES, "diffusion.objective", f"use one of {', '.join(OBJECTIVES)}")
        check(self.prediction in PREDICTIONS, "diffusion.prediction", f"use one of {', '.join(PREDICTIONS)}")
        check(self.min_snr_gamma >= 0, "diffusion.min_snr_gamma", "must be >= 0 (0 disables)")
        check(0 <= self.cond_drop < 1, "diffusion.cond_drop", "use 0 <= cond_drop < 1")
        check(self.sampler == "" or self.sampler in SAMPLERS, "diffusion.sampler",
              f"use one of {', '.join(SAMPLERS)}, or \"\" for the objective's default")
        try:
            resolve_sampler(self, self.sampler)
        except ConfigError as err:
            raise ConfigError(f"config 'diffusion.sampler': {err}") from None
        check(1 <= self.steps <= self.train_timesteps, "diffusion.steps", "use 1..diffusion.train_timesteps")
        check(self.guidance >= 0, "diffusion.guidance", "must be >= 0")
        check(valid_interval(self.guidance_interval), "diffusion.guidance_interval",
              "two numbers lo < hi in [0, 1], e.g. [0, 0.75]")
