"""The prior's network: a transformer over the tokenizer's latent grid, conditioned on time and text.

x_t (B, D, h, w), timestep t (B,), text tokens (B, L, E) + mask (B, L) -> prediction (B, D, h, w).
Patch tokens with fixed 2-D sine-cosine positions; adaLN-Zero time conditioning (Peebles & Xie 2023, "Scalable
Diffusion Models with Transformers"); multi-head self-attention, then multi-head cross-attention
to the text tokens. A learned null token is always present among the keys, so a row whose text
mask is all False is the unconditional model used by classifier-free guidance. This module knows
nothing of noise schedules or samplers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from libcem.config import check
from libcem.generative.models.sizes import PRIOR_SIZES


@dataclass(frozen=True)
class PriorConfig:
    SIZES: ClassVar[dict[str, dict]] = PRIOR_SIZES

    size: str = ""  # a named size from models/sizes.py that the settings below started from; "" = none
    width: int = 128  # channels of every token
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads (width must divide by heads)
    mlp_ratio: float = 4.0  # hidden width of the MLP = mlp_ratio * width
    patch_size: int = 1  # latent cells per token side

    def __post_init__(self) -> None:
        check(self.size in ("", *self.SIZES), "model.size", f"use one of {', '.join(self.SIZES)} (or leave it empty)")
        check(16 <= self.width <= 4096, "model.width", "use 16..4096")
        check(1 <= self.depth <= 64, "model.depth", "use 1..64")
        check(self.heads >= 1 and self.width % self.heads == 0, "model.heads", "must divide model.width")
        check(0.5 <= self.mlp_ratio <= 16, "model.mlp_ratio", "use 0.5..16")
        check(1 <= self.patch_size <= 8, "model.patch_size", "use 1..8")


@dataclass(frozen=True)
class PriorMetadata:
    """What a saved prior's config.json says besides its config (checked when it is loaded)."""

    latent_dim: int = 16
    latent_size: int = 8
    text_dim: int = 384
    latent_shift: tuple[float, ...] | None = None
    latent_scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check(1 <= self.latent_dim <= 1024, "metadata.latent_dim", "use 1..1024")
        check(1 <= self.latent_size <= 512, "metadata.latent_size", "use 1..512")
        check(1 <= self.text_dim <= 1 << 20, "metadata.text_dim", "use 1..1048576")
        for key in ("latent_shift", "latent_scale"):
            values = getattr(self, key)
            check(values is None or (len(values) == self.latent_dim and all(math.isfinite(v) for v in values)),
                  f"metadata.{key}", "needs metadata.latent_dim finite numbers")
        check(self.latent_scale is None or min(self.latent_scale) > 0, "metadata.latent_scale", "must be > 0")


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) sinusoidal features (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid*grid, dim) fixed 2-D sine-cosine position embeddings, rows then columns (as in DiT)."""
    quarter = dim // 4
    freqs = 1.0 / 10_000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    pos = torch.arange(grid, dtype=torch.float32)
    ys, xs = torch.meshgrid(pos, pos, indexing="ij")
    parts = [f(c.reshape(-1, 1) * freqs) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    out = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(out, (0, dim - out.shape[1]))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head attention with `scaled_dot_product_attention`; self-attention when `context` is None."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, H, N, C/H)
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        src = x if context is None else context
        k, v = self.kv(src).chunk(2, dim=-1)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L): True = attend
        y = F.scaled_dot_product_attention(self._split(self.q(x)), self._split(k), self._split(v), attn_mask=attn_mask)
        return self.out(y.transpose(1, 2).reshape(x.shape))


class Block(nn.Module):
    """adaLN-Zero self-attention and MLP, plus pre-norm cross-attention to the text tokens."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.cross_attn = Attention(width, heads)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s1, g1, a1, s2, g2, a2 = self.ada(F.silu(c)).chunk(6, dim=-1)
        x = x + a1[:, None] * self.self_attn(modulate(self.norm1(x), s1, g1))
        x = x + self.cross_attn(self.norm2(x), ctx, mask)
        return x + a2[:, None] * self.mlp(modulate(self.norm3(x), s2, g2))


