"""Large images in overlapping tiles, blended with linear ramps, so memory stays bounded."""

from __future__ import annotations

from typing import Callable

import torch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length `tile` covering [0, size), consecutive ones overlapping."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def ramp(length: int, overlap: int, device=None) -> torch.Tensor:
    """(length,) blending weights: rising over the first and falling over the last `overlap`."""
    pos = torch.arange(length, device=device, dtype=torch.float32)
    rise = (pos + 1) / (overlap + 1)
    return torch.minimum(rise, rise.flip(0)).clamp(max=1.0)


def process_tiled(img: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile: int,
                  overlap: int, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Apply `fn` ((C, h, w) -> (C, h, w)) on overlapping tiles of img (C, H, W) and blend.

    Weights are strictly positive, so every pixel is a convex combination of tile outputs; where
    tiles do not overlap the result is exactly that tile's output.
    """
    _, h, w = img.shape
    out = torch.zeros_like(img)
    norm = torch.zeros(1, h, w, dtype=img.dtype, device=img.device)
    tiles = [(y, x) for y in tile_starts(h, tile, overlap) for x in tile_starts(w, tile, overlap)]
    for done, (y, x) in enumerate(tiles):  # loop over tiles
        th, tw = min(tile, h), min(tile, w)
        weight = ramp(th, overlap, img.device)[:, None] * ramp(tw, overlap, img.device)[None, :]
        out[:, y:y + th, x:x + tw] += fn(img[:, y:y + th, x:x + tw]) * weight
        norm[:, y:y + th, x:x + tw] += weight
        if progress is not None:
            progress(done + 1, len(tiles))
    return out / norm


def central_tile(img: torch.Tensor, tile: int) -> torch.Tensor:
    """The tile x tile crop at the centre of img (C, H, W) (the whole image if smaller)."""
    _, h, w = img.shape
    y, x = max((h - tile) // 2, 0), max((w - tile) // 2, 0)
    return img[:, y:y + tile, x:x + tile]
