"""White noise clipped at black and white, as in every 8-bit image that carries it.

An 8-bit (or 16-bit) image cannot hold values below 0 or above its peak, so noise added
before it was saved is clipped there: near the ends of the range the noise is smaller than
sigma and no longer has mean zero (a black area under noise of std 50 reads 20 on average).
The denoiser assumes white noise of one std around the clean image, so on such images it
smoothed with too large a sigma and kept the clipping's bias. Here, on the 0..255 working
scale (after Foi, "Clipped noisy images: heteroskedastic modeling and practical denoising",
Signal Processing 2009):

- `moments`: the mean and variance of clip(x + sigma Z, 0, 255) for a clean level x, in
  closed form (a censored normal);
- `effective_std`: the std of the clipped noise over the image, each pixel's clean level
  taken as the 7x7 mean of the noisy image around it: the sigma the passes then assume;
- `unclip`: the output, an estimate of E[clip(x + sigma Z)], mapped back to x by inverting
  the monotone mean curve (the bias removed).

`api.denoise_white` applies them to white Gaussian noise of a given sigma when the image lies
within the range and touches an end of it (an unclipped float image with noise does not).
Since session 23 `unclip` also takes a std that depends on the clean level, and the
Poisson-Gaussian path (`api.denoise_signal_dependent`) takes out the bias of noise of variance
a x + b with it, after fitting (a, b) with each level's clipped share of that variance
(`poisson_gaussian.fit_clipped`).
On 8-bit Train400 images with clipped noise of known std 25 / 50 this gained 0.12 / 0.77 dB
over taking sigma as it is (docs/denoise-noise.md, "Clipped noise").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

LOW, HIGH = 0.0, 255.0  # the denoiser's working scale (api.INTERNAL_PEAK is HIGH)
TOUCH = 1e-3  # a pixel within this of an end is at it (8-bit values are exact there)
LOCAL = 7  # side of the window whose mean stands for a pixel's clean level
CHUNK = 1 << 20  # pixels per float64 batch: bounded memory on a 12-megapixel photo
BEYOND = 5.0  # clean levels of observed patches reach this many sigma past the ends
ESTIMATED_FROM = 5.0  # an estimated std before clipping below this is not modelled (api)
MAX_RATIO = 4.0  # clipped noise keeps over a quarter of its std (0.58 of it at a black level)
Std = float | Callable[[torch.Tensor], torch.Tensor]  # a noise std, or one per clean level


def is_clipped(img: torch.Tensor) -> bool:
    """Whether (C, H, W) on the 0..255 scale lies within the range and touches one of its ends."""
    lo, hi = float(img.min()), float(img.max())
    return lo >= LOW - TOUCH and hi <= HIGH + TOUCH and (lo <= LOW + TOUCH or hi >= HIGH - TOUCH)


def _phi(t: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)


def _cdf(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(t / math.sqrt(2)))


def moments(x: torch.Tensor, sigma: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of clip(x + sigma Z, LOW, HIGH), Z ~ N(0, 1), elementwise (float64;
    `sigma` a number or a positive tensor of x's shape)."""
    x = x.double()
    a, b = (LOW - x) / sigma, (HIGH - x) / sigma
    pa, pb, ca, cb = _phi(a), _phi(b), _cdf(a), _cdf(b)
    inside = cb - ca  # P(LOW < x + sigma Z < HIGH)
    m1 = x * inside + sigma * (pa - pb)  # E[(x + sigma Z) 1_inside]
    m2 = (x * x + sigma**2) * inside + 2 * x * sigma * (pa - pb) + sigma**2 * (a * pa - b * pb)
    mean = LOW * ca + m1 + HIGH * (1 - cb)
    second = LOW**2 * ca + m2 + HIGH**2 * (1 - cb)
    return mean, (second - mean * mean).clamp_min(0)


def effective_std(img: torch.Tensor, sigma: float) -> float:
    """The std of noise of std `sigma` after clipping, over the pixels of (C, H, W) within the
    range: each pixel's clean level is the mean of the LOCAL x LOCAL window around it.

    The levels are counted on a grid of 1 / LOCAL^2 grey levels, which holds every window
    mean of an 8-bit image exactly (its window sums are whole numbers), and the clipped
    variance is taken once per grid level instead of once per pixel: on a 12-megapixel
    photo 12,496 levels instead of 36 million values, 0.73 s instead of 2.02 s on one thread,
    the same std to 12 digits (session 34); any other image's levels move by at most half a
    step."""
    pad, cells = LOCAL // 2, LOCAL * LOCAL
    padded = F.pad(img[None], (pad,) * 4, mode="replicate")
    # each window's sum, a row of LOCAL then a column of LOCAL (exact for 8-bit levels)
    sums = F.avg_pool2d(F.avg_pool2d(padded, (1, LOCAL), stride=1, divisor_override=1),
                        (LOCAL, 1), stride=1, divisor_override=1)[0]
    top = round((HIGH - LOW) * cells)
    counts = sum(torch.bincount((part - LOW * cells).round().clamp(0, top).long(),
                                minlength=top + 1) for part in sums.reshape(-1).split(CHUNK))
    grid = LOW + torch.arange(top + 1, dtype=torch.float64, device=img.device) / cells
    total = (moments(grid, sigma)[1] * counts).sum()
    return float((total / sums.numel()).sqrt())


