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
On 8-bit Train400 images with clipped noise of known std 25 / 50 this gained 0.12 / 0.77 dB
over taking sigma as it is (docs/denoise.md, "Clipped noise").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOW, HIGH = 0.0, 255.0  # the denoiser's working scale (api.INTERNAL_PEAK is HIGH)
TOUCH = 1e-3  # a pixel within this of an end is at it (8-bit values are exact there)
LOCAL = 7  # side of the window whose mean stands for a pixel's clean level
CHUNK = 1 << 20  # pixels per float64 batch: bounded memory on a 12-megapixel photo


def is_clipped(img: torch.Tensor) -> bool:
    """Whether (C, H, W) on the 0..255 scale lies within the range and touches one of its ends."""
    lo, hi = float(img.min()), float(img.max())
    return lo >= LOW - TOUCH and hi <= HIGH + TOUCH and (lo <= LOW + TOUCH or hi >= HIGH - TOUCH)


def _phi(t: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)


def _cdf(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(t / math.sqrt(2)))


def moments(x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of clip(x + sigma Z, LOW, HIGH), Z ~ N(0, 1), elementwise (float64)."""
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
    """The std of noise of std `sigma` after clipping, over the pixels of (C, H, W): each
    pixel's clean level is the mean of the LOCAL x LOCAL window around it."""
    pad = LOCAL // 2
    level = F.avg_pool2d(F.pad(img[None], (pad,) * 4, mode="replicate"), LOCAL, stride=1)[0]
    total = sum(moments(part, sigma)[1].sum() for part in level.reshape(-1).split(CHUNK))
    return float((total / level.numel()).sqrt())


def unclip(out: torch.Tensor, sigma: float, points: int = 1024) -> torch.Tensor:
    """The clean level x whose clipped mean E[clip(x + sigma Z)] is `out` (linear
    interpolation on `points` levels; below the mean of x = LOW it is LOW, above that of
    x = HIGH it is HIGH). Same shape and dtype as `out`."""
    xs = torch.linspace(LOW, HIGH, points, dtype=torch.float64, device=out.device)
    curve = moments(xs, sigma)[0]  # increasing in x
    parts = []
    for part in out.reshape(-1).split(CHUNK):
        y = part.double().clamp(float(curve[0]), float(curve[-1]))
        i = torch.searchsorted(curve, y).clamp(1, points - 1)
        y0, y1, x0, x1 = curve[i - 1], curve[i], xs[i - 1], xs[i]
        parts.append((x0 + (y - y0) / (y1 - y0).clamp_min(1e-12) * (x1 - x0)).to(out.dtype))
    return torch.cat(parts).reshape(out.shape)
