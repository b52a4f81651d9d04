"""The adversarial loss of a tokenizer: a patch discriminator, hinge losses and VQGAN's adaptive weight.

The tokenizer's loss gains `weight * lambda * L_G` from step `start_step` on (VQGAN, Esser et al. 2021,
"Taming Transformers for High-Resolution Image Synthesis", eq. 5-7), where L_G = -mean D(x_hat) and
lambda = ||grad_L L_rec|| / (||grad_L L_G|| + 1e-4) at the decoder's last layer L balances the two
gradients; the discriminator D learns by the hinge loss on the same real images and reconstructions,
with its own AdamW, through the Trainer's `Auxiliary` mechanism.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from libcem.config import check
from libcem.errors import LibcemError
from libcem.generative.models.discriminator import Discriminator, patch_grid
from libcem.generative.training.settings import OptimConfig

ADAPTIVE_EPS = 1e-4  # VQGAN's guard against a vanishing adversarial gradient


@dataclass(frozen=True)
class AdversarialConfig:
    weight: float = 0.0  # multiplies the adaptive weight of the adversarial loss; 0 = off (no discriminator)
    start_step: int = 1000  # the first start_step optimizer steps use the pixel loss only
    width: int = 32  # channels of the discriminator's first layer
    layers: int = 2  # stride-2 layers: each patch logit sees about 34 px (2), 70 px (3); 16 px (1)
    lr: float = 0.0  # the discriminator's peak learning rate; 0 = optim.lr (same warmup + cosine schedule)
    betas: tuple[float, ...] = (0.5, 0.9)  # the discriminator's AdamW betas (VQGAN's)
    max_weight: float = 1e4  # the adaptive weight is clamped to [0, max_weight] (VQGAN's bound)

    def __post_init__(self) -> None:
        check(0 <= self.weight <= 100, "adversarial.weight", "use 0 (off) .. 100; VQGAN uses 0.8")
        check(self.start_step >= 0, "adversarial.start_step", "must be >= 0")
        check(8 <= self.width <= 512, "adversarial.width", "use 8..512")
        check(1 <= self.layers <= 5, "adversarial.layers", "use 1..5")
        check(0 <= self.lr < 1, "adversarial.lr", "use 0 (= optim.lr) or a learning rate in (0, 1)")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "adversarial.betas",
              "two numbers in [0, 1)")
        check(self.max_weight > 0, "adversarial.max_weight", "must be > 0")


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss, 0.5 (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))]) (Lim & Ye 2017, as in VQGAN)."""
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge GAN: -E[D(x_hat)]."""
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN's lambda = ||grad rec_loss|| / (||grad g_loss|| + 1e-4) at `last_layer`, clamped to
    [0, max_weight], detached (Esser et al. 2021, eq. 7). Both graphs are kept for the backward pass."""
    g_rec, = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    g_adv, = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    return (g_rec.float().norm() / (g_adv.float().norm() + ADAPTIVE_EPS)).clamp(0, max_weight).detach()


class Adversary:
    """The discriminator as the Trainer's `Auxiliary`, and the generator's adversarial term for the task.

    At each step where it is on, the task's loss calls `generator_loss` once per micro-batch (which
    keeps the micro-batch's images and detached reconstructions); then the Trainer calls `loss` once
    per micro-batch to train the discriminator on them."""

    name = "discriminator"  # its files in a checkpoint: training/discriminator.safetensors, ..._optimizer.pt

    def __init__(self, cfg: AdversarialConfig, optim: OptimConfig, in_channels: int, image_size: int,
                 seed: int) -> None:
        self.cfg = cfg
        self.module = Discriminator(in_channels, cfg.width, cfg.layers, torch.Generator().manual_seed(seed))
        if self.module.patches(image_size) < 1:
            deepest = max((n for n in range(1, 6) if patch_grid(image_size, n) >= 1), default=0)
            fix = f"use adversarial.layers <= {deepest}" if deepest else "use larger images or adversarial.weight=0"
            raise LibcemError(f"adversarial.layers={cfg.layers} leaves no patch of {image_size}-px images to judge: {fix}")
        self.optim = dataclasses.replace(optim, lr=cfg.lr or optim.lr, betas=tuple(cfg.betas), weight_decay=0.0)
        self.on, self.kept = False, []

    def begin(self, step: int) -> bool:
        """Called by the Trainer before step `step`'s model loss: whether the discriminator is on (and trains)."""
        self.on, self.kept = step >= self.cfg.start_step, []
        return self.on

    def generator_loss(self, x: torch.Tensor, recon: torch.Tensor, rec_loss: torch.Tensor,
                       last_layer: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """weight * lambda * L_G for reconstructions `recon` of `x` (B, C, H, W), and its metrics."""
        self.kept.append((x.detach(), recon.detach()))
        g_loss = hinge_g_loss(self.module(recon).float())
        lam = adaptive_weight(rec_loss, g_loss, last_layer, self.cfg.max_weight)
        return self.cfg.weight * lam * g_loss, {"g_loss": g_loss.detach(), "adaptive_weight": lam}

    def loss(self, module: nn.Module, micro: int, generator: torch.Generator, device: torch.device
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The hinge loss of the (prepared) discriminator `module` on micro-batch `micro` of this step."""
        x, recon = self.kept[micro]
        real, fake = module(x).float(), module(recon).float()
        d_loss = hinge_d_loss(real, fake)
        metrics = {"d_loss": d_loss.detach(), "d_real_correct": (real.detach() > 0).float().mean(),
                   "d_fake_correct": (fake.detach() < 0).float().mean()}
        return d_loss, metrics
