"""Denoising benchmark: libcem against scikit-image NLM and TV, and BM3D when installed.

Protocol
- Clean 8-bit images: `<data-root>/set12/*.png` (grayscale) and `<data-root>/mcmaster/*.tif`
  (RGB); data-root defaults to `<repo>/../shared/data/denoise`.
- Per image, a fresh generator with seed 0: y = x + sigma * N(0, 1) on the 0..255 scale,
  without clipping. Every method gets the same y (as float) and the true sigma, except
  "libcem (est. sigma)", which is given no sigma.
- Output clipped to [0, 255] and rounded to 8 bits; PSNR with peak 255, SSIM
  (scikit-image, data_range 255); seconds per image by wall clock, all methods run one
  after the other in this process with the same thread count (--threads, default 1: torch's
  threads for libcem, the profile's `num_threads` for the `bm3d` package, whose own default,
  0, takes every core -- the speed figures before session 14 gave BM3D both cores of the
  development CPU against libcem's one).
- Baselines: scikit-image `denoise_nl_means` (patch 5, distance 6, h = 0.8 sigma, fast mode,
  as its documentation recommends) and `denoise_tv_chambolle` (weight = sigma / 255 on the
  [0, 1] scale); `bm3d.bm3d` / `bm3d.bm3d_rgb` (free for non-commercial use only: a
  reference here, never a dependency of libcem).
- One head vs four heads: libcem with all four affinity heads and the EM of the global
  parameters (Set12, --one-head-sigmas) beside the shipped texture head without it, and EM
  iterations until the objective gains less than `em_tol` per iteration (capped at
  --em-cap) for both, at sigma 25.
- Columns: PSNR / SSIM / seconds per image (all images) / seconds per 256x256 image.

Run `python -m benchmarks.denoise` (full) or `--quick`; writes a markdown table to stdout
and to --out. `--speed-repeats N` only times libcem against BM3D on the 256x256 images
(`--speed-best`: libcem --best too),
alternating them, N runs each (medians), which is steadier on a busy machine. `--picture P`
saves the first image at the first sigma as noisy | each method's output (McMaster's when
colour sigmas are given; `--picture-crop N`: the central N x N of each), as at the top of
docs/denoise.md. `--train-draw SEED` runs the gray columns on a draw of Train400 images
instead of Set12 (the tuning pool; a draw no setting was chosen on).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import side_by_side
from libcem.denoiser import DenoiseConfig, denoise
from libcem.denoiser.settings import AFFINITY_HEADS
from libcem.errors import LibcemError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "denoise"


@dataclass
class Scores:
    """Per-image PSNR, SSIM, seconds and (for libcem) EM iterations of one method."""

    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    small: list[bool] = field(default_factory=list)  # image is 256 x 256

    def seconds_256(self) -> float:
        picked = [t for t, small in zip(self.seconds, self.small) if small]
        return float(np.mean(picked)) if picked else float("nan")


def load_images(root: Path, kind: str, limit: int | None,
                names: list[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """Clean uint8 images of a set ('set12' or 'mcmaster'), sorted by name (optionally only
    those whose file stem is in `names`)."""
    from libcem.denoiser.io import read_image

    folder = root / kind
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".tif", ".tiff")
                   and (names is None or p.stem in names))
    if not files:
        raise LibcemError(f"{folder}: no test images (set --data-root)")
    return [(p.stem, read_image(p)) for p in files[:limit]]


def train_images(root: Path, count: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """`count` Train400 images drawn without replacement by a generator seeded `seed` (the
    pool the settings are tuned on: a draw no setting was chosen on shows how the tuning
    carries over to images of the same kind)."""
    from libcem.denoiser.io import read_image

    files = sorted((root / "train400").glob("*.png"))
    if len(files) < count:
        raise LibcemError(f"{root / 'train400'}: {len(files)} images, {count} asked (set --data-root)")
    pick = np.random.default_rng(seed).choice(len(files), count, replace=False)
    return [(files[i].stem, read_image(files[i])) for i in sorted(pick)]


def add_noise(x: np.ndarray, sigma: float) -> np.ndarray:
    """y = x + sigma N(0, 1), float64, with a generator seeded 0 for every image."""
    return x.astype(np.float64) + sigma * np.random.default_rng(0).standard_normal(x.shape)


def quality(clean: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """PSNR (peak 255) and SSIM of the output clipped and rounded to 8 bits."""
    from skimage.metrics import structural_similarity

    out8 = np.clip(np.round(out), 0, 255)
    psnr = 10 * np.log10(255.0**2 / np.mean((out8 - clean.astype(np.float64)) ** 2))
    axis = -1 if clean.ndim == 3 else None
    ssim = structural_similarity(clean.astype(np.float64), out8, data_range=255, channel_axis=axis)
    return float(psnr), float(ssim)


def bm3d_profile(threads: int):
    """The `bm3d` package's default ("np") profile on `threads` threads."""
    import bm3d

    profile = bm3d.BM3DProfile()
    profile.num_threads = threads
    return profile


