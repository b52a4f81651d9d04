"""Exponential moving average of a model's weights (Polyak & Juditsky 1992)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A shadow copy whose parameters track the model's; buffers (e.g. a codebook) are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def effective_decay(self, step: int) -> float:
        """Warm-up: short runs are not dominated by the random initialisation."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.effective_decay(step)
        for shadow, live in zip(self.model.parameters(), model.parameters()):
            shadow.lerp_(live.detach(), 1 - d)
        for shadow, live in zip(self.model.buffers(), model.buffers()):
            shadow.copy_(live)
