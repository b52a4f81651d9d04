"""Training the text-conditioned latent diffusion prior: its run config, its Task for the Trainer.

The tokenizer is frozen. At the start the whole training split is encoded once to code vectors
(`tok.to_latents(x)`), normalised per channel by a shift and scale computed from them
(stored in the prior's metadata), and every distinct caption is embedded once by the text encoder.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from libcem.config import check, to_dict
from libcem.errors import LibcemError
from libcem.files import CONFIG, WEIGHTS, atomic_copy, read_record
from libcem.generative.data import DataConfig, ImageSet, Splits
from libcem.generative.diffusion import (
    DiffusionConfig,
    training_loss,
)
from libcem.generative.models.prior import PriorConfig, PriorTransformer
from libcem.generative.models.tokenizer import Tokenizer
from libcem.generative.runs import StageRun, resolve_tokenizer_dir
from libcem.generative.text import TextEncoder, embed_captions
from libcem.generative.text.encoders import ENCODERS
from libcem.generative.training.settings import OptimConfig, TrainConfig

SNAPSHOT_PROMPTS, SNAPSHOT_PER_PROMPT = 8, 6


@dataclass(frozen=True)
class TextConfig:
    encoder: str = ""  # minilm | clip | label; "" = minilm when installed, else label

    def __post_init__(self) -> None:
        check(self.encoder == "" or self.encoder in ENCODERS, "text.encoder", f"use one of {', '.join(ENCODERS)}")


@dataclass(frozen=True)
class LatentConfig:
    tokenizer: str = ""  # the trained tokenizer (run or model folder); set by --tokenizer
    snap: bool = True  # decode samples by snapping each latent vector to its nearest code


@dataclass(frozen=True)
class SnapshotConfig:
    prompts: tuple[str, ...] = ()  # the snapshot grids' prompts; () = the first 8 distinct training captions

    def __post_init__(self) -> None:
        check(all(isinstance(p, str) and p.strip() for p in self.prompts), "snapshot.prompts",
              "give non-empty prompts, e.g. [\"a red fern fractal\", \"a blue spiral fractal\"]")


@dataclass(frozen=True)
class PriorRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: PriorConfig = field(default_factory=PriorConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=100))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=2500, batch_size=64, ema_decay=0.995, sample_every=250, checkpoint_every=250))
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)


def attach_tokenizer(run: Path, source: str | Path | None, resume: bool) -> Path:
    """Copy the tokenizer's model files into RUN/tokenizer (kept on resume), so the run is self-contained."""
    dest = StageRun(run).tokenizer_copy
    if resume and (dest / WEIGHTS).is_file():
        return dest
    if not source:
        raise LibcemError("training a prior needs a trained tokenizer: pass --tokenizer RUN_OR_MODEL_FOLDER")
    model_dir = resolve_tokenizer_dir(source)
    kind = read_record(model_dir)["kind"]
    if kind != Tokenizer.kind:
        raise LibcemError(f"{model_dir} holds a '{kind}', not a tokenizer")
    for name in (CONFIG, WEIGHTS):  # each file atomically, the weights (what resume looks for) last
        atomic_copy(model_dir / name, dest / name)
    return dest


@torch.no_grad()
def encode_latents(tok: Tokenizer, data: ImageSet, batch: int = 256, progress: bool = True) -> torch.Tensor:
    """All images -> code vectors (N, D, h, w) of the frozen tokenizer."""
    device = next(tok.parameters()).device
    out = []
    for i in tqdm(range(0, len(data), batch), desc="encode latents", disable=not progress, leave=False):
        x = data.floats(torch.arange(i, min(i + batch, len(data)))).to(device)
        out.append(tok.to_latents(x).float().cpu())
    return torch.cat(out)


def snapshot_prompts(data: ImageSet, k: int = SNAPSHOT_PROMPTS) -> list[str]:
    """Up to k distinct captions in order of first appearance in the training split, empty ones
    left out (a prompt must have text): fixed per data set."""
    seen: list[str] = []
    for c in data.captions:
        if c.strip() and c not in seen:
            seen.append(c)
        if len(seen) == k:
            break
    return seen