def methods(color: bool, include_bm3d: bool, one_head: bool, threads: int = 1) -> dict:
    """name -> fn(y (0..255 float), sigma) returning (estimate on 0..255, EM iterations or None);
    BM3D on `threads` threads (libcem follows torch's thread count)."""
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

    axis = -1 if color else None

    def libcem_fn(cfg: DenoiseConfig | None, known: bool):
        def run(y, sigma):
            out, info = denoise(y / 255.0, sigma / 255.0 if known else None, config=cfg,
                                return_info=True)
            return out * 255.0, info.trace.iterations
        return run

    table = {
        "libcem (known sigma)": libcem_fn(None, True),
        "libcem (est. sigma)": libcem_fn(None, False),
        "libcem --fast (known sigma)": libcem_fn(DenoiseConfig.for_speed("fast"), True),
        "libcem --best (known sigma)": libcem_fn(DenoiseConfig.for_speed("best"), True),
        "skimage NLM": lambda y, s: (255 * denoise_nl_means(
            y / 255, h=0.8 * s / 255, sigma=s / 255, patch_size=5, patch_distance=6,
            fast_mode=True, channel_axis=axis), None),
        "skimage TV": lambda y, s: (255 * denoise_tv_chambolle(
            y / 255, weight=s / 255, channel_axis=axis), None),
    }
    if one_head:
        table["libcem 4 heads + EM (known sigma)"] = libcem_fn(
            DenoiseConfig(affinity_heads=AFFINITY_HEADS, em_fit=True), True)
    if include_bm3d:
        import bm3d

        profile = bm3d_profile(threads)
        table["BM3D" if not color else "CBM3D"] = (
            (lambda y, s: (bm3d.bm3d_rgb(y, s, profile), None)) if color
            else (lambda y, s: (bm3d.bm3d(y, s, profile), None)))
    return table


def run_set(images, sigmas, color: bool, include_bm3d: bool, one_head_sigmas=(),
            only: list[str] | None = None, threads: int = 1, picture: Path | None = None,
            crop: int | None = None) -> dict:
    """{(sigma, method): Scores} over the images (methods restricted to `only` if given).
    picture: the first image at the first sigma saved there as noisy | each method's output
    (`common.side_by_side`, the central crop x crop of each with `crop`)."""
    results: dict = {}
    for sigma in sigmas:
        table = methods(color, include_bm3d, sigma in one_head_sigmas, threads)
        table = {k: v for k, v in table.items() if only is None or k in only}
        for name, clean in images:
            y = add_noise(clean, sigma)
            panels = [y]
            for method, fn in table.items():
                start = time.perf_counter()
                out, iters = fn(y, sigma)
                seconds = time.perf_counter() - start
                panels.append(out)
                psnr, ssim = quality(clean, out)
                s = results.setdefault((sigma, method), Scores())
                s.psnr.append(psnr)
                s.ssim.append(ssim)
                s.seconds.append(seconds)
                s.small.append(clean.shape[:2] == (256, 256))
                if iters is not None:
                    s.iterations.append(iters)
                print(f"  {name} sigma={sigma} {method}: {psnr:.2f} dB {seconds:.2f} s", flush=True)
            if picture is not None:
                side_by_side(picture, panels, crop)
                print(f"  {picture}: {name} at sigma {sigma:g}, noisy | " + " | ".join(table), flush=True)
                picture = None
    return results


