"""White noise of a known std on 8-bit images, where it was clipped at black and white.

Protocol: clean Set12 (gray) or McMaster (colour) images (reporting only: the clipping model
has no setting; it was checked on Train400 images and skimage colour crops), per image a
generator seeded 0, y = x + sigma N(0, 1) clipped and rounded to 8 bits as a file holds it
(`benchmarks.denoise_auto.noisy_pair`), PSNR against the clean image. Methods:
- `as given`: the passes with sigma as it is (`denoise_float`; libcem before session 21);
- `clipping model`: `denoise(y, sigma)`, which takes the clipped noise's smaller std and
  removes the clipping's bias (`libcem.denoiser.clipping`);
- `measured`: the passes at the std the weak-texture estimate measures (`denoise_float` with
  no sigma; libcem's estimated path before session 22);
- `estimated`: `denoise(y)`: the std before clipping estimated from the image
  (`clipping.estimate_std`), then the clipping model (session 22).

Run `python -m benchmarks.denoise_clipped --set set12 --sigmas 15 25 50` and
`python -m benchmarks.denoise_clipped --set mcmaster --sigmas 50 --methods "as given" "clipping model"`.
`--picture P` also saves the first image at the last sigma as noisy | each method's output
(`--picture-crop N`: their central N x N crops).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import side_by_side
from benchmarks.denoise import DEFAULT_DATA, load_images, quality
from benchmarks.denoise_auto import noisy_pair
from libcem.denoiser import DenoiseConfig, denoise
from libcem.denoiser.api import denoise_float

METHODS = ("as given", "clipping model", "measured", "estimated")


def as_given(y: np.ndarray, sigma: float | None) -> np.ndarray:
    """The passes at sigma as it is (None: as the weak-texture estimate measures it), on the
    8-bit image's values (the paths before sessions 21 and 22)."""
    work = torch.from_numpy(y.astype(np.float32))
    work = work[None] if work.ndim == 2 else work.permute(2, 0, 1).contiguous()
    out = denoise_float(work, sigma, DenoiseConfig())[0]
    out = out[0] if y.ndim == 2 else out.permute(1, 2, 0)
    return out.round().clamp(0, 255).numpy()


def run(y: np.ndarray, sigma: float, method: str) -> np.ndarray:
    if method in ("as given", "measured"):
        return as_given(y, sigma if method == "as given" else None)
    return denoise(y, sigma if method == "clipping model" else None).astype(np.float64)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.denoise_clipped", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--set", default="set12", choices=("set12", "mcmaster"))
    p.add_argument("--sigmas", nargs="+", type=float, default=[25.0, 50.0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--limit", type=int, default=None, help="first N images")
    p.add_argument("--picture", type=Path, default=None,
                   help="save noisy | each method's output, of the first image at the last sigma")
    p.add_argument("--picture-crop", type=int, default=None,
                   help="the picture's panels: their central N x N crop (default: whole)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    images = load_images(args.data_root, args.set, args.limit)
    print(f"| {args.set}, clipped white noise | " + " | ".join(args.methods)
          + " | better on (clipping model than as given; estimated than measured) |\n|---|"
          + "---|" * (len(args.methods) + 1))
    for sigma in args.sigmas:
        psnr: dict[str, list[float]] = {m: [] for m in args.methods}
        for _, clean in images:
            target, y = noisy_pair(clean, f"white {sigma:g}")
            for method in args.methods:
                psnr[method].append(quality(target, run(y, sigma, method))[0])
        wins = [f"{sum(b > a for a, b in zip(psnr[old], psnr[new]))} of {len(images)}"
                for old, new in (("as given", "clipping model"), ("measured", "estimated"))
                if {old, new} <= set(args.methods)]
        better = "; ".join(wins) or "-"
        print(f"| sigma {sigma:g} | " + " | ".join(f"{np.mean(psnr[m]):.2f}" for m in args.methods)
              + f" | {better} |", flush=True)
    if args.picture is not None:
        save_picture(args.picture, images[0][1], args.sigmas[-1], args.methods, args.picture_crop)


def save_picture(path: Path, clean: np.ndarray, sigma: float, methods: list[str],
                 crop: int | None = None) -> None:
    """noisy | each method's output, side by side with 8-pixel white gaps (8-bit PNG); with
    `crop`, the central crop x crop of each."""
    _, y = noisy_pair(clean, f"white {sigma:g}")
    side_by_side(path, [y.astype(np.float64)] + [run(y, sigma, m) for m in methods], crop)


if __name__ == "__main__":
    main()
