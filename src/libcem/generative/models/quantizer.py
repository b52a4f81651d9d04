"""A vector quantizer whose codebook is learned by online EM (hard-assignment k-means).

E-step: each latent is assigned to its nearest code. M-step: each code moves to the
exponential moving mean of the latents assigned to it, with Laplace-smoothed counts
(van den Oord et al. 2017, "Neural Discrete Representation Learning", appendix A.1).
The codebook starts from k-means++ / Lloyd iterations on the first batch (Arthur &
Vassilvitskii 2007); codes unused for `restart_after` steps are restarted from current
encoder outputs. The encoder gets straight-through gradients and a commitment loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, D, H, W), straight-through: gradients flow to the encoder
    codes: torch.Tensor  # (B, H, W) long
    commitment: torch.Tensor  # scalar, || z - sg(q) ||^2
    perplexity: torch.Tensor  # scalar, exp(entropy) of this batch's code histogram


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum across processes in data-parallel training (a no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def _gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every process's rows, in process order (the global batch in data-parallel training)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def _broadcast(t: torch.Tensor) -> torch.Tensor:
    """Process 0's `t` on every process (a no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(t, 0)
    return t


def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """E-step: (N, D) latents, (K, D) codes -> (N,) index of the nearest code (squared L2).

    Always in float32, also under mixed precision: in fp16/bf16 the expanded distance loses the
    small differences between codes to cancellation and picks wrong codes."""
    with torch.autocast(z.device.type, enabled=False):
        z, codebook = z.float(), codebook.float()
        d = (z * z).sum(1, keepdim=True) - 2 * z @ codebook.T + (codebook * codebook).sum(1)[None]
    return d.argmin(1)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding then Lloyd iterations: (N, D) points -> (k, D) centres."""
    n = x.shape[0]
    centres = x[torch.randint(n, (1,), generator=generator, device="cpu").to(x.device)]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        # every point already a centre (e.g. identical images): any point will do
        probs = (d2 / total if total > 0 else torch.ones_like(d2)).cpu()
        nxt = x[torch.multinomial(probs, 1, generator=generator).to(x.device)]
        centres = torch.cat([centres, nxt])
        d2 = torch.minimum(d2, ((x - nxt) ** 2).sum(1))
    for _ in range(iters):
        assign = nearest_code(x, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
    return centres


class EMCodebook(nn.Module):
    """Codebook of `size` codes of `dim` numbers, fitted by online EM (not by gradients)."""

    def __init__(
        self,
        size: int,
        dim: int,
        decay: float = 0.99,
        eps: float = 1e-5,
        restart_after: int = 200,
        kmeans_iters: int = 10,
    ) -> None:
        super().__init__()
        self.size, self.dim = size, dim
        self.decay, self.eps = decay, eps
        self.restart_after, self.kmeans_iters = restart_after, kmeans_iters
        self.register_buffer("codebook", torch.zeros(size, dim))
        self.register_buffer("ema_count", torch.zeros(size))
        self.register_buffer("ema_sum", torch.zeros(size, dim))
        self.register_buffer("last_used", torch.zeros(size, dtype=torch.long))  # last step a latent chose it
        self.register_buffer("last_restart", torch.zeros(size, dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        """z: (B, D, H, W) encoder output. In training mode this also runs one M-step."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()  # (B*H*W, D)
        if self.training:
            self.em_step(flat.detach(), generator)
        codes = nearest_code(flat, self.codebook)
        q = self.codebook[codes].view(b, h, w, d).permute(0, 3, 1, 2).to(z.dtype)
        commitment = F.mse_loss(z, q.detach())
        hist = torch.bincount(codes, minlength=self.size).float()
        p = hist / hist.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        return QuantizerOutput(z + (q - z).detach(), codes.view(b, h, w), commitment, perplexity)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, D) latents -> (N,) index of each one's nearest code (the E-step, no update)."""
        return nearest_code(flat, self.codebook)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes of any shape -> their code vectors (..., D)."""
        return self.codebook[codes]

    def split_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (...) -> (..., 1): each code's index in its codebook (one group here)."""
        return codes[..., None]

    @torch.no_grad()
    def em_step(self, flat: torch.Tensor, generator: torch.Generator | None) -> None:
        """One online EM iteration on a batch of latents (N, D)."""
        g = generator or torch.Generator().manual_seed(int(self.steps))
        if not bool(self.initialised):
            self.init_kmeans(flat, g)
        assign = nearest_code(flat, self.codebook)  # E-step
        counts = _all_reduce(torch.bincount(assign, minlength=self.size).float())
        sums = _all_reduce(torch.zeros_like(self.ema_sum).index_add_(0, assign, flat))
        self.m_step(counts, sums)
        self.steps += 1
        self.last_used[counts > 0] = self.steps
        self.restart_dead(flat, g)

    def m_step(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """Move each code to the moving mean of its members (Laplace-smoothed counts)."""
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.size * self.eps) * n
        has_members = self.ema_count > self.eps
        means = self.ema_sum / smoothed.clamp_min(1e-12)[:, None]
        self.codebook.copy_(torch.where(has_members[:, None], means, self.codebook))

    def init_kmeans(self, flat: torch.Tensor, g: torch.Generator) -> None:
        """Codebook <- k-means of the first (global) batch, as process 0 computes it."""
        flat = _gather_rows(flat)
        centres = kmeans(flat, min(self.size, flat.shape[0]), self.kmeans_iters, g)
        if centres.shape[0] < self.size:  # fewer latents than codes: jittered copies
            extra = centres[torch.randint(centres.shape[0], (self.size - centres.shape[0],), generator=g)]
            centres = torch.cat([centres, extra + 1e-3 * torch.randn(extra.shape, generator=g).to(extra.device)])
        centres = _broadcast(centres.contiguous())
        self.codebook.copy_(centres)
        counts = torch.bincount(nearest_code(flat, centres), minlength=self.size).float()
        self.ema_count.copy_(counts)
        self.ema_sum.copy_(centres * counts[:, None])
        self.last_used.fill_(int(self.steps))
        self.last_restart.fill_(int(self.steps))
        self.initialised.fill_(True)

    def restart_dead(self, flat: torch.Tensor, g: torch.Generator) -> None:
        """Codes unused for `restart_after` steps jump to random current latents."""
        dead = (self.steps - torch.maximum(self.last_used, self.last_restart)) >= self.restart_after
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        flat = _gather_rows(flat)
        pick = _broadcast(flat[torch.randint(flat.shape[0], (n_dead,), generator=g).to(flat.device)].contiguous())
        mean_count = self.ema_count.sum() / self.size
        self.codebook[dead] = pick
        self.ema_count[dead] = mean_count
        self.ema_sum[dead] = pick * mean_count
        self.last_restart[dead] = self.steps

    def usage(self, window: int) -> float:
        """Fraction of codes that latents chose at least once in the last `window` EM steps
        (a restart alone does not count as use)."""
        return float(((self.steps - self.last_used) < window).float().mean())


