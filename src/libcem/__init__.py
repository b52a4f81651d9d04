"""libcem: Enhanced LIDECM.

Public entry points are imported lazily, so `import libcem` stays light and never touches
the network:

- `libcem.denoise(image, sigma=None)`: the patch-graph EM denoiser.
- `libcem.Tokenizer`: the EM-codebook VQ autoencoder (`Tokenizer.from_pretrained(path)`).
- `libcem.Pipeline`: text to image with a trained prior (`Pipeline.from_pretrained(run)(prompt, n=4)`).
"""

from __future__ import annotations

import importlib
import os
import sys

if sys.platform == "darwin":  # Apple's MPS: an op it lacks runs on the CPU (read when torch is imported)
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

__version__ = "0.1.0"

_LAZY = {
    "denoise": ("libcem.denoiser", "denoise"),
    "Tokenizer": ("libcem.generative.models.tokenizer", "Tokenizer"),
    "Pipeline": ("libcem.generative.pipeline", "Pipeline"),
    "LibcemError": ("libcem.errors", "LibcemError"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'libcem' has no attribute {name!r}")
