"""Signal-dependent noise: the Poisson-Gaussian model against the Gaussian one on the same input.

Protocol: clean Set12 images (reporting only, nothing is tuned here), per image a generator
seeded 0, y = x + sqrt(a x + b) N(0, 1) on the 0..255 scale without clipping, a and b from
--a --b. Methods: `noise="gaussian"` (one sigma, estimated), `noise="poisson-gaussian"` with
(a, b) estimated, and with (a, b) known. PSNR (peak 255) of the output clipped and rounded to
8 bits; the estimated a and b as the mean relative error over the images.

Run `python -m benchmarks.denoise_poisson` (defaults a = 1, b = 4: the noise std grows from 2
in black to 16 in white).

`--clip`: the noisy image is rounded and clipped to 8 bits, as a saved photo holds it, and given
as uint8; a fourth method runs the fitted model with the clipping not modelled (the path before
session 23: `clipping.is_clipped` answering no).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from benchmarks.denoise import DEFAULT_DATA, load_images, quality
from libcem.denoiser import clipping, denoise


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.denoise_poisson", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--a", type=float, default=1.0)
    p.add_argument("--b", type=float, default=4.0)
    p.add_argument("--limit", type=int, default=None, help="first N Set12 images")
    p.add_argument("--clip", action="store_true", help="round and clip the noisy image to 8 bits")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    psnr: dict[str, list[float]] = {}
    errors = []
    for name, clean in load_images(args.data_root, "set12", args.limit):
        x = clean.astype(np.float64)
        y = x + np.sqrt(args.a * x + args.b) * np.random.default_rng(0).standard_normal(x.shape)
        # the image's units: uint8 0..255 when clipped, else float [0, 1] (scale: 255 per unit)
        noisy, scale = (np.clip(np.round(y), 0, 255).astype(np.uint8), 1) if args.clip else (y / 255, 255)
        runs = {"gaussian (sigma estimated)": {},
                "poisson-gaussian (a, b estimated)": {"noise": "poisson-gaussian"},
                "poisson-gaussian (a, b known)": {"noise": "poisson-gaussian",
                                                  "noise_params": (args.a / scale, args.b / scale**2)}}
        if args.clip:
            runs["poisson-gaussian (a, b estimated), clipping not modelled"] = {"noise": "poisson-gaussian"}
        for method, kw in runs.items():
            unmodelled = mock.patch.object(clipping, "is_clipped", lambda img: False)
            with unmodelled if method.endswith("not modelled") else contextlib.nullcontext():
                out, info = denoise(noisy, return_info=True, **kw)
            psnr.setdefault(method, []).append(quality(clean, out.astype(np.float64) * scale)[0])
            if method.endswith("estimated)") and info.noise_params is not None:
                a, b = info.noise_params[0] * scale, info.noise_params[1] * scale**2
                errors.append((a / args.a - 1, b / args.b - 1))
        print(f"  {name} done", flush=True)
    table = "| method | mean PSNR |\n|---|---|\n" + "\n".join(
        f"| {m} | {np.mean(v):.2f} |" for m, v in psnr.items())
    err = np.abs(np.array(errors))
    clipped = ", clipped to 8 bits" if args.clip else ""
    print(f"### Poisson-Gaussian noise, Set12, a = {args.a:g}, b = {args.b:g}{clipped}\n\n{table}\n\n"
          f"estimated a: mean |relative error| {err[:, 0].mean():.1%} (max {err[:, 0].max():.1%});"
          f" b: {err[:, 1].mean():.1%} (max {err[:, 1].max():.1%})")


if __name__ == "__main__":
    main()
