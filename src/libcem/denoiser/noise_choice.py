"""`noise="auto"`: which noise model an image's noise follows, read from two fits of it.

The white-noise estimate (`noise.estimate_sigma`, weak-texture PCA) reads the noise in its
weakest direction. Noise smoothed over neighbouring pixels (demosaiced, or a JPEG's
subsampled chroma) has almost none in some directions, so that estimate falls far below the
std of the fitted correlated model (`correlated.estimate_correlation`, in luminance). White
noise gives both the same std (within 0.6-1.5x on Train400 at std 10-50); correlated noise
gave at least 2.5x (binomial-smoothed, or through a simulated camera and JPEG). Above
CORRELATED_RATIO, and when that std is at least MIN_CORRELATED_STD, the noise is taken as a
camera's (`camera`: correlated, and signal dependent where its fit finds a slope); else
`auto` chooses between white Gaussian and Poisson-Gaussian noise as before
(`poisson_gaussian.signal_dependent`), except where white noise clipped at black and white
accounts for the variance's growth with level (`clipping_explains`). `api.read_noise` makes
both fits. Both thresholds were chosen on 16 Train400 images and 8 skimage colour crops under
20 noise types (docs/denoise.md, "Choosing the noise model").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from libcem.denoiser import clipping, poisson_gaussian

CORRELATED_RATIO = 3.0  # correlated fit's std over the white-noise estimate: above, correlated
MIN_CORRELATED_STD = 2.0  # below this correlated std (0..255 scale) the white models are kept


@dataclass(frozen=True)
class NoiseReading:
    """The two noise stds `auto` compares (0..255 scale): the white-noise estimate and the
    luminance std of the fitted correlated model."""

    white_std: float
    correlated_std: float

    @property
    def correlated(self) -> bool:
        """Whether the noise is spatially correlated (module docstring)."""
        return (self.correlated_std >= MIN_CORRELATED_STD
                and self.correlated_std > CORRELATED_RATIO * self.white_std)


def clipping_explains(img: torch.Tensor, levels: torch.Tensor, variances: torch.Tensor,
                      sigma: float) -> bool:
    """Whether white noise of std `sigma`, clipped at black and white, accounts for the growth
    with level of the noise variances `variances` measured at `levels` (the points of the
    Poisson-Gaussian fit, `poisson_gaussian.level_variances`, of (C, H, W) `img` on the
    0..255 scale): divided by the share of the variance that clipping leaves at its level
    (`clipping.clipped_variance`), their line no longer grows by half over the image's
    levels (`poisson_gaussian.signal_dependent`). In an 8-bit file white noise shrinks near
    black, and on dark images that read as noise growing with brightness."""
    x = levels.double()[:, None]
    share = clipping.clipped_variance(x, torch.ones_like(x), sigma) / sigma**2
    corrected = variances.double() / share.clamp_min(1e-3)
    return not poisson_gaussian.signal_dependent(img, *poisson_gaussian.fit_line(levels, corrected))