def unclip(out: torch.Tensor, sigma: Std, points: int = 1024) -> torch.Tensor:
    """The clean level x whose clipped mean E[clip(x + sigma(x) Z)] is `out` (linear
    interpolation on `points` levels; below the mean of x = LOW it is LOW, above that of
    x = HIGH it is HIGH). `sigma`: the noise std, or a function giving it at each clean level
    (signal-dependent noise). Same shape and dtype as `out`."""
    parts = [_level(part, sigma, LOW, HIGH, points).to(out.dtype)
             for part in out.reshape(-1).split(CHUNK)]
    return torch.cat(parts).reshape(out.shape)


def std_at(sigma: Std, x: torch.Tensor) -> torch.Tensor | float:
    """The noise std at clean levels `x`: `sigma` itself, or `sigma(x)` (at least 1e-6)."""
    return sigma(x).clamp_min(1e-6) if callable(sigma) else sigma


def _level(mean: torch.Tensor, sigma: Std, low: float, high: float,
           points: int) -> torch.Tensor:
    """The clean level x in [low, high] whose clipped mean is `mean` (float64): the mean curve
    on `points` levels, inverted by linear interpolation (clamped at its ends)."""
    xs = torch.linspace(low, high, points, dtype=torch.float64, device=mean.device)
    curve = moments(xs, std_at(sigma, xs))[0]  # increasing in x for a constant std
    if callable(sigma):  # a std growing with x can bend it down near HIGH: keep it monotone
        curve = torch.cummax(curve, 0).values
    y = mean.double().clamp(float(curve[0]), float(curve[-1])).contiguous()
    i = torch.searchsorted(curve, y).clamp(1, points - 1)
    y0, y1, x0, x1 = curve[i - 1], curve[i], xs[i - 1], xs[i]
    return x0 + (y - y0) / (y1 - y0).clamp_min(1e-12) * (x1 - x0)


def estimate_std(img: torch.Tensor, patch: int = 7, count: int = 60000,
                 generator: torch.Generator | None = None) -> tuple[float, float]:
    """The noise std of (C, H, W) on the 0..255 scale as measured, and before clipping.

    measured: `noise.estimate_sigma` of its luminance/chroma channels (the same patches for
    the same generator state), which reads the clipped noise of its weak-texture patches;
    these are often flat black or white areas, where clipping shrinks the noise most.
    before: the std of white noise which, clipped at the clean levels of those patches
    (their RGB means, the clipping's bias inverted), has the measured variance
    (`std_before`); then once more, each patch kept as weak-texture by the gradient energy
    of its own clipped noise under that std, rather than of the measured std (which kept
    too few of the unclipped flat patches: on a crop with a black band at std 10-50, 0.88-0.92
    of the std before this round, 0.95-0.97 after; docs/denoise-noise.md, "Clipped noise").
    """
    from libcem.denoiser.noise import (
        gradient_energy,
        pca_sigma,
        sample_patches,
        weak_limit,
        weak_texture_patches,
    )
    from libcem.denoiser.patches import opponent_matrix, to_opponent

    c, h, w = img.shape
    index = torch.arange(c * h * w, dtype=torch.float64, device=img.device).reshape(c, h, w)
    pos = sample_patches(index, patch, count, generator).long()  # (n, p*p) flat indices
    flat = to_opponent(img).reshape(-1)[pos].double()
    measured, kept = weak_texture_patches(flat, patch)
    levels = img.reshape(c, -1)[:, pos % (h * w)].double().mean(-1).T  # (n, C) RGB means
    # each patch lies in one luminance/chroma channel, whose noise variance is that of the
    # RGB channels weighted by the squares of its row of the (orthonormal) transform
    weights = opponent_matrix(c, img.device).double()[pos[:, 0] // (h * w)] ** 2  # (n, C)
    before = std_before(measured, levels[kept], weights[kept])
    if before <= 0:
        return measured, before
    weak = gradient_energy(flat, patch) < clipped_variance(levels, weights, before) * weak_limit(patch)
    if int(weak.sum()) < 4 * patch * patch:
        return measured, before
    return measured, std_before(pca_sigma(flat[weak]), levels[weak], weights[weak])


def clipped_variance(levels: torch.Tensor, weights: torch.Tensor, sigma: float,
                     points: int = 2048) -> torch.Tensor:
    """The variance of white noise of std `sigma` after clipping, in patches of observed
    means `levels` (n, C) whose noise mixes the channels with `weights` (n, C, rows summing
    to 1): (n,). Each observed mean is mapped to its clean level for that sigma, allowing
    levels up to BEYOND sigma past the ends (a saturated area keeps no noise)."""
    x = _level(levels, sigma, LOW - BEYOND * sigma, HIGH + BEYOND * sigma, points)
    return (weights * moments(x, sigma)[1]).sum(1)


def std_before(measured: float, levels: torch.Tensor, weights: torch.Tensor) -> float:
    """The std sigma of white noise whose clipped variance (`clipped_variance`), averaged over
    patches of observed means `levels` (n, C) with channel weights `weights` (n, C), is
    measured^2. That average grows with sigma and equals sigma^2 where nothing is clipped,
    so sigma is found by bisection in [measured, MAX_RATIO * measured]."""
    if measured <= 0 or levels.numel() == 0:
        return measured

    def short(sigma: float) -> bool:  # its clipped noise is weaker than measured
        return float(clipped_variance(levels, weights, sigma).mean()) < measured**2

    lo, hi = measured, MAX_RATIO * measured
    if short(hi):
        return hi
    while hi - lo > 1e-4 * measured:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if short(mid) else (lo, mid)
    return 0.5 * (lo + hi)
