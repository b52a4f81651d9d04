"""Spatially correlated (coloured) Gaussian noise: its autocovariance fitted from the image, and
what the passes need of it.

Demosaicing and in-camera filtering smooth a sensor's noise over neighbouring pixels, so the
noise of a real photo is not white: its neighbours are correlated, its power sits at low and
middle frequencies. A white-noise estimate then sees only the small high-frequency part and the
blotches stay. The model here is stationary Gaussian noise with autocovariance r(dy, dx) for
|dy|, |dx| <= `LAG` (zero beyond), in each channel of the luminance/chroma basis: one for all
three, or one per channel (`per_channel`, the denoiser's default on colour images since session
19: a JPEG's subsampled chroma and a camera's processing leave weaker, smoother noise in chroma
than in luminance).

Fit (`estimate_correlation`): 8x8 patches with their best plane removed (R, a projection), so
that weak texture leaves little signal; for pure noise the residual y = R n has covariance
M = R T(r) R, T(r) the Toeplitz patch covariance. Iterated: keep the patches whose Mahalanobis
energy under the current M is below the median of its chi-square law (a test that texture in
any direction fails); the kept patches' covariance, divided by the known shrink factor of that
truncation (`_truncation_factor`), is fitted by least squares with R T(r) R, linear in r.
Directions where the noise is nearly absent (below `FLOOR` of the largest) are left out of the
test. On 256x256 crops of the cameraman and the astronaut with white, binomial 3x3 and
horizontal pair noise at std 10 and 25, every lag came within 0.08 of the variance
(`tests/test_denoise_correlated.py` checks 0.1).

Use in the passes (see `PatchGroups`): in the DCT-domain passes each coefficient f is scaled by
sqrt(r0 / var_f), var_f its noise variance, so that its noise variance is r0 (the per-group
scales the EM fits absorb the scaling of the signal); the covariance pass works on patches
whitened by W = sqrt(r0) Sigma^-1/2 (Sigma the patch noise covariance), where its Gaussian
model is exactly the one with noise Sigma, and maps its estimate back with W^-1. Per channel,
each channel has its own scales and W, all to the same level r0 (the channels' mean variance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from libcem.denoiser.noise import sample_patches

LAG = 3  # autocovariance support: |dy|, |dx| <= LAG
FIT_PATCH = 8  # patch side of the fit
FLOOR = 1e-2  # noise variances below FLOOR x r0 (per DCT coefficient, per eigen-direction) are raised to it
TEST_FLOOR = 1e-3  # directions with less noise than this fraction of the largest are not tested
START_QUANTILE = 0.3  # the first guess keeps the patches below this quantile of plane-residual energy
KEEP_LEVEL = 0.5  # quantile of the pure-noise chi-square law below which a patch is kept
FIT_ITERATIONS = 6
NO_NOISE_VARIANCE = 1e-6  # a fitted variance below this (0..255 scale) is no noise at all


def _lags(lag: int) -> list[tuple[int, int]]:
    """(0, 0), then one of each pair of opposite lags (dy, dx), |dy|, |dx| <= lag."""
    return [(0, 0)] + [(dy, dx) for dy in range(lag + 1) for dx in range(-lag, lag + 1)
                       if dy > 0 or dx > 0]


@lru_cache(maxsize=8)
def _lag_basis(patch: int, lag: int) -> torch.Tensor:
    """(L, d, d) float64: entry (i, j) of matrix l is 1 when pixel j - pixel i is lag l or -l."""
    y, x = torch.meshgrid(torch.arange(patch), torch.arange(patch), indexing="ij")
    dy = y.reshape(-1)[None, :] - y.reshape(-1)[:, None]
    dx = x.reshape(-1)[None, :] - x.reshape(-1)[:, None]
    return torch.stack([(((dy == a) & (dx == b)) | ((dy == -a) & (dx == -b))).double()
                        for a, b in _lags(lag)])


def _plane_residual(patch: int) -> torch.Tensor:
    """(d, d) the projection that removes a patch's best plane a + b y + c x."""
    y, x = torch.meshgrid(torch.arange(patch, dtype=torch.float64) - (patch - 1) / 2,
                          torch.arange(patch, dtype=torch.float64) - (patch - 1) / 2, indexing="ij")
    q, _ = torch.linalg.qr(torch.stack([torch.ones(patch * patch, dtype=torch.float64),
                                        y.reshape(-1), x.reshape(-1)], 1))
    return torch.eye(patch * patch, dtype=torch.float64) - q @ q.T


