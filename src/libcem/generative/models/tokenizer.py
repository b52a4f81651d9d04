"""The tokenizer: a convolutional VQ autoencoder with an EM-learned codebook.

x (B, C, H, W) in [0, 1] -> encoder -> z (B, D, H/f, W/f) -> EM codebook -> codes (B, H/f, W/f)
-> decoder -> reconstruction (B, C, H, W), with f = 2 ** len(channel_mult).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from libcem.config import check
from libcem.generative.models.blocks import Downsample, ResBlock, Upsample, norm
from libcem.generative.models.quantizer import EMCodebook, ProductCodebook
from libcem.generative.models.sizes import TOKENIZER_SIZES


@dataclass(frozen=True)
class TokenizerConfig:
    SIZES: ClassVar[dict[str, dict]] = TOKENIZER_SIZES
    # defaults that changed: what a saved config without the key was trained with (config.with_saved_defaults)
    SAVED_DEFAULTS: ClassVar[dict] = {"codebook_groups": 1}

    size: str = ""  # a named size from models/sizes.py that the settings below started from; "" = none
    width: int = 32  # channels of the first level
    channel_mult: tuple[int, ...] = (1, 2)  # one 2x downsampling per entry: (1, 2) -> 4x
    res_blocks: int = 1  # residual blocks per level
    latent_dim: int = 16  # numbers per latent vector (= per code)
    codebook_size: int = 128  # codes per codebook
    codebook_groups: int = 8  # >1: product quantization, latent_dim split into this many slices, one codebook each
    codebook_decay: float = 0.99  # EMA decay of the M-step; 0 = plain batch means
    commitment: float = 0.25  # weight of || z - sg(q) ||^2 in the encoder's loss
    restart_after: int = 100  # a code unused for this many steps is restarted
    usage_window: int = 100  # codebook usage = fraction of codes used in this many steps

    def __post_init__(self) -> None:
        check(self.size in ("", *self.SIZES), "model.size", f"use one of {', '.join(self.SIZES)} (or leave it empty)")
        check(8 <= self.width <= 1024, "model.width", "use 8..1024")
        check(1 <= len(self.channel_mult) <= 5, "model.channel_mult", "use 1 to 5 levels")
        check(all(m >= 1 for m in self.channel_mult), "model.channel_mult", "entries must be >= 1")
        check(0 <= self.res_blocks <= 8, "model.res_blocks", "use 0..8")
        check(1 <= self.latent_dim <= 1024, "model.latent_dim", "use 1..1024")
        check(2 <= self.codebook_size <= 65536, "model.codebook_size", "use 2..65536")
        check(1 <= self.codebook_groups <= self.latent_dim and self.latent_dim % self.codebook_groups == 0,
              "model.codebook_groups", f"use a divisor of model.latent_dim ({self.latent_dim}); 1 = one codebook")
        check(self.codebook_size ** self.codebook_groups < 2 ** 62, "model.codebook_groups",
              f"{self.codebook_size} codes ** {self.codebook_groups} groups is too many values for one 64-bit "
              "code per latent (at most 2 ** 62): use fewer groups or fewer codes per group")
        check(0.0 <= self.codebook_decay < 1.0, "model.codebook_decay", "use 0 <= decay < 1")
        check(self.commitment >= 0, "model.commitment", "must be >= 0")
        check(self.restart_after >= 1, "model.restart_after", "must be >= 1")
        check(self.usage_window >= 1, "model.usage_window", "must be >= 1")

    @property
    def downsample(self) -> int:
        return 2 ** len(self.channel_mult)


@dataclass(frozen=True)
class TokenizerMetadata:
    """What a saved tokenizer's config.json says besides its config (checked when it is loaded)."""

    in_channels: int = 3  # 1 (gray) or 3 (RGB)
    image_size: int = 32  # the training images' size

    def __post_init__(self) -> None:
        check(self.in_channels in (1, 3), "metadata.in_channels", "use 1 or 3")
        check(8 <= self.image_size <= 1024, "metadata.image_size", "use 8..1024")


