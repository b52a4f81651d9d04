"""Signal-dependent (Poisson-Gaussian) noise: Var[y | x] = a x + b, fitted from the image, and the
generalised Anscombe transform that makes it unit-variance Gaussian noise for the denoiser.

Fit (after Foi, Trimeche, Katkovnik & Egiazarian, IEEE TIP 2008, with the weak-texture PCA
estimate of `noise` per level): patches are sorted by their mean into equal-count level bins;
each bin's noise variance is estimated from its weak-texture patches; (a, b) is the
least-absolute-deviation line through (level, variance), with a, b >= 0 (texture can only
inflate a bin's variance; the L1 fit lets such bins go), since session 25 through the bins
whose weak-texture patches read as Gaussian noise only (`fit_levels`: texture is
heavy-tailed, and a dark flat background beside bright texture had read as noise that grows
steeply). When the noise is also spatially correlated (`camera`), `estimate_correlated`
reads each bin's variance under the fitted correlation instead, and fits a lower envelope.
Transform: generalised Anscombe (Murtagh, Starck & Bijaoui 1995); inverse: the closed-form
approximation of the exact unbiased inverse (Makitalo & Foi, IEEE TIP 2011 and 2013).
"""

from __future__ import annotations

import math
from functools import partial

import torch

from libcem.denoiser import clipping
from libcem.denoiser.correlated import (
    FIT_PATCH,
    LAG,
    NO_NOISE_VARIANCE,
    energy_quantile_variance,
    fit_lags,
)
from libcem.denoiser.noise import excess_kurtosis, sample_patches, weak_texture_patches

LEVEL_BINS = 16  # level bins of the (level, variance) fit
MIN_BIN_PATCHES = 500  # fewer level bins on small images, so that each holds at least this many
GAUSSIAN_KURTOSIS = 0.1  # a bin's noise reads as Gaussian up to this excess kurtosis
MIN_GAUSSIAN_BINS = 3  # fewer Gaussian bins than this show no slope
MIN_GAUSSIAN_SPAN = 0.25  # nor Gaussian bins spanning less than this share of the levels
MIN_SHARE = 0.05  # a bin's variance is divided by at most 1 / MIN_SHARE for its clipping


def estimate(img: torch.Tensor, patch: int = 7, max_patches: int = 80000,
             generator: torch.Generator | None = None) -> tuple[float, float]:
    """(a, b) of Var[y | x] = a x + b from a noisy (C, H, W) image, in its units."""
    return fit_levels(*level_variances(img, patch, max_patches, generator))


