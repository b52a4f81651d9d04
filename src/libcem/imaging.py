"""Pixels in, pixels out: image grids, PNG writing for snapshots and samples, and PSNR."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from libcem.errors import LibcemError
from libcem.files import atomic_write_bytes

MAX_WRITE_PIXELS = 1 << 26  # the largest image libcem writes (8192 x 8192): more is a mistake, not a picture


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) or (B, C, H, W) floats in [0, 1] -> uint8 HWC / BHWC (1 channel squeezed)."""
    arr = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    arr = np.moveaxis(arr, -3, -1)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def grid(images: torch.Tensor, cols: int, pad: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> one (C, rows*(H+pad)+pad, cols*(W+pad)+pad) image, white padding."""
    b, c, h, w = images.shape
    rows = -(-b // cols)
    out = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(b):
        r, k = divmod(i, cols)
        out[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = images[i]
    return out


def side_by_side(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Pairs (input | reconstruction) next to each other: (B, C, H, 2W)."""
    return torch.cat([inputs, outputs], dim=-1)


def grid_size(count: int, size: int, cols: int, pad: int = 2) -> tuple[int, int]:
    """(height, width) of `grid` of `count` square images of `size` pixels in `cols` columns."""
    rows = -(-count // cols)
    return rows * (size + pad) + pad, cols * (size + pad) + pad


def check_write_size(height: int, width: int, upscale: int = 1) -> None:
    """Refuse to write an image of more than MAX_WRITE_PIXELS pixels (after enlarging by `upscale`)."""
    if height * width * upscale**2 > MAX_WRITE_PIXELS:
        raise LibcemError(f"an image of {height * upscale} x {width * upscale} pixels is too large to write "
                          f"(at most {MAX_WRITE_PIXELS:,} pixels): use a smaller --upscale or -n, or --output-dir")


def save_png(image: torch.Tensor, path: str | Path, upscale: int = 1) -> None:
    """(C, H, W) in [0, 1] -> an image file (PNG unless the suffix names another format), written
    atomically; optionally enlarged with nearest-neighbour for small images."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise LibcemError(f"{path}: unknown image file type '{path.suffix}'; use .png")
    check_write_size(image.shape[-2], image.shape[-1], upscale)
    img = Image.fromarray(to_uint8(image))
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())

def psnr(x: torch.Tensor, ref: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of (B, C, H, W) `x` against `ref` (x is clipped to [0, peak])."""
    mse = ((x.clamp(0, peak) - ref) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse.clamp_min(1e-12))
