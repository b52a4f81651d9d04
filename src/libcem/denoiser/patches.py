"""Patches as graph nodes: colour transform, block matching, patch transforms and aggregation.

Images here are float tensors (C, H, W). A patch position is the flat index `row * Wn + col`
of its top-left corner, with Hn = H - p + 1 and Wn = W - p + 1 positions per axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def opponent_matrix(channels: int, device=None) -> torch.Tensor:
    """Orthonormal colour transform (C, C): luminance first, then two chroma axes.

    Orthonormal, so white noise of std sigma stays white with std sigma (as in CBM3D, Dabov 2007).
    """
    if channels == 1:
        return torch.ones(1, 1, device=device)
    s3, s2, s6 = math.sqrt(3.0), math.sqrt(2.0), math.sqrt(6.0)
    rows = [[1 / s3, 1 / s3, 1 / s3], [1 / s2, 0.0, -1 / s2], [1 / s6, -2 / s6, 1 / s6]]
    return torch.tensor(rows, device=device)


def to_opponent(img: torch.Tensor) -> torch.Tensor:
    """(C, H, W) RGB or gray -> (C, H, W) luminance/chroma."""
    m = opponent_matrix(img.shape[0], img.device).to(img.dtype)
    return torch.einsum("dc,chw->dhw", m, img)


def from_opponent(img: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_opponent` (the matrix is orthonormal, so its transpose)."""
    m = opponent_matrix(img.shape[0], img.device).to(img.dtype)
    return torch.einsum("cd,chw->dhw", m, img)


def pad_to_grid(img: torch.Tensor, patch: int, step: int) -> torch.Tensor:
    """Reflect-pad bottom/right so a reference grid of stride `step` (or of any divisor of it)
    ends on the last patch."""
    _, h, w = img.shape
    extra_h = (-(h - patch)) % step
    extra_w = (-(w - patch)) % step
    if extra_h == 0 and extra_w == 0:
        return img
    mode = "reflect" if min(h, w) > max(extra_h, extra_w) else "replicate"
    return F.pad(img[None], (0, extra_w, 0, extra_h), mode=mode)[0]


def reference_positions(h: int, w: int, patch: int, step: int, device=None) -> torch.Tensor:
    """Flat positions (N,) of the reference patches on the stride-`step` grid."""
    wn = w - patch + 1
    rows = torch.arange(0, h - patch + 1, step, device=device)
    cols = torch.arange(0, wn, step, device=device)
    return (rows[:, None] * wn + cols[None, :]).reshape(-1)


