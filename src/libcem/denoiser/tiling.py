"""Large images in overlapping tiles, blended with linear ramps, so memory stays bounded."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import pickle
import sys
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

import numpy as np
import torch

from libcem.denoiser.heap import keep_freed_memory


def tile_layout(size: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Starts and common length of the fewest tiles no longer than `tile` that cover [0, size)
    with consecutive tiles overlapping by at least `overlap`, spread evenly (so no tile is
    mostly a copy of its neighbour: a 4000 x 3000 photo in 768-pixel tiles covers 1.13x its
    area, not the 1.47x of fixed 768-pixel tiles with the last one pushed back to the edge)."""
    if size <= tile:
        return [0], size
    n = math.ceil((size - overlap) / (tile - overlap))
    length = math.ceil((size + (n - 1) * overlap) / n)  # <= tile, because of n's choice
    return [(i * (size - length)) // (n - 1) for i in range(n)], length


def ramp(length: int, overlap: int, device=None) -> torch.Tensor:
    """(length,) blending weights: rising over the first and falling over the last `overlap`."""
    pos = torch.arange(length, device=device, dtype=torch.float32)
    rise = (pos + 1) / (overlap + 1)
    return torch.minimum(rise, rise.flip(0)).clamp(max=1.0)


def process_tiled(img: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile: int,
                  overlap: int, progress: Callable[[int, int], None] | None = None,
                  workers: int = 1) -> torch.Tensor:
    """Apply `fn` ((C, h, w) -> (C, h, w)) on overlapping tiles of img (C, H, W) and blend.

    Weights are strictly positive, so every pixel is a convex combination of tile outputs; where
    tiles do not overlap the result is exactly that tile's output. With workers > 1 (CPU
    tensors only) the tiles are processed by that many processes, one torch thread each; `fn`
    must then be picklable (a module-level function or a functools.partial of one).
    """
    _, h, w = img.shape
    out = torch.zeros_like(img)
    norm = torch.zeros(1, h, w, dtype=img.dtype, device=img.device)
    rows, th = tile_layout(h, tile, overlap)
    cols, tw = tile_layout(w, tile, overlap)
    tiles = [(y, x) for y in rows for x in cols]
    weight = ramp(th, overlap, img.device)[:, None] * ramp(tw, overlap, img.device)[None, :]
    crops = [img[:, y:y + th, x:x + tw] for y, x in tiles]
    done = 0

    def blend(result: torch.Tensor) -> None:
        nonlocal done
        y, x = tiles[done]
        out[:, y:y + th, x:x + tw] += result * weight
        norm[:, y:y + th, x:x + tw] += weight
        done += 1
        if progress is not None:
            progress(done, len(tiles))

    workers = min(workers, len(tiles)) if img.device.type == "cpu" else 1
    with _pool(workers) as pool:
        try:  # in tile order; plain pickles and arrays across processes (`_call_pickled`)
            if pool is not None:
                payload = pickle.dumps(fn)
                for result in pool.map(_call_pickled, [payload] * len(crops), [c.numpy() for c in crops]):
                    blend(torch.from_numpy(result))
        except BrokenProcessPool:  # a worker died (killed for memory, or could not start)
            warnings.warn(f"the tile workers stopped; denoising the {len(tiles) - done} tiles "
                          "left in this process (set workers=1 to skip them)", RuntimeWarning)
    for crop in crops[done:]:
        blend(fn(crop))
    return out / norm


def _call_pickled(payload: bytes, crop: np.ndarray) -> np.ndarray:
    """On a tile worker: the function pickled in `payload` on the tile `crop`, a numpy array in
    and out. Not tensors, nor a function holding tensors, through the pool's own pickler: with
    it torch passes a CPU tensor to another process as shared memory by file descriptor, which
    leaves a server thread running in the sender; a caller with a second thread is no longer
    forked (`_pool`), so a script's second photo spawned workers, which re-ran a script without
    a main guard. A plain pickle copies the few small tensors of the function's arguments."""
    return pickle.loads(payload)(torch.from_numpy(crop)).numpy()


@contextlib.contextmanager
def _pool(workers: int):
    """A pool of `workers` processes (None for 1 worker), each started by `_start_worker`.

    On Linux a single-threaded caller is forked (a script needs no `if __name__ == "__main__"`
    guard, and nothing is imported again); elsewhere, or from a threaded program such as a
    web server, workers are spawned fresh.
    """
    if workers <= 1:
        yield None
        return
    fork = sys.platform == "linux" and threading.active_count() == 1
    context = multiprocessing.get_context("fork" if fork else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker) as pool:
        yield pool


def _start_worker() -> None:
    """A tile worker: one torch thread, and its heap kept from tile to tile (`heap`)."""
    torch.set_num_threads(1)
    keep_freed_memory()


WORKER_BYTES_PER_PIXEL = 5000  # peak memory of one tile worker per tile pixel (measured in
# session 12: 2.71 GiB for a 707 x 639 colour tile with the shipped settings, 2.3 GiB with
# --fast, sigma 25, `chunk` 128; session 13: 2.47 and 2.27 GiB; session 16, with the pass-1
# tables freed: 1.96 GiB, 4,650 bytes per pixel; session 34, each worker's heap kept from tile
# to tile: 1.89 GiB with white noise and 2.37 GiB under camera noise, 5,630 bytes per pixel;
# session 35, 1.95 and 2.47 GiB; within the budget of 5,000 x 768 x 768 bytes = 2.75 GiB that
# `default_workers` sets a worker)


def default_workers(tile: int) -> int:
    """One tile worker per CPU core this process may use, at most 8, and no more than the
    available memory holds (Linux; elsewhere the core count alone decides)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    workers = min(cores, 8)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return max(1, workers)
    return max(1, min(workers, available // (WORKER_BYTES_PER_PIXEL * tile * tile)))


# Peak memory of whole-image passes in 4096-group batches (`gpu_chunk`): a part per pixel and
# the batches' working set, measured on the CPU for colour images at sigma 50, the largest case
# (session 16: 3,300 bytes per pixel and 2.52 GiB; sigma 25 and `--best` take less).
GPU_BYTES_PER_PIXEL = 3400
GPU_FIXED_BYTES = 2_800_000_000
GPU_MEMORY_FRACTION = 0.7  # of the free memory: room for the caching allocator's fragmentation
GPU_MIN_TILE = 512


def tile_for_memory(free_bytes: int) -> int:
    """The side of the largest square tile whose passes fit in `free_bytes` of GPU memory:
    GPU_MEMORY_FRACTION of it, less the batches' working set, at GPU_BYTES_PER_PIXEL (at least
    GPU_MIN_TILE, below which tiles waste most of their area on overlaps)."""
    usable = GPU_MEMORY_FRACTION * free_bytes - GPU_FIXED_BYTES
    return max(GPU_MIN_TILE, math.isqrt(int(max(usable, 0.0) // GPU_BYTES_PER_PIXEL)))


def device_tile(device: torch.device, cfg) -> int:
    """Tile side for an image on `device`: `cfg.tile` on a CPU (where tiles are the unit of
    work of the worker processes) and on devices whose free memory torch does not report;
    on a CUDA GPU `cfg.gpu_tile`, or when it is 0 the largest tile its free memory holds, so
    a photo that fits is denoised whole: one pass over all its groups, no loop over tiles."""
    if device.type == "cpu":
        return cfg.tile
    if cfg.gpu_tile:
        return cfg.gpu_tile
    if device.type == "cuda":  # free on the device, plus what torch holds cached but unused
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return tile_for_memory(torch.cuda.mem_get_info(device)[0] + cached)
    return cfg.tile


def central_tile(img: torch.Tensor, tile: int) -> torch.Tensor:
    """The tile x tile crop at the centre of img (C, H, W) (the whole image if smaller)."""
    _, h, w = img.shape
    y, x = max((h - tile) // 2, 0), max((w - tile) // 2, 0)
    return img[:, y:y + tile, x:x + tile]
