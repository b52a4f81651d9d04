"""The patch-graph diffusion denoiser with EM-fitted parameters and four attention heads.

`denoise(image, sigma=None)` is the entry point (also `libcem.denoise`); `DenoiseConfig`
holds every setting.
"""

from libcem.denoiser.api import denoise
from libcem.denoiser.settings import DenoiseConfig

__all__ = ["denoise", "DenoiseConfig"]