@dataclass
class TokenizerOutput:
    reconstruction: torch.Tensor  # (B, C, H, W), [0, 1] scale (not clipped)
    codes: torch.Tensor  # (B, h, w)
    commitment: torch.Tensor
    perplexity: torch.Tensor


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig, in_channels: int) -> None:
        super().__init__()
        widths = [cfg.width * m for m in cfg.channel_mult]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        cin = widths[0]
        for w in widths:
            for _ in range(cfg.res_blocks):
                layers.append(ResBlock(cin, w))
                cin = w
            layers.append(Downsample(cin, w))
            cin = w
        layers += [ResBlock(cin, cin), norm(cin), nn.SiLU(), nn.Conv2d(cin, cfg.latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, D, H/f, W/f)
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig, out_channels: int) -> None:
        super().__init__()
        widths = [cfg.width * m for m in cfg.channel_mult][::-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, widths[0], 3, padding=1), ResBlock(widths[0], widths[0])]
        cin = widths[0]
        for w in widths:
            layers.append(Upsample(cin, w))
            layers += [ResBlock(w, w) for _ in range(cfg.res_blocks)]
            cin = w
        layers += [norm(cin), nn.SiLU(), nn.Conv2d(cin, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, D, h, w) -> (B, C, h*f, w*f)
        return self.net(z)


class Tokenizer(nn.Module):
    """Images in [0, 1] <-> grids of discrete codes. `in_channels` is 1 (gray) or 3 (RGB)."""

    kind = "tokenizer"
    metadata_type = TokenizerMetadata

    def __init__(self, cfg: TokenizerConfig, in_channels: int = 3, image_size: int = 32) -> None:
        super().__init__()
        self.cfg, self.in_channels, self.image_size = cfg, in_channels, image_size
        self.encoder = Encoder(cfg, in_channels)
        book = dict(decay=cfg.codebook_decay, restart_after=cfg.restart_after)
        self.quantizer = (
            EMCodebook(cfg.codebook_size, cfg.latent_dim, **book)
            if cfg.codebook_groups == 1
            else ProductCodebook(cfg.codebook_groups, cfg.codebook_size, cfg.latent_dim, **book)
        )
        self.decoder = Decoder(cfg, in_channels)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight of the decoder's last convolution (where VQGAN balances its losses' gradients)."""
        return self.decoder.net[-1].weight

    def latent_size(self, image_size: int | None = None) -> int:
        return (image_size or self.image_size) // self.cfg.downsample

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        f = self.cfg.downsample
        h, w = x.shape[-2:]
        ph, pw = (-h) % f, (-w) % f
        return (F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x), (h, w)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TokenizerOutput:
        """x: (B, C, H, W) in [0, 1]. Any H, W: the input is padded to a multiple of the downsampling."""
        xp, (h, w) = self._pad(x)
        q = self.quantizer(self.encoder(xp * 2 - 1), generator)
        recon = (self.decoder(q.quantized) + 1) / 2
        return TokenizerOutput(recon[..., :h, :w], q.codes, q.commitment, q.perplexity)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> codes (B, H/f, W/f)."""
        xp, _ = self._pad(x)
        return self.nearest_codes(self.encoder(xp * 2 - 1))

    def nearest_codes(self, z: torch.Tensor) -> torch.Tensor:
        """Latent vectors (B, D, h, w) -> the index of each one's nearest code (B, h, w), computed in fp32."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()
        return self.quantizer.nearest(flat).view(b, h, w)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) -> code vectors (B, D, h, w)."""
        return self.quantizer.lookup(codes).permute(0, 3, 1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) -> images (B, C, h*f, w*f) in [0, 1] (clipped)."""
        return ((self.decoder(self.embed(codes)) + 1) / 2).clamp(0, 1)

    # The latent API: what a model of the latents (the prior) sees of the tokenizer.

    @torch.no_grad()
    def to_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> the code vectors of their codes (B, D, H/f, W/f)."""
        return self.embed(self.encode(x))

    @torch.no_grad()
    def from_latents(self, z: torch.Tensor, snap_to_codes: bool = True) -> torch.Tensor:
        """Latent vectors (B, D, h, w) -> images (B, C, h*f, w*f) in [0, 1] (clipped).

        snap_to_codes: replace each vector by its nearest code first (what the decoder was trained
        on); else decode the vectors as they are."""
        z = z.to(self.decoder.net[0].weight.device)
        if snap_to_codes:
            return self.decode(self.nearest_codes(z))
        return ((self.decoder(z) + 1) / 2).clamp(0, 1)

    def metadata(self) -> dict:
        return {"in_channels": self.in_channels, "image_size": self.image_size}

    def activation_elements(self) -> int:
        """The most numbers one image of `image_size` needs in one layer (the widest level's feature map)."""
        return max(self.cfg.width * m * (self.image_size >> i) ** 2 for i, m in enumerate(self.cfg.channel_mult))

    def save_pretrained(self, path: str | Path, extra: dict | None = None) -> None:
        from libcem.files import save_model

        save_model(path, self, extra)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", record: dict | None = None) -> "Tokenizer":
        """Load from a model folder (model.safetensors + config.json) or a run folder (latest checkpoint)."""
        from libcem.files import load_model
        from libcem.generative.runs import resolve_model_dir

        return load_model(cls, TokenizerConfig, resolve_model_dir(path), device, record)
