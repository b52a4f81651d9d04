"""Training the tokenizer: its run config, its Task for the Trainer, and held-out evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from libcem.generative.data import DataConfig, ImageSet, Splits
from libcem.generative.data.base import evenly_spaced
from libcem.generative.models.tokenizer import Tokenizer, TokenizerConfig
from libcem.generative.training.adversarial import AdversarialConfig, Adversary
from libcem.generative.training.settings import OptimConfig, TrainConfig
from libcem.imaging import grid, psnr, save_png, side_by_side

SNAPSHOT_IMAGES = 32


@dataclass(frozen=True)
class TokenizerRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    # defaults sized so that `libcem train tokenizer --data digits` takes about 10 minutes on 2 CPU cores
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=3000, batch_size=32))
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)  # off by default (weight 0)


class TokenizerTask:
    """Loss = MSE(reconstruction, image) + commitment * ||z - sg(q)||^2; the codebook learns by EM.

    With adversarial.weight > 0 a patch discriminator (the Trainer's auxiliary network) adds
    VQGAN's adaptively weighted adversarial term from step adversarial.start_step on."""

    def __init__(self, cfg: TokenizerRunConfig, splits: Splits) -> None:
        self.cfg, self.splits = cfg, splits
        torch.manual_seed(cfg.train.seed)
        self.model = Tokenizer(cfg.model, splits.train.channels, splits.train.size)
        self.n_train = len(splits.train)
        adv = cfg.adversarial
        self.auxiliary = Adversary(adv, cfg.optim, splits.train.channels, splits.train.size, cfg.train.seed + 1) \
            if adv.weight > 0 else None

    def loss(
        self, model: nn.Module, idx: torch.Tensor, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.splits.train.augmented(idx, generator).to(device)  # random crops / flips when configured
        out = model(x, generator)
        recon = F.mse_loss(out.reconstruction.float(), x)
        loss = recon + self.cfg.model.commitment * out.commitment.float()
        metrics = {
            "recon": recon.detach(),
            "psnr": psnr(out.reconstruction.detach().float(), x).mean(),
            "perplexity": out.perplexity.detach(),
        }
        if self.auxiliary is not None and self.auxiliary.on:
            g_term, g_metrics = self.auxiliary.generator_loss(x, out.reconstruction, recon, self.model.last_layer)
            loss = loss + g_term
            metrics.update(g_metrics)
        return loss, metrics

    def step_metrics(self, model: nn.Module) -> dict[str, float]:
        return {"usage": model.quantizer.usage(self.cfg.model.usage_window)}

    def snapshot(self, model: nn.Module, path: Path) -> None:
        test = self.splits.test
        x = test.floats(evenly_spaced(len(test), SNAPSHOT_IMAGES))
        recon = reconstruct(model, x)
        save_png(grid(side_by_side(x, recon), cols=8), path, upscale=2)

    def export_extra(self) -> dict:
        from libcem.config import to_dict

        return {"data": self.cfg.data.source, "data_config": to_dict(self.cfg.data)}


@torch.no_grad()
def reconstruct(model: Tokenizer, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> reconstructions in [0, 1], in eval mode on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs = [model(x[i : i + batch].to(device)).reconstruction.clamp(0, 1).cpu() for i in range(0, len(x), batch)]
    model.train(was_training)
    return torch.cat(outs)


def evaluate(model: Tokenizer, data: ImageSet) -> dict[str, float]:
    """Mean PSNR (dB) over `data` and the fraction of codes used on it."""
    x = data.floats()
    recon = reconstruct(model, x)
    device = next(model.parameters()).device
    codes = torch.cat([model.encode(x[i : i + 256].to(device)).cpu() for i in range(0, len(x), 256)])
    split = model.quantizer.split_codes(codes).flatten(0, -2)  # (N, groups): each codebook's own index
    used = sum(torch.unique(col).numel() for col in split.T) / (model.cfg.codebook_size * split.shape[1])
    return {"psnr": float(psnr(recon, x).mean()), "codes_used": used, "images": len(data)}
