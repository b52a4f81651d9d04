"""`noise="auto"`: which noise model it chooses, and what that gives, per kind of noise.

Protocol: clean Set12 (gray) or McMaster (colour) images (reporting only: the choice's two
thresholds were chosen on Train400 images and skimage colour crops), per image a generator
seeded 0, the noisy image clipped and rounded to 8 bits as a file holds it. Noise kinds:
`white S` (white Gaussian, std S), `binomial S` (white noise smoothed by the 3x3 binomial
kernel, std S), `camera` (a simulated camera: RGGB mosaic, raw noise of variance x + 4,
bilinear demosaicing; colour only), `camera jpeg Q` (that, saved as a JPEG of quality Q with
4:2:0 chroma), `clean` and `clean jpeg Q` (no noise added: what auto does to a clean image).
For each kind: how many images auto sent to each model, and the mean PSNR of auto's output
and of each model given in --models, against the noise-free image (for the camera kinds, the
noise-free demosaiced image), capped at CAP dB (an image left as it was).

Run `python -m benchmarks.denoise_auto --set set12` and
`python -m benchmarks.denoise_auto --set mcmaster --kinds "white 25" camera "camera jpeg 95"
"clean jpeg 90"`.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from benchmarks.denoise import DEFAULT_DATA, load_images, quality
from benchmarks.denoise_correlated import (
    bayer_demosaic,
    correlated_noise,
    jpeg_round_trip,
    kernel,
)
from libcem.denoiser import denoise

CAP = 60.0  # dB: the PSNR of an output equal to a clean input is infinite
SET12_KINDS = ["white 5", "white 15", "white 25", "white 50", "binomial 15", "clean"]


def noisy_pair(clean: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(target, noisy 8-bit input) of one clean image for a noise kind (module docstring)."""
    x = clean.astype(np.float64)
    words = kind.split()
    rng = np.random.default_rng(0)
    if words[0] == "white":
        y = x + float(words[1]) * rng.standard_normal(x.shape)
    elif words[0] == "binomial":
        n = correlated_noise(x.shape[:2], kernel("binomial"), float(words[1]))
        y = x + (n[..., None] if x.ndim == 3 else n)
    elif words[0] == "camera":
        if x.ndim != 3:
            raise ValueError("the camera kinds need colour images (--set mcmaster)")
        x = np.clip(np.round(bayer_demosaic(x, 0.0)), 0, 255)
        y = bayer_demosaic(clean.astype(np.float64), 2.0, gain=1.0)
    elif words[0] == "clean":
        y = x
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    y = np.clip(np.round(y), 0, 255)
    if "jpeg" in words:
        quality_ = int(words[words.index("jpeg") + 1])
        if y.ndim == 3:
            y = jpeg_round_trip(y, quality_, "4:2:0")
        else:
            y = jpeg_round_trip(np.repeat(y[..., None], 3, 2), quality_, "4:4:4")[..., 0]
    return x, y.astype(np.uint8)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.denoise_auto", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--set", default="set12", choices=("set12", "mcmaster"))
    p.add_argument("--kinds", nargs="+", default=None, help=f"noise kinds (default {SET12_KINDS})")
    p.add_argument("--models", nargs="*", default=["gaussian"],
                   help="fixed models to run beside auto (default: gaussian)")
    p.add_argument("--limit", type=int, default=None, help="first N images")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    images = load_images(args.data_root, args.set, args.limit)
    print(f"| {args.set} noise | auto chose | auto | " + " | ".join(args.models) + " |\n"
          "|---|---|---|" + "---|" * len(args.models))
    for kind in args.kinds or SET12_KINDS:
        chosen: Counter = Counter()
        psnr: dict[str, list[float]] = {m: [] for m in ("auto", *args.models)}
        for _, clean in images:
            target, y = noisy_pair(clean, kind)
            out, info = denoise(y, noise="auto", return_info=True)
            chosen[info.noise_model] += 1
            psnr["auto"].append(min(quality(target, out.astype(np.float64))[0], CAP))
            for model in args.models:
                psnr[model].append(min(quality(target, denoise(y, noise=model).astype(np.float64))[0], CAP))
        choice = ", ".join(f"{m} {n}" for m, n in chosen.most_common())
        print(f"| {kind} | {choice} | " + " | ".join(
            f"{np.mean(psnr[m]):.2f}" for m in ("auto", *args.models)) + " |", flush=True)


if __name__ == "__main__":
    main()
