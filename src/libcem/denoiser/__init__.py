"""The patch-graph denoiser: graph-diffusion group model fitted per image by EM, graph attention
(affinity) heads, a second pass on the first estimate, and (`--best`) group-axis Wiener
passes that replace each patch by a linear combination of its group's patches.

`denoise(image, sigma=None)` is the entry point (also `libcem.denoise`); `DenoiseConfig`
holds every setting.
"""

from libcem.denoiser.api import denoise
from libcem.denoiser.settings import DenoiseConfig

__all__ = ["denoise", "DenoiseConfig"]
