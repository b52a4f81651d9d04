"""How the denoiser uses the cores of one CPU on one image: torch's threads against chunk threads.

Protocol (as `benchmarks.denoise`): 8-bit skimage images, per image a generator seeded 0,
y = x + sigma N(0, 1) without clipping, known sigma. Three ways to run the same denoise,
alternated in this process, the best of `--repeats` runs each:
- one thread: torch at one thread, `threads=1`;
- torch threads: torch at `--cores` threads, `threads=1` (each operation split by torch; the
  default before session 14);
- chunk threads: torch at `--cores` threads, `threads=0` (the default since session 14: each
  pass's chunks on `--cores` Python threads with one torch thread each; block matching keeps
  torch's threads).
Also checks that the chunk threads' output equals the one-thread output bitwise when torch is
at one thread (`threads=cores` with torch at one thread).

Run `python -m benchmarks.denoise_threads` on an idle machine (`--speeds best`: only the
`--best` case); prints a markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from skimage import data

from benchmarks.denoise import add_noise
from libcem.denoiser import DenoiseConfig, denoise

CASES = (  # label, skimage image, central crop (None: whole), sigma, speed
    ("cameraman 512x512", "camera", None, 25, "default"),
    ("cameraman 512x512", "camera", None, 50, "default"),
    ("astronaut 512x512 (colour)", "astronaut", None, 25, "default"),
    ("cameraman 256x256 crop", "camera", 256, 25, "fast"),
    ("cameraman 256x256 crop", "camera", 256, 50, "default"),
    ("cameraman 256x256 crop", "camera", 256, 25, "best"),
)


def image(name: str, crop: int | None) -> np.ndarray:
    img = getattr(data, name)().astype(np.float64)
    if crop:
        y, x = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
        img = img[y:y + crop, x:x + crop]
    return img


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.denoise_threads", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cores", type=int, default=2, help="threads of the two parallel ways")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--speeds", nargs="*", default=["default", "fast", "best"],
                   help="only the cases with these settings")
    args = p.parse_args(argv)
    ways = {"one thread": (1, 1), "torch threads": (args.cores, 1), "chunk threads": (args.cores, 0)}
    lines = ["| image | sigma | settings | " + " | ".join(f"{w} (s)" for w in ways)
             + " | chunk / torch threads speed-up | same output |", "|---" * (len(ways) + 5) + "|"]
    for label, name, crop, sigma, speed in CASES:
        if speed not in args.speeds:
            continue
        y = add_noise(image(name, crop), sigma) / 255.0
        cfg = DenoiseConfig.for_speed(speed)
        best = {w: float("inf") for w in ways}
        for _ in range(args.repeats):
            for way, (torch_threads, threads) in ways.items():
                torch.set_num_threads(torch_threads)
                start = time.perf_counter()
                denoise(y, sigma / 255.0, config=cfg.override(threads=threads))
                best[way] = min(best[way], time.perf_counter() - start)
        torch.set_num_threads(1)
        same = np.array_equal(denoise(y, sigma / 255.0, config=cfg.override(threads=1)),
                              denoise(y, sigma / 255.0, config=cfg.override(threads=args.cores)))
        lines.append(f"| {label} | {sigma} | {speed} | " + " | ".join(f"{best[w]:.2f}" for w in ways)
                     + f" | {best['torch threads'] / best['chunk threads']:.2f}x | {same} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