class ProductCodebook(nn.Module):
    """Product quantization: the D numbers of a latent split into `groups` slices of D / groups,
    each quantized by its own EM codebook of `size` codes (Jegou et al. 2011, "Product quantization
    for nearest neighbor search"). One latent then has size ** groups possible values for
    groups * size stored codes: far more detail per latent for the same codebook memory.

    A latent's code is one integer, the mixed-radix number of its group codes (group 0 least
    significant), so codes keep the shape (B, H, W) that a single codebook gives."""

    def __init__(self, groups: int, size: int, dim: int, **kwargs) -> None:
        super().__init__()
        if dim % groups:
            raise ValueError(f"latent_dim {dim} is not a multiple of codebook_groups {groups}")
        self.groups, self.size = groups, size
        self.books = nn.ModuleList(EMCodebook(size, dim // groups, **kwargs) for _ in range(groups))
        self.register_buffer("radix", size ** torch.arange(groups, dtype=torch.long), persistent=False)

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        outs = [book(part, generator) for book, part in zip(self.books, z.chunk(self.groups, dim=1))]
        codes = sum(o.codes * r for o, r in zip(outs, self.radix.tolist()))
        return QuantizerOutput(
            torch.cat([o.quantized for o in outs], dim=1),
            codes,
            torch.stack([o.commitment for o in outs]).mean(),  # = || z - sg(q) ||^2 over all D numbers
            torch.stack([o.perplexity for o in outs]).mean(),  # per codebook
        )

    def split_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (...) -> (..., groups): each group's index in its own codebook."""
        return codes[..., None] // self.radix.to(codes.device) % self.size

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        parts = flat.chunk(self.groups, dim=1)
        return sum(book.nearest(part) * r for book, part, r in zip(self.books, parts, self.radix.tolist()))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        split = self.split_codes(codes)
        return torch.cat([book.lookup(split[..., i]) for i, book in enumerate(self.books)], dim=-1)

    def usage(self, window: int) -> float:
        """Mean over the groups of the fraction of codes used in the last `window` EM steps."""
        return sum(book.usage(window) for book in self.books) / self.groups
