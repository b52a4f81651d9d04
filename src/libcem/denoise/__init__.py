"""The patch-graph diffusion denoiser with EM-fitted parameters and four attention heads.

`denoise(image, sigma=None)` is the entry point; `DenoiseConfig` holds every setting.
The package shares its name with the function: once imported, `libcem.denoise` is this
module, so the module itself is made callable and `libcem.denoise(image)` works either way.
"""

import sys
import types

from libcem.denoise.api import denoise
from libcem.denoise.config import DenoiseConfig

__all__ = ["denoise", "DenoiseConfig"]


class _CallableModule(types.ModuleType):
    """`libcem.denoise(...)` calls `libcem.denoise.denoise(...)`."""

    def __call__(self, *args, **kwargs):
        return denoise(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