def check_captions(data: ImageSet) -> None:
    """Before any work: a LibcemError when no training image has a caption (a prior draws images
    from text, and a sampler takes no empty prompt), a warning when some have none (they train
    with empty text, as the dropped captions of classifier-free guidance do)."""
    empty = sum(not c.strip() for c in data.captions)
    if empty == len(data.captions):
        raise LibcemError(
            f"none of the {empty} training images has a caption: the prior learns to draw images from "
            "text. Put a .txt caption beside each image, a metadata.jsonl, or the images in class "
            "sub-folders (their names become the captions); `libcem train tokenizer` needs none")
    if empty:
        warnings.warn(f"{empty} of {len(data.captions)} training images have no caption: the prior "
                      "sees them with empty text (as the dropped captions of classifier-free guidance)",
                      UserWarning, stacklevel=2)


class PriorTask:
    """Loss = the `diffusion.objective`'s loss on normalised latents (ddpm: MSE of the v / epsilon
    prediction on DDPM-noised latents; flow: of the velocity), text dropped for a
    `diffusion.cond_drop` fraction of the examples (classifier-free guidance). The latents move to
    the training device once, at the first step, and stay there."""

    def __init__(self, cfg: PriorRunConfig, splits: Splits, tokenizer: Tokenizer, encoder: TextEncoder,
                 progress: bool = True) -> None:
        self.cfg, self.splits, self.tokenizer, self.encoder = cfg, splits, tokenizer.eval(), encoder
        check_captions(splits.train)
        latents = encode_latents(tokenizer, splits.train, progress=progress)  # (N, D, h, w)
        shift = latents.mean(dim=(0, 2, 3)).tolist()  # per channel
        scale = latents.std(dim=(0, 2, 3)).clamp(min=1e-6).tolist()
        self.text = embed_captions(encoder, splits.train.captions)
        torch.manual_seed(cfg.train.seed)
        self.model = PriorTransformer(cfg.model, latents.shape[1], latents.shape[-1], encoder.dim, shift, scale)
        self.latents = self.model.normalise(latents)
        self.objective_loss = training_loss(cfg.diffusion)
        self.n_train = len(splits.train)
        self.prompts = list(cfg.snapshot.prompts) or snapshot_prompts(splits.train)
        if cfg.snapshot.prompts:  # a prompt the text encoder cannot take fails now, not at the first grid
            embed_captions(encoder, self.prompts)

    def loss(
        self, model: nn.Module, idx: torch.Tensor, generator: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.latents.device != torch.device(device):
            self.latents = self.latents.to(device)  # resident on the GPU: moved once
        x0 = self.latents[idx.to(self.latents.device)]
        tokens, mask = self.text.lookup(idx)
        keep = torch.rand(len(idx), generator=generator) >= self.cfg.diffusion.cond_drop
        tokens, mask = tokens.to(device), (mask & keep[:, None]).to(device)
        loss = self.objective_loss(lambda x, t: model(x, t, tokens, mask), x0, generator)
        return loss, {}

    def step_metrics(self, model: nn.Module) -> dict[str, float]:
        return {}

    def vocabulary(self) -> list[str]:
        return list(self.encoder.vocabulary or [])

    def pipeline(self, model: PriorTransformer):
        from libcem.generative.pipeline import Pipeline

        return Pipeline(model, self.tokenizer, self.encoder, self.cfg.diffusion, snap_to_codes=self.cfg.latent.snap)

    def snapshot(self, model: nn.Module, path: Path) -> None:
        self.pipeline(model).save_grid(self.prompts, SNAPSHOT_PER_PROMPT, path)

    def export_extra(self) -> dict:
        return {
            "data": self.cfg.data.source,
            "data_config": to_dict(self.cfg.data),
            "diffusion": to_dict(self.cfg.diffusion),
            "text_encoder": self.encoder.name,
            "vocabulary": self.vocabulary(),
            "prompts": self.prompts,
            "snap": self.cfg.latent.snap,
        }