def em_convergence(images, sigma: float, cap: int) -> dict:
    """EM iterations to convergence (objective gain < em_tol), one head vs four heads."""
    from libcem.denoiser.passes import PatchGroups, fit_group_model
    from libcem.denoiser.patches import pad_to_grid, to_opponent

    out = {}
    for label, heads in (("1 head (texture)", ("texture",)), ("4 heads", AFFINITY_HEADS)):
        cfg = DenoiseConfig(affinity_heads=heads, em_max_iter=cap, em_fit=True)
        counts = []
        for _, clean in images:
            chw = torch.tensor(add_noise(clean, sigma), dtype=torch.float32)
            chw = chw[None] if chw.ndim == 2 else chw.permute(2, 0, 1)
            opp = pad_to_grid(to_opponent(chw), cfg.patch, cfg.step)
            groups = PatchGroups(opp, cfg.patch, cfg.heads_for(opp.shape[0]))
            positions = groups.match(cfg.step, cfg.search_radius, cfg.pass1_group_size(opp.shape[0]))
            _, trace = fit_group_model(groups, positions, sigma, cfg, torch.Generator().manual_seed(0))
            counts.append((trace.iterations, trace.converged, trace.objective[-1]))
        out[label] = counts
    return out


def speed(images, sigma: float, repeats: int, threads: int = 1, best: bool = False) -> str:
    """libcem (known sigma) and BM3D alternated `repeats` times on each 256x256 image, BM3D on
    `threads` threads (libcem follows torch's thread count); `best`: libcem --best too."""
    import bm3d

    profile = bm3d_profile(threads)
    fast, slow = DenoiseConfig.for_speed("fast"), DenoiseConfig.for_speed("best")
    runs = {"libcem": lambda y: denoise(y / 255.0, sigma / 255.0),
            "libcem --fast": lambda y: denoise(y / 255.0, sigma / 255.0, config=fast),
            "BM3D": lambda y: bm3d.bm3d(y, sigma, profile)}
    if best:
        runs["libcem --best"] = lambda y: denoise(y / 255.0, sigma / 255.0, config=slow)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _, clean in images:
        if clean.shape[:2] != (256, 256):
            continue
        y = add_noise(clean, sigma)
        per_image: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):
            for name, fn in runs.items():  # alternate, so both see the same machine load
                start = time.perf_counter()
                fn(y)
                per_image[name].append(time.perf_counter() - start)
        for name in runs:
            times[name].append(float(np.median(per_image[name])))
    lines = [f"### Speed, 256x256 Set12 images at sigma {sigma:g} (median of {repeats} runs each, "
             f"{threads} thread(s) each)",
             "", "| method | seconds per image (mean of medians) | time / BM3D's, mean (max) |",
             "|---|---|---|"]
    for name in runs:
        ratio = np.array(times[name]) / np.array(times["BM3D"])
        lines.append(f"| {name} | {np.mean(times[name]):.2f} | {ratio.mean():.2f} ({ratio.max():.2f}) |")
    return "\n".join(lines + ["", f"{len(times['BM3D'])} images, methods alternated image by image."])


