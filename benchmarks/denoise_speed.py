"""Time and peak memory of the patch-graph denoiser on one large colour photo.

The photo is synthetic: a McMaster image (500x500) resized to --size (default 4000x3000, 12
megapixels) with scikit-image, plus white Gaussian noise of std --sigma (seed 0) on the 0..255
scale, as uint8. Reports wall-clock seconds of `denoise` (known sigma) with --threads torch
threads in this process and --workers tile processes (one thread each; 0 = one per core), the
peak resident memory of this process and of the largest worker (ru_maxrss), and the seconds
per megapixel. `--speed fast` and `--speed best` use `DenoiseConfig.for_speed`. `--crop N` times only
the central N x N crop (to extrapolate on a busy machine). `--device cuda` times it on a GPU
after a warm-up on a 64x64 crop, and also reports the GPU, the tile side (the whole photo when
its free memory holds it: `tiling.device_tile`) and the peak GPU memory torch reserved.

`--noise correlated` (or `camera`, `auto`) times the path a phone's photo takes instead: the
noise is smoothed over neighbouring pixels by a 3x3 binomial kernel, as demosaicing leaves it,
scaled to std --sigma, and the model's parameters are fitted from the photo.

Run `python -m benchmarks.denoise_speed --speed fast` (full) or `--crop 1024`.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.denoise import DEFAULT_DATA
from libcem.denoiser import DenoiseConfig, denoise
from libcem.denoiser.io import read_image
from libcem.denoiser.tiling import device_tile
from libcem.device import resolve_device


def synthetic_photo(root: Path, width: int, height: int, sigma: float,
                    smoothed: bool = False) -> np.ndarray:
    """(height, width, 3) uint8: McMaster image 1 resized, plus noise of std sigma (seed 0),
    white or (`smoothed`) correlated by a 3x3 binomial kernel in each channel."""
    from scipy.ndimage import convolve
    from skimage.transform import resize

    clean = resize(read_image(root / "mcmaster" / "1.tif") / 255.0, (height, width, 3), order=3)
    noise = np.random.default_rng(0).standard_normal(clean.shape)
    if smoothed:
        kernel = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0])[:, :, None] / 16.0
        noise = convolve(noise, kernel, mode="reflect")
        noise /= noise.std()
    return np.clip(np.round(clean * 255 + sigma * noise), 0, 255).astype(np.uint8)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.denoise_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the synthetic photo")
    p.add_argument("--crop", type=int, default=None, help="time only the central N x N crop")
    p.add_argument("--sigma", type=float, default=25.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--speed", choices=("default", "fast", "best"), default="default")
    p.add_argument("--workers", type=int, default=0, help="tile processes (0: one per core)")
    p.add_argument("--noise", choices=("gaussian", "correlated", "camera", "auto"), default="gaussian",
                   help="gaussian: white noise, sigma known; the others: smoothed noise, fitted")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    white = args.noise == "gaussian"
    photo = synthetic_photo(args.data_root, width, height, args.sigma, smoothed=not white)
    sigma = args.sigma if white else None  # the correlated models fit their own
    if args.crop:
        y0, x0 = (height - args.crop) // 2, (width - args.crop) // 2
        photo = np.ascontiguousarray(photo[y0:y0 + args.crop, x0:x0 + args.crop])
    cfg = DenoiseConfig.for_speed(args.speed).override(workers=args.workers)
    device = resolve_device(args.device)
    gpu = ""
    if device.type == "cuda":  # start CUDA and its libraries before the clock
        denoise(photo[:64, :64], sigma, config=cfg, device=device, noise=args.noise)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        gpu = (f", {torch.cuda.get_device_name(device)}, tile side "
               f"{min(device_tile(device, cfg), max(photo.shape[:2]))}")
    start = time.perf_counter()
    denoise(photo, sigma, config=cfg, device=device, noise=args.noise)
    seconds = time.perf_counter() - start
    mpix = photo.shape[0] * photo.shape[1] / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    if device.type == "cuda":
        gpu += f", peak GPU memory {torch.cuda.max_memory_reserved(device) / 2**30:.2f} GiB reserved"
    print(f"{photo.shape[1]}x{photo.shape[0]} colour, {args.noise} noise, std {args.sigma:g}, {args.speed}, "
          f"{args.threads} thread(s), workers {args.workers or 'one per core'}, {device}{gpu}: "
          f"{seconds:.1f} s ({seconds / mpix:.1f} s per megapixel), peak RSS {peak:.2f} GiB "
          f"(largest worker {worker:.2f} GiB)")


if __name__ == "__main__":
    main()