def level_variances(img: torch.Tensor, patch: int = 7, max_patches: int = 80000,
                    generator: torch.Generator | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The points of the (a, b) fit: the mean level and the weak-texture noise variance of
    each of LEVEL_BINS equal-count bins of patches sorted by their mean, and whether the
    bin's weak-texture patches read as Gaussian noise (`noise.excess_kurtosis` at most
    GAUSSIAN_KURTOSIS; else texture inflated its variance), (bins,) each.

    An image of fewer than LEVEL_BINS x MIN_BIN_PATCHES patches (about 96x96 gray) has fewer
    bins, each of at least MIN_BIN_PATCHES patches (at least one bin): the weak-texture
    estimate reads low on few patches (pure noise of std 10 read 9.72 / 9.55 / 8.77 / 7.95 /
    0.57 on 2000 / 1000 / 500 / 200 / 50 patches of 7x7, the mean of 20 draws), and on an
    8x130 photo the 16 bins' 46 patches each read 0: no noise at any level, and `auto` left
    the image as it was. Fewer than MIN_GAUSSIAN_BINS bins show no slope (`fit_levels`): the
    white model. (1000 lost the bright-grass case of tests/test_denoise_auto.py, where bins
    of 1,100 patches of grass read as Gaussian; docs/denoise-noise.md, "Small images".)"""
    samples = sample_patches(img, patch, max_patches, generator).double()  # (n, p*p)
    order = samples.mean(1).argsort()
    bins = max(1, min(LEVEL_BINS, samples.shape[0] // MIN_BIN_PATCHES))
    levels, variances, gaussian = [], [], []
    for part in order.chunk(bins):  # equal-count bins of patch mean
        group = samples[part]
        sigma, kept = weak_texture_patches(group, patch)
        levels.append(float(group.mean()))
        variances.append(sigma**2)
        gaussian.append(excess_kurtosis(group[kept]) <= GAUSSIAN_KURTOSIS)
    return torch.tensor(levels), torch.tensor(variances), torch.tensor(gaussian)


def fit_levels(levels: torch.Tensor, variances: torch.Tensor, gaussian: torch.Tensor,
               clipped: bool = False) -> tuple[float, float]:
    """(a, b) from `level_variances`' points: the line (`fit_line`, or `fit_clipped` on an
    image clipped at black and white) through the bins whose noise reads as Gaussian, when
    at least MIN_GAUSSIAN_BINS of them span at least MIN_GAUSSIAN_SPAN of the levels. Fewer,
    or bunched at a few levels, they cannot show a slope: (0, their median variance), noise
    that does not grow with brightness (texture filling the other bins, bright feathers over a
    dark background, had read as steep growth until session 25). None (texture in every bin,
    as on a clean photo): (0, the least bin variance), each bin's being an upper bound."""
    span = float(levels.max() - levels.min())
    trusted = levels[gaussian]
    if trusted.numel() == 0:  # texture everywhere: the least of the bins' upper bounds
        return 0.0, float(variances.min())
    if (trusted.numel() < MIN_GAUSSIAN_BINS
            or float(trusted.max() - trusted.min()) < MIN_GAUSSIAN_SPAN * span):
        return 0.0, float(variances[gaussian].median())
    params = fit_line(trusted, variances[gaussian])
    if clipped:  # the fit with the clipping's share of each level's variance
        params = fit_clipped(trusted, variances[gaussian], start=params)
    return params


def estimate_correlated(img: torch.Tensor, max_patches: int = 60000, quantile: float = 0.05,
                        envelope: float = 0.1, generator: torch.Generator | None = None,
                        ) -> tuple[float, float]:
    """(a, b) of Var[y | x] = a x + b when the noise is also spatially correlated (demosaiced).

    The weak-texture PCA estimate of `estimate` sees only the noise's weakest direction, which
    demosaicing nearly empties. Here the correlation's shape is fitted on the whole image
    (`correlated.fit_lags`); each level bin's variance is its patches' energy under that shape
    at a low `quantile` (`correlated.energy_quantile_variance`: a twentieth of a bin need be
    flat), and the line is a lower envelope, a quantile regression at `envelope` (a textured
    bin's variance is only ever too high). Patches with a clipped pixel are left out. Both
    quantiles were chosen on skimage crops through a simulated camera (docs/denoise-noise.md,
    "Camera noise"): the median line followed the texture of the middle levels."""
    patch = min(FIT_PATCH, img.shape[1], img.shape[2])
    lag = min(LAG, patch - 2)
    samples = sample_patches(img, patch, max_patches, generator).double()
    unclipped = ((samples > img.min()) & (samples < img.max())).all(1)
    if int(unclipped.sum()) >= LEVEL_BINS * 4 * patch * patch:  # clipping shrinks the noise
        samples = samples[unclipped]
    r = fit_lags(samples, patch, lag)
    if r[0] < NO_NOISE_VARIANCE:  # no noise found (a flat or clean image)
        return 0.0, 0.0
    order = samples.mean(1).argsort()
    levels, variances = [], []
    for part in order.chunk(LEVEL_BINS):
        levels.append(float(samples[part].mean()))
        variances.append(energy_quantile_variance(samples[part], r, patch, lag, quantile))
    return fit_line(torch.tensor(levels), torch.tensor(variances), quantile=envelope)


