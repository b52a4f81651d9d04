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
(`poisson_gaussian.signal_dependent`, on the line `api.denoise_signal_dependent` fits, which
on an 8-bit image takes in the clipping at black and white). `api.read_noise` makes both
fits. Both thresholds were chosen on 16 Train400 images and 8 skimage colour crops under
20 noise types (docs/denoise-noise.md, "Choosing the noise model").
"""

from __future__ import annotations

from dataclasses import dataclass

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