class PriorTransformer(nn.Module):
    """The denoiser network of the latent diffusion prior (see the module docstring for shapes).

    `latent_shift` and `latent_scale` (one number per latent channel) are the normalisation of the
    tokenizer's code vectors (x = (z - shift) / scale), computed once from the training latents;
    they live here so that a saved prior carries them. The network only ever sees normalised latents.
    """

    kind = "prior"
    metadata_type = PriorMetadata

    def __init__(
        self,
        cfg: PriorConfig,
        latent_dim: int = 16,
        latent_size: int = 8,
        text_dim: int = 384,
        latent_shift: list[float] | None = None,
        latent_scale: list[float] | None = None,
    ) -> None:
        super().__init__()
        if latent_size % cfg.patch_size:
            raise ValueError(f"latent grid {latent_size} is not a multiple of model.patch_size={cfg.patch_size}")
        self.cfg, self.latent_dim, self.latent_size, self.text_dim = cfg, latent_dim, latent_size, text_dim
        self.latent_shift = [float(v) for v in (latent_shift or [0.0] * latent_dim)]
        self.latent_scale = [float(v) for v in (latent_scale or [1.0] * latent_dim)]
        if len(self.latent_shift) != latent_dim or len(self.latent_scale) != latent_dim:
            raise ValueError(f"latent_shift and latent_scale need {latent_dim} numbers, one per latent channel")
        w, p = cfg.width, cfg.patch_size
        self.grid = latent_size // p
        self.patch_in = nn.Linear(latent_dim * p * p, w)
        self.register_buffer("pos", sincos_2d(self.grid, w)[None], persistent=False)  # (1, N, W)
        self.time = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.text_in = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, w))
        self.null = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        self.pool = nn.Linear(w, w)
        self.blocks = nn.ModuleList(Block(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(w, 2 * w)
        self.patch_out = nn.Linear(w, latent_dim * p * p)
        for layer in (self.ada_out, self.patch_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, h, w) -> (B, N, D*p*p)
        p = self.cfg.patch_size
        b, d, h, w = x.shape
        x = x.view(b, d, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), d * p * p)

    def _image(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, N, D*p*p) -> (B, D, h, w)
        p, g, d = self.cfg.patch_size, self.grid, self.latent_dim
        b = tokens.shape[0]
        x = tokens.view(b, g, g, d, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, d, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, D, h, w), t (B,), context (B, L, E), mask (B, L) bool -> (B, D, h, w)."""
        b = x.shape[0]
        h = self.patch_in(self._tokens(x)) + self.pos  # (B, N, W)
        ctx = torch.cat([self.null.expand(b, -1, -1), self.text_in(context)], dim=1)  # (B, 1+L, W)
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), mask.bool()], dim=1)
        weights = keep.to(ctx.dtype)[..., None]
        pooled = (ctx * weights).sum(1) / weights.sum(1)  # (B, W)
        c = self.time(timestep_features(t, self.cfg.width).to(h.dtype)) + self.pool(pooled)
        for block in self.blocks:
            h = block(h, c, ctx, keep)
        shift, scale = self.ada_out(F.silu(c)).chunk(2, dim=-1)
        return self._image(self.patch_out(modulate(self.norm_out(h), shift, scale)))

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, D, h, w) -> the network's latents."""
        return (z - self._stat(self.latent_shift, z)) / self._stat(self.latent_scale, z)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """The network's latents (B, D, h, w) -> code-vector space."""
        return x * self._stat(self.latent_scale, x) + self._stat(self.latent_shift, x)

    @staticmethod
    def _stat(values: list[float], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

    def metadata(self) -> dict:
        return {
            "latent_dim": self.latent_dim,
            "latent_size": self.latent_size,
            "text_dim": self.text_dim,
            "latent_shift": self.latent_shift,
            "latent_scale": self.latent_scale,
        }

    def activation_elements(self) -> int:
        """The most numbers one image needs in one layer: attention scores or the MLP's hidden tokens."""
        n = self.grid**2
        return max(self.cfg.heads * n * n, n * int(self.cfg.width * self.cfg.mlp_ratio))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        record: dict | None = None) -> "PriorTransformer":
        """Load from a model folder or a prior run folder (latest checkpoint)."""
        from libcem.files import load_model
        from libcem.generative.runs import resolve_model_dir

        return load_model(cls, PriorConfig, resolve_model_dir(path), device, record)