def fit_line(levels: torch.Tensor, variances: torch.Tensor, iterations: int = 30,
             quantile: float = 0.5) -> tuple[float, float]:
    """(a, b) of variance = a level + b with a, b >= 0: least absolute deviations (IRLS), or
    with `quantile` below 0.5 a quantile regression, a line with that fraction of the points
    below it (a lower envelope: texture only inflates a level's variance)."""
    x, v = levels.double(), variances.double()
    if float(v.max()) <= 0:  # no noise at any level (flat, noiseless bins)
        return 0.0, 0.0
    design = torch.stack([x, torch.ones_like(x)], 1)
    weight = torch.ones_like(v)
    for _ in range(iterations):  # iteratively reweighted least squares for the check loss
        sw = weight.sqrt()[:, None]
        a, b = torch.linalg.lstsq(design * sw, v[:, None] * sw).solution[:, 0].tolist()
        resid = v - a * x - b
        side = torch.where(resid >= 0, quantile, 1.0 - quantile)
        weight = side / resid.abs().clamp_min(1e-6 * float(v.mean()))
    if b < 0:  # pure Poisson: the weighted line through the origin
        a, b = float((weight * x * v).sum() / (weight * x * x).sum()), 0.0
    if a < 0:  # no signal dependence: the median variance
        a, b = 0.0, float(v.median())
    return a, b


def fit_clipped(levels: torch.Tensor, variances: torch.Tensor, rounds: int = 5,
                start: tuple[float, float] | None = None) -> tuple[float, float]:
    """(a, b) of `fit_line` for an image clipped at black and white (an 8-bit file): near the
    ends the clipped noise is weaker and biased, so each bin's mean is mapped to its clean
    level and its variance divided by the share that clipping leaves of a x + b there
    (`clipping.moments`), and the line is fitted again, `rounds` times from `start` (default:
    `fit_line`'s, which a caller that has it hands on)."""
    a, b = start if start is not None else fit_line(levels, variances)
    for _ in range(rounds):
        if a <= 0 and b <= 0:
            break
        std = partial(noise_std_map, a=a, b=b)
        x = clipping.unclip(levels.double(), std)
        s = clipping.std_at(std, x)
        share = (clipping.moments(x, s)[1] / s**2).clamp_min(MIN_SHARE)
        a, b = fit_line(x, variances.double() / share)
    return a, b


def anscombe(y: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Generalised Anscombe transform: noise of variance a x + b -> about unit variance."""
    if a <= 0:
        return y / math.sqrt(b)
    return (2.0 / a) * (a * y + 0.375 * a * a + b).clamp_min(0).sqrt()


def inverse_anscombe(d: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Closed-form approximate exact unbiased inverse of `anscombe` (Makitalo & Foi 2011).

    Below 2 sqrt(3/8), the transform of zero counts and the least that any expectation of it
    can be, the inverse is zero counts: the closed form passes through 0 there, dips below
    it and grows without bound as d falls to 0 (a denoised value of 0.3 came back as 14
    counts, 1e-3 as 7.6e8, a white pixel in a black shadow)."""
    if a <= 0:
        return d * math.sqrt(b)
    d = d.clamp_min(2.0 * math.sqrt(0.375))
    r = math.sqrt(1.5)
    unbiased = 0.25 * d**2 + 0.25 * r / d - 1.375 / d**2 + 0.625 * r / d**3 - 0.125
    return a * unbiased - b / a


def noise_std_map(estimate: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Per-pixel noise std sqrt(a x + b) at the denoised estimate x (same shape)."""
    return (a * estimate.clamp_min(0) + b).sqrt()


def signal_dependent(img: torch.Tensor, a: float, b: float) -> bool:
    """Whether the noise variance differs by more than half between the image's darkest and
    brightest tenth (then the Poisson-Gaussian model is used under noise='auto'); not where
    even the brightest tenth's is below NO_NOISE_VARIANCE (a fit of noiseless bins)."""
    lo, hi = torch.quantile(img.flatten()[:: max(img.numel() // 100000, 1)].double(),
                            torch.tensor([0.1, 0.9], dtype=torch.float64)).tolist()
    top = a * hi + b
    return top >= NO_NOISE_VARIANCE and top > 1.5 * (a * max(lo, 0.0) + b)