def markdown(results: dict, title: str) -> str:
    """One row per method, PSNR / SSIM / seconds per sigma (s256: mean over 256x256 images)."""
    sigmas = sorted({s for s, _ in results})
    names = list(dict.fromkeys(m for _, m in results))
    head = "| method | " + " | ".join(f"sigma {s:g}: PSNR / SSIM / s / s256" for s in sigmas) + " |"
    lines = [f"### {title}", "", head, "|---" * (len(sigmas) + 1) + "|"]
    for m in names:
        cells = []
        for s in sigmas:
            r = results.get((s, m))
            s256 = r.seconds_256() if r is not None else float("nan")
            s256 = "-" if np.isnan(s256) else f"{s256:.2f}"
            cells.append("-" if r is None else f"{np.mean(r.psnr):.2f} / {np.mean(r.ssim):.4f} / "
                         f"{np.mean(r.seconds):.2f} / {s256}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def convergence_markdown(conv: dict, results: dict, sigma: float, title: str = "Set12") -> str:
    lines = [f"### One head vs four heads ({title}, sigma {sigma:g})", "",
             "| heads | mean PSNR | mean EM iterations to converge | converged | final objective |",
             "|---|---|---|---|---|"]
    psnr = {"1 head (texture)": results.get((sigma, "libcem (known sigma)")),
            "4 heads": results.get((sigma, "libcem 4 heads + EM (known sigma)"))}
    for label, counts in conv.items():
        p = f"{np.mean(psnr[label].psnr):.2f}" if psnr[label] else "-"
        its = np.mean([c[0] for c in counts])
        done = sum(c[1] for c in counts)
        obj = np.mean([c[2] for c in counts])
        lines.append(f"| {label} | {p} | {its:.1f} | {done}/{len(counts)} | {obj:.4f} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.denoise", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--sigmas", type=float, nargs="*", default=[15, 25, 50], help="Set12 levels")
    p.add_argument("--color-sigmas", type=float, nargs="*", default=[25], help="McMaster levels")
    p.add_argument("--gray-limit", type=int, default=None, help="first N Set12 images only")
    p.add_argument("--train-draw", type=int, default=None, metavar="SEED",
                   help="the gray columns on 24 Train400 images drawn with SEED (--gray-limit: "
                   "how many) instead of Set12")
    p.add_argument("--color-limit", type=int, default=None, help="first N McMaster images only")
    p.add_argument("--images", nargs="*", default=None,
                   help="only these image names (file stems, e.g. 01 02 or 1 2) in both sets")
    p.add_argument("--methods", nargs="*", default=None,
                   help="only these methods, by their table names")
    p.add_argument("--quick", action="store_true", help="3 gray images at sigma 25, 2 colour")
    p.add_argument("--one-head-sigmas", type=float, nargs="*", default=[25],
                   help="Set12 levels at which the one-head variant also runs")
    p.add_argument("--no-bm3d", action="store_true", help="skip BM3D even if installed")
    p.add_argument("--em-cap", type=int, default=200, help="EM iteration cap (convergence study)")
    p.add_argument("--speed-repeats", type=int, default=0,
                   help="only time libcem against BM3D on the 256x256 Set12 images, N runs each")
    p.add_argument("--speed-sigma", type=float, default=25.0, help="noise level of the speed run")
    p.add_argument("--speed-best", action="store_true", help="time libcem --best in the speed run too")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for every method: torch's for libcem, BM3D's num_threads")
    p.add_argument("--out", type=Path, default=None, help="also write the tables here")
    p.add_argument("--picture", type=Path, default=None,
                   help="save the first image at the first sigma as noisy | each method's output "
                   "(PNG; McMaster's when colour sigmas are given, else Set12's)")
    p.add_argument("--picture-crop", type=int, default=None,
                   help="the picture's panels: their central N x N crop (default: whole)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.quick:
        args.sigmas, args.color_sigmas = [25], [25]
        args.gray_limit, args.color_limit = 3, 2
    torch.set_num_threads(args.threads)
    has_bm3d = importlib.util.find_spec("bm3d") is not None and not args.no_bm3d
    parts = []
    if args.speed_repeats:
        if not has_bm3d:
            raise LibcemError("the speed comparison needs the bm3d package (pip install bm3d)")
        gray = load_images(args.data_root, "set12", args.gray_limit)
        print(speed(gray, args.speed_sigma, args.speed_repeats, args.threads, args.speed_best))
        return
    if args.sigmas:
        if args.train_draw is None:
            gray, title = load_images(args.data_root, "set12", args.gray_limit, args.images), "Set12"
        else:
            gray = train_images(args.data_root, args.gray_limit or 24, args.train_draw)
            title = f"Train400, seed {args.train_draw}"
        results = run_set(gray, args.sigmas, False, has_bm3d, args.one_head_sigmas, args.methods,
                          args.threads, None if args.color_sigmas else args.picture,
                          args.picture_crop)
        parts.append(markdown(results, f"{title} (grayscale, {len(gray)} images)"))
        conv_sigma = 25.0 if 25.0 in args.sigmas else args.sigmas[0]
        conv = em_convergence(gray, conv_sigma, args.em_cap)
        parts.append(convergence_markdown(conv, results, conv_sigma, title))
    if args.color_sigmas:
        color = load_images(args.data_root, "mcmaster", args.color_limit, args.images)
        results = run_set(color, args.color_sigmas, True, has_bm3d, (), args.methods, args.threads,
                          args.picture, args.picture_crop)
        parts.append(markdown(results, f"McMaster (colour, {len(color)} images)"))
    text = "\n\n".join(parts) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