def _chi2_cdf(x: float, dof: int) -> float:
    return float(torch.special.gammainc(torch.tensor(dof / 2, dtype=torch.float64),
                                        torch.tensor(x / 2, dtype=torch.float64)))


def _chi2_quantile_exact(p: float, dof: int) -> float:
    """The chi-square quantile by bisection on the exact CDF, at any level and any dof (the
    white estimate's `noise._chi2_quantile` is Wilson-Hilferty's approximation at two levels)."""
    lo, hi = 0.0, 10.0 * dof + 100.0
    for _ in range(80):  # bisection on the monotone CDF
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _chi2_cdf(mid, dof) < p else (lo, mid)
    return (lo + hi) / 2


def _truncation_factor(limit: float, dof: int) -> float:
    """E[u u^T | |u|^2 < limit] = kappa I for u ~ N(0, I_dof): kappa = P(chi2_(dof+2) < limit) /
    P(chi2_dof < limit), since E[|u|^2; |u|^2 < t] = dof P(chi2_(dof+2) < t)."""
    return _chi2_cdf(limit, dof + 2) / _chi2_cdf(limit, dof)


@dataclass(frozen=True)
class NoiseCorrelation:
    """Stationary noise autocovariance r(dy, dx) on the working 0..255 scale, float64: one
    (2 LAG + 1, 2 LAG + 1) table shared by every channel, or (C, 2 LAG + 1, 2 LAG + 1), one per
    channel of the luminance/chroma basis (`per_channel`). The centre is the noise variance r0;
    `variance` is its mean over the channels, the level every pass is brought to."""

    autocov: torch.Tensor
    # the passes' tables by (kind, patch, device), made once: every PatchGroups of an image asks
    _tables: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def tables(self, dct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dct_scale, W, W^-1) for patches of the side `dct` (p*p, p*p) is made for, on its
        device, computed on first use: (C', p*p), (C', p*p, p*p) and (C', p*p, p*p), one row or
        matrix per channel (C' = 1 when shared)."""
        key = (dct.shape[0], str(dct.device))
        if key not in self._tables:
            patch, level = math.isqrt(dct.shape[0]), self.variance
            parts = [(c.dct_scale(dct, level), *c.whitening(patch, dct.device, level))
                     for c in self.channels()]
            self._tables[key] = tuple(torch.stack(t) for t in zip(*parts))
        return self._tables[key]

    @property
    def per_channel(self) -> bool:
        return self.autocov.dim() == 3

    def channels(self) -> list[NoiseCorrelation]:
        """One shared model per channel: [self] when shared."""
        return [NoiseCorrelation(r) for r in self.autocov] if self.per_channel else [self]

    @property
    def variance(self) -> float:
        lag = self.autocov.shape[-1] // 2
        return float(self.autocov[..., lag, lag].mean())

    def patch_covariance(self, patch: int, level: float | None = None) -> torch.Tensor:
        """(p*p, p*p) float64 noise covariance of a p x p patch (of a shared model), its
        eigenvalues raised to at least FLOOR x `level` (default r0): positive definite even
        where the fitted r is not, and whitening it to `level` amplifies nothing more than
        FLOOR^-1/2 times (a JPEG's chroma can keep almost no noise)."""
        lag = self.autocov.shape[0] // 2
        basis = _lag_basis(patch, min(lag, patch - 1))
        values = torch.stack([self.autocov[lag + a, lag + b] for a, b in _lags(min(lag, patch - 1))])
        cov = (basis * values[:, None, None]).sum(0)
        ev, vec = torch.linalg.eigh(cov)
        return (vec * ev.clamp_min(FLOOR * (self.variance if level is None else level))) @ vec.T

    def whitening(self, patch: int, device=None, level: float | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, W^-1), float32 (p*p, p*p) (of a shared model): a patch row z becomes z W, whose
        noise is white with variance `level` (default r0); W = sqrt(level) Sigma^-1/2,
        symmetric, Sigma floored at FLOOR x level."""
        level = self.variance if level is None else level
        ev, vec = torch.linalg.eigh(self.patch_covariance(patch, level))
        root = (ev / level).sqrt()
        w, w_inv = (vec / root) @ vec.T, (vec * root) @ vec.T
        return w.to(device, torch.float32), w_inv.to(device, torch.float32)

    def dct_scale(self, dct: torch.Tensor, level: float | None = None) -> torch.Tensor:
        """(p*p,) float32 (of a shared model): sqrt(level / var_f), var_f the noise variance of
        DCT coefficient f (the rows of `dct`), so that each scaled coefficient's noise variance
        is `level` (default r0)."""
        patch, level = math.isqrt(dct.shape[0]), self.variance if level is None else level
        d = dct.double().cpu()
        var = ((d @ self.patch_covariance(patch, level)) * d).sum(1).clamp_min(FLOOR * level)
        return (level / var).sqrt().to(dct.device, torch.float32)

    def neighbour_correlation(self) -> tuple[float, float]:
        """r(0, 1) / r0 and r(1, 0) / r0: the noise's correlation with the next pixel across
        and down (0 for white noise); per channel, the luminance's."""
        if self.per_channel:
            return self.channels()[0].neighbour_correlation()
        lag, r0 = self.autocov.shape[0] // 2, max(self.variance, 1e-12)
        return float(self.autocov[lag, lag + 1]) / r0, float(self.autocov[lag + 1, lag]) / r0

    def channel_stds(self) -> list[float]:
        """The noise std of each channel (luminance, chroma, chroma), or one when shared."""
        lag = self.autocov.shape[-1] // 2
        return [max(float(v), 0.0) ** 0.5 for v in self.autocov[..., lag, lag].reshape(-1)]

    def scaled(self, factor: float) -> NoiseCorrelation:
        """The same correlation, variance times `factor` (the image scaled by sqrt(factor))."""
        return NoiseCorrelation(self.autocov * factor)


def estimate_correlation(img: torch.Tensor, max_patches: int = 60000,
                         generator: torch.Generator | None = None, per_channel: bool = False,
                         clipped: torch.Tensor | None = None) -> NoiseCorrelation:
    """The noise autocovariance of a (C, H, W) image, fitted from its weak-texture patches
    (module docstring): channels pooled, or with `per_channel` one per channel, on patches at
    the same positions, those with a `clipped` pixel ((H, W) bool) left out when enough others
    remain (clipping flattens the noise; without that, the per-channel fit lost 0.4 dB on
    colour crops with clipped highlights, docs/denoise-noise.md). The pooled fit when some channel
    shows no noise."""
    patch = min(FIT_PATCH, img.shape[1], img.shape[2])
    lag = min(LAG, patch - 2)
    if per_channel and img.shape[0] > 1:
        samples = _channel_patches(img, clipped, patch, max_patches, generator)
        tables = [_autocov_table(fit_lags(x, patch, lag), lag) for x in samples]
        if min(float(t[LAG, LAG]) for t in tables) >= NO_NOISE_VARIANCE:
            return NoiseCorrelation(torch.stack(tables))
    autocov = _autocov_table(fit_lags(sample_patches(img, patch, max_patches, generator).double(),
                                      patch, lag), lag)
    if autocov[LAG, LAG] < NO_NOISE_VARIANCE:  # a flat image, or too few patches to fit
        autocov.zero_()
    return NoiseCorrelation(autocov)


def _autocov_table(r: torch.Tensor, lag: int) -> torch.Tensor:
    """(2 LAG + 1, 2 LAG + 1) float64 from the values r at the lags `_lags(lag)`."""
    autocov = torch.zeros(2 * LAG + 1, 2 * LAG + 1, dtype=torch.float64)
    for (a, b), value in zip(_lags(lag), r):
        autocov[LAG + a, LAG + b] = autocov[LAG - a, LAG - b] = value
    return autocov


def _channel_patches(img: torch.Tensor, clipped: torch.Tensor | None, patch: int, count: int,
                     generator: torch.Generator | None) -> list[torch.Tensor]:
    """Up to `count` patches (n, patch * patch) float64 of each channel of img (C, H, W), at
    the same positions; those with a `clipped` pixel left out when at least a quarter of the
    draw remains."""
    c, h, w = img.shape
    index = torch.arange(h * w, dtype=torch.float64, device=img.device).reshape(1, h, w)
    pos = sample_patches(index, patch, count, generator).long()  # (n, p*p) flat pixel indices
    if clipped is not None:
        keep = ~clipped.reshape(-1)[pos].any(1)
        if 4 * int(keep.sum()) >= pos.shape[0]:
            pos = pos[keep]
    flat = img.reshape(c, -1)
    return [flat[k][pos].double() for k in range(c)]


def fit_lags(samples: torch.Tensor, patch: int, lag: int) -> torch.Tensor:
    """The autocovariance at the lags `_lags(lag)` (first: the variance r0), float64, fitted
    to patches (n, patch * patch) float64 by the truncated least squares of the module
    docstring; zeros when no patches pass the test, r0 below NO_NOISE_VARIANCE when the test
    kept only exactly flat patches (a clean 8-bit image: no noise)."""
    residual, basis = _plane_residual(patch), _lag_basis(patch, lag)
    y = samples @ residual
    design = (residual @ basis @ residual).flatten(1).T  # (d*d, L): S = sum_l r_l R B_l R
    normal = design.T @ design
    energy = (y * y).sum(1)
    keep = energy <= energy.quantile(START_QUANTILE)  # a first guess: the flattest patches
    rotation, stretch = None, None
    r = torch.zeros(basis.shape[0], dtype=torch.float64)
    for _ in range(FIT_ITERATIONS):
        if int(keep.sum()) < 4 * patch * patch:
            break
        kept = y[keep] if rotation is None else y[keep] @ rotation
        cov = kept.T @ kept / kept.shape[0]
        if rotation is not None:  # undo the truncation's shrink in the tested directions
            cov = rotation @ (cov * stretch[:, None] * stretch[None, :]) @ rotation.T
        r = torch.linalg.solve(normal, design.T @ cov.reshape(-1))
        if r[0] < NO_NOISE_VARIANCE:  # the test kept only exactly flat patches: no noise here
            break
        energy, dof, rotation, tested = _mahalanobis(y, r, residual, basis)
        if dof == 0:  # a model with no noise in any direction: no noise found
            return torch.zeros_like(r)
        limit = _chi2_quantile_exact(KEEP_LEVEL, dof)
        keep = energy < limit
        stretch = torch.where(tested, _truncation_factor(limit, dof) ** -0.5, 1.0).double()
    return r


def _mahalanobis(y: torch.Tensor, r: torch.Tensor, residual: torch.Tensor, basis: torch.Tensor):
    """Energy (n,) of plane-residual patches y under the noise model r (chi-square with `dof`
    degrees for pure noise), over the directions with at least TEST_FLOOR of the largest noise
    variance; also the model's eigenvectors and which of them are `tested`."""
    model = residual @ (basis * r[:, None, None]).sum(0) @ residual
    ev, rotation = torch.linalg.eigh(model)
    tested = ev >= TEST_FLOOR * ev.max().clamp_min(1e-12)
    energy = ((y @ rotation[:, tested]) ** 2 / ev[tested]).sum(1)
    return energy, int(tested.sum()), rotation, tested


def energy_quantile_variance(samples: torch.Tensor, r: torch.Tensor, patch: int, lag: int,
                             quantile: float) -> float:
    """The noise variance of patches (n, patch * patch) float64 whose noise has the shape of
    the autocovariance r (lags `_lags(lag)`): their Mahalanobis energy under r scaled to unit
    variance, at `quantile`, over the chi-square law's quantile. A low quantile lets textured
    patches go (texture only adds energy)."""
    residual, basis = _plane_residual(patch), _lag_basis(patch, lag)
    energy, dof, _, _ = _mahalanobis(samples @ residual, r / r[0], residual, basis)
    return float(energy.quantile(quantile)) / _chi2_quantile_exact(quantile, dof)


def white(sigma: float) -> NoiseCorrelation:
    """White noise of std sigma as a NoiseCorrelation."""
    autocov = torch.zeros(2 * LAG + 1, 2 * LAG + 1, dtype=torch.float64)
    autocov[LAG, LAG] = sigma**2
    return NoiseCorrelation(autocov)