def block_match(feats: torch.Tensor, step: int, radius: int, k: int, tile: int = 4) -> torch.Tensor:
    """K most similar patches of each reference patch within its search window (Dabov 2007).

    feats: (d, Hn, Wn) a feature vector per patch position, channels first (e.g. the luminance
    patch, as `F.unfold` lays it out, so no transposed copy is needed); the
    distance is the squared Euclidean one. References lie on the stride-`step` grid; they are
    processed in tiles of tile x tile references whose joint search area is compared at once
    with one matrix product. The reference is always its own first neighbour. Tiles of 4 x 4
    references took 0.6-0.85x the time of 8 x 8 on one CPU thread (256x256 image, strides 4 and
    6, K 16 and 64): a tile's joint area holds fewer candidates outside each one's own window.
    Returns positions (N, K), N the number of references, in row-major grid order.
    """
    d, hn, wn = feats.shape
    nr, nc = (hn - 1) // step + 1, (wn - 1) // step + 1
    nth, ntw = -(-nr // tile), -(-nc // tile)
    span = (tile - 1) * step + 2 * radius + 1  # side of a tile's joint search area
    pad_h = nth * tile * step + span - hn - radius
    pad_w = ntw * tile * step + span - wn - radius
    fpad = F.pad(feats, (radius, pad_w, radius, pad_h))  # (d, Hp, Wp)
    inside = F.pad(torch.ones(1, hn, wn, device=feats.device), (radius, pad_w, radius, pad_h))[0]
    fnorm = (fpad * fpad).sum(0)  # (Hp, Wp)
    refs = fpad[:, radius:radius + nth * tile * step:step, radius:radius + ntw * tile * step:step]
    refs = refs.reshape(d, nth, tile, ntw, tile).permute(1, 3, 2, 4, 0).reshape(nth, ntw, -1, d)
    local = torch.arange(tile, device=feats.device) * step  # reference offsets inside a tile
    grid = torch.arange(span, device=feats.device)
    near = (grid[None, :] - radius - local[:, None]).abs() <= radius  # (tile, span)
    window = (near[:, None, :, None] & near[None, :, None, :]).reshape(tile * tile, -1)
    self_idx = ((local + radius)[:, None] * span + (local + radius)[None, :]).reshape(-1)
    # candidates outside a reference's window, or outside the image, at distance +inf: added
    # to the squared norms before the product, instead of masked after it
    outside = torch.zeros(window.shape, dtype=feats.dtype, device=feats.device)
    outside.masked_fill_(~window, float("inf"))  # (T, span * span)
    fnorm.masked_fill_(inside == 0, float("inf"))
    out = []
    for ty in range(nth):  # loop over bands of tiles
        r0 = ty * tile * step
        band = fpad[:, r0:r0 + span].unfold(2, span, tile * step)[:, :, :ntw]  # (d, S, ntw, S)
        cand = band.permute(2, 0, 1, 3).reshape(ntw, d, -1)  # (ntw, d, span * span)
        cnorm = fnorm[r0:r0 + span].unfold(1, span, tile * step)[:, :ntw].permute(1, 0, 2)
        base = cnorm.reshape(ntw, 1, -1) + outside  # (ntw, T, span * span)
        dist = torch.baddbmm(base, refs[ty], cand, alpha=-2.0)
        dist[:, torch.arange(tile * tile, device=feats.device), self_idx] = -float("inf")
        idx = torch.topk(dist, k, dim=2, largest=False).indices  # (ntw, T, K)
        rows = r0 + idx // span - radius
        c0 = torch.arange(ntw, device=feats.device) * tile * step  # first column of each tile
        cols = c0[:, None, None] + idx % span - radius
        out.append((rows * wn + cols).reshape(ntw, tile, tile, k))
    pos = torch.stack(out).permute(0, 2, 1, 3, 4).reshape(nth * tile, ntw * tile, k)
    return pos[:nr, :nc].reshape(-1, k)


def all_patches(img: torch.Tensor, patch: int) -> torch.Tensor:
    """(C, H, W) -> (C, Hn * Wn, p * p): every patch of each channel, indexed by flat position
    (one copy of a strided view: 2.7x faster than `F.unfold` and a transpose)."""
    return img.unfold(1, patch, 1).unfold(2, patch, 1).reshape(img.shape[0], -1, patch * patch)


def dct_1d(n: int) -> torch.Tensor:
    """Orthonormal DCT-II of length n, float64 (n, n): row k is basis vector k, row 0 constant."""
    i = torch.arange(n, dtype=torch.float64)
    d = torch.cos(math.pi * (i[None, :] + 0.5) * i[:, None] / n) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def dct_matrix(patch: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal 2-D DCT-II on flattened p x p patches: (p*p, p*p), coefficients = D @ x."""
    d = dct_1d(patch)
    return torch.kron(d, d).to(device=device, dtype=dtype)


FOLD_BAND_BYTES = 1 << 20  # aggregation folds bands of about this size on a CPU (`image`)


class PatchAccumulator:
    """Weighted sum of overlapping patch estimates, folded back into an image at the end.

    Each patch's pixels are also weighted by a separable Kaiser window of shape `window` (BM3D's
    aggregation, Dabov 2007), so that a pixel trusts the patches it sits near the centre of;
    window = 0 weights every pixel of a patch alike."""

    def __init__(self, shape: tuple[int, int, int], patch: int, device=None, window: float = 0.0) -> None:
        c, h, w = shape
        self.shape, self.patch = shape, patch
        npos = (h - patch + 1) * (w - patch + 1)
        self.num = torch.zeros(npos, c * patch * patch, device=device)  # (Hn * Wn, C * p * p)
        self.den = torch.zeros(npos, device=device)
        side = torch.kaiser_window(patch, periodic=False, beta=window) if window > 0 else torch.ones(patch)
        self.window = (side[:, None] * side[None, :]).reshape(-1).to(device)  # (p * p,)

    def add(self, estimates: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor) -> None:
        """estimates (N, K, C, p*p) at positions (N, K), one weight per group (N,) or per
        patch (N, K)."""
        flat = positions.reshape(-1)
        wk = (weights if weights.dim() == 2 else weights[:, None]).expand_as(positions)
        scale = wk[..., None, None] * self.window  # (N, K, 1, p * p): group weight x window
        # weighted into a fresh row-major table: the estimates of a pass often come permuted
        est = torch.empty(estimates.shape, dtype=self.num.dtype, device=self.num.device)
        torch.mul(estimates, scale, out=est)
        self.num.index_add_(0, flat, est.reshape(flat.numel(), -1))
        self.den.index_add_(0, flat, wk.reshape(-1))

    def image(self) -> torch.Tensor:
        """(C, H, W) weighted average; every pixel is covered by the reference grid.

        On a CPU the patch sums are folded in bands of position rows of about FOLD_BAND_BYTES,
        each transposed while it is in cache, instead of transposing the whole
        (Hn * Wn, C * p * p) table at once (0.1-1.1 s per pass on a 512x512 colour image,
        reading across memory with a stride of C * p * p floats; 0.12-0.48 s in bands).
        Session 26, default settings, sigma 25: that image in 0.92x the time and 0.89x the
        peak memory (one thread); the 12-megapixel photo in the same time, at 0.90x the
        memory per tile worker (docs/denoise-log.md, session 26)."""
        (c, h, w), p = self.shape, self.patch
        hn, wn = h - p + 1, w - p + 1
        on_cpu = self.num.device.type == "cpu"
        rows = max(1, FOLD_BAND_BYTES // (4 * wn * self.num.shape[1])) if on_cpu else hn
        num = torch.zeros(c, h, w, device=self.num.device)
        for r0 in range(0, hn, rows):  # fold the transposed band: 2.5x faster than the strided view
            r1 = min(r0 + rows, hn)
            band = self.num[r0 * wn:r1 * wn].T.contiguous()[None]
            num[:, r0:r1 + p - 1] += F.fold(band, (r1 - r0 + p - 1, w), p)[0]
        # each pixel's weight is the window-weighted sum of its patches' weights
        kernel = self.window.reshape(1, 1, self.patch, self.patch)
        den = F.conv_transpose2d(self.den.reshape(1, 1, h - self.patch + 1, -1), kernel)[0]
        return num / den
