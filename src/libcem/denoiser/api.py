"""`denoise(image, sigma=None)`: arrays or tensors in, the same type, dtype and range out."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from libcem.device import default_device
from libcem.denoiser.settings import DenoiseConfig
from libcem.denoiser.passes import DenoiseInfo, denoise_tensor
from libcem.denoiser.tiling import central_tile, process_tiled
from libcem.errors import LibcemError

INTERNAL_PEAK = 255.0  # the denoiser works on the 0..255 scale whatever the input's dtype


def _numpy_dtype(dtype) -> np.dtype:
    """numpy dtype of a numpy or torch dtype (torch's 16-bit floats count as float32)."""
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float16, torch.bfloat16):
            return np.dtype(np.float32)
        return torch.empty(0, dtype=dtype).numpy().dtype
    return np.dtype(dtype)


def _range(dtype: np.dtype) -> tuple[float, float]:
    """(lowest, full white) of an image dtype; float images are taken as [0, 1]."""
    if np.issubdtype(dtype, np.bool_) or not np.issubdtype(dtype, np.number) \
            or np.issubdtype(dtype, np.complexfloating):
        raise LibcemError(f"cannot denoise an image of dtype {dtype}")
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
    return 0.0, 1.0


def _split_channels(image):
    """(H, W) or (H, W, C) -> colour part (H, W, C'), C' in {1, 3}, and alpha (H, W, 1) or None.

    Works on numpy arrays and tensors alike; alpha keeps the input's type and dtype.
    """
    if image.ndim == 2:
        return image[:, :, None], None
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise LibcemError(f"expected an HxW or HxWxC image with C in 1..4, "
                          f"got shape {tuple(image.shape)}")
    c = image.shape[2]
    alpha = image[:, :, c - 1:] if c in (2, 4) else None
    return image[:, :, : (1 if c <= 2 else 3)], alpha


def check_finite(work: torch.Tensor) -> None:
    """Reject NaN or infinite pixels (a float TIFF can hold them) before any linear algebra."""
    bad = int((~torch.isfinite(work)).sum())
    if bad:
        raise LibcemError(f"the image has {bad} NaN or infinite pixel value(s); "
                          f"replace them (e.g. numpy.nan_to_num) before denoising")


def check_sigma(sigma: float | None, work: torch.Tensor, scale: float) -> None:
    """Reject a sigma that is negative, NaN, or larger than the image's range.

    The limit is the full range of the dtype (255 on the 0..255 scale) or the image's own
    value range if that is wider (a float image on 0..255 rather than 0..1).
    """
    if sigma is None:
        return
    if not (np.isfinite(sigma) and sigma >= 0):
        raise LibcemError(f"sigma must be a finite number >= 0, got {sigma}")
    span = max(INTERNAL_PEAK, float(work.max() - work.min()) if work.numel() else 0.0)
    if sigma * scale > span:
        raise LibcemError(f"sigma {sigma:g} is larger than the image's value range "
                          f"({span / scale:g} in the image's units): no signal left to recover")


def denoise_float(img: torch.Tensor, sigma: float | None, cfg: DenoiseConfig,
                  progress: Callable[[int, int], None] | None = None,
                  ) -> tuple[torch.Tensor, DenoiseInfo]:
    """Denoise (C, H, W) float32 on the 0..255 scale, in tiles when larger than cfg.tile.

    For tiled images the noise level and the EM parameters are fitted once, on the central
    tile, and shared by every tile, so all tiles use one model of the image.
    """
    _, h, w = img.shape
    if h < cfg.patch or w < cfg.patch:
        raise LibcemError(f"image {h}x{w} is smaller than the {cfg.patch}x{cfg.patch} patch")
    if max(h, w) <= cfg.tile:
        return denoise_tensor(img, sigma, cfg)
    _, info = denoise_tensor(central_tile(img, cfg.tile), sigma, cfg)
    if info.params is None:
        return img.clone(), info
    out = process_tiled(img, lambda t: denoise_tensor(t, None, cfg, params=info.params)[0],
                        cfg.tile, cfg.overlap, progress)
    return out, info


def denoise(image, sigma: float | None = None, *, config: DenoiseConfig | None = None,
            device: str | torch.device | None = None, return_info: bool = False):
    """Denoise an image with the patch-graph EM denoiser; no training needed.

    image: numpy array or torch tensor, (H, W) or (H, W, C) with C = 1 (gray), 2 (gray + alpha),
        3 (RGB) or 4 (RGBA); integer images span their dtype's range, float images [0, 1].
        Alpha is passed through untouched.
    sigma: noise std in the image's units (25 for uint8, 25/255 for float in [0, 1]);
        None estimates it.
    Returns the denoised image of the same type, shape and dtype (integers rounded and clipped);
    with return_info=True, also a DenoiseInfo whose sigma is in the image's units.
    """
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise LibcemError(f"expected a numpy array or torch tensor, got {type(image).__name__}")
    dtype = _numpy_dtype(image.dtype)
    lo, peak = _range(dtype)
    colour, alpha = _split_channels(image)
    dev = torch.device(device) if device is not None else default_device()
    if isinstance(colour, np.ndarray):
        colour = torch.from_numpy(np.ascontiguousarray(colour, dtype=np.float32))
    scale = INTERNAL_PEAK / peak
    work = colour.detach().to(dev, torch.float32).permute(2, 0, 1) * scale  # (C', H, W)
    check_finite(work)
    check_sigma(sigma, work, scale)
    work_sigma = None if sigma is None else sigma * scale
    out, info = denoise_float(work, work_sigma, config or DenoiseConfig())
    info.sigma = info.sigma / scale
    out = out.permute(1, 2, 0) / scale  # (H, W, C')
    if np.issubdtype(dtype, np.integer):
        out = out.round().clamp(lo, peak)
    return (_restore(out, alpha, image), info) if return_info else _restore(out, alpha, image)


def _restore(out: torch.Tensor, alpha, image):
    """(H, W, C') float result -> the input's type, dtype, device and layout, alpha re-attached."""
    if isinstance(image, np.ndarray):
        res = out.cpu().numpy().astype(image.dtype)
        if alpha is not None:
            res = np.concatenate([res, alpha], axis=2)
    else:
        res = out.to(device=image.device, dtype=image.dtype)
        if alpha is not None:
            res = torch.cat([res, alpha], dim=2)
    return res[:, :, 0] if image.ndim == 2 else res
