"""Ablations of the patch-graph denoiser: what each named part adds, on images it was not tuned on.

Protocol (as `benchmarks.denoise`): clean 8-bit grayscale images, per image a generator seeded 0,
y = x + sigma N(0, 1) without clipping, known sigma, PSNR (peak 255) of the output clipped and
rounded to 8 bits. Each variant changes one setting of the shipped `DenoiseConfig` (below).

- `--split train`: `--count` Train400 images drawn with `--seed` (the tuning split: settings
  are chosen here only);
- `--split colour`: the central 256x256 crops of five skimage colour images (astronaut,
  chelsea, coffee, rocket, immunohistochemistry), for colour-only settings (tuning too);
- `--split gray`: the central 256x256 crops of eight skimage gray images (clock, moon, brick,
  text, page, coins, grass, gravel; not in Set12), smooth ones first (tuning too);
- `--split set12`: the 12 Set12 images (reporting only).

Run `python -m benchmarks.denoise_ablation --split train --count 24` and
`python -m benchmarks.denoise_ablation --split set12`; prints a markdown table (mean PSNR,
the change against the shipped settings and on how many images the variant was better) and
writes it to --out. `--picture P` saves the first image at the first sigma as noisy | each
variant's output (`--picture-crop N`: the central N x N of each).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import side_by_side
from benchmarks.denoise import (
    DEFAULT_DATA,
    add_noise,
    load_images,
    quality,
    train_images,
)
from libcem.denoiser import DenoiseConfig, denoise
from libcem.denoiser.settings import AFFINITY_HEADS, SPEEDS

SESSION8_HIGH = {"pass2_high": "graph_wiener", "later_pass2": "graph_wiener", "feedback_high": 0.0,
                 "pass2_repeats_gray_high": 1, "pass2_repeats_color_high": 2}
NO_GROUP_AXIS = {"cov_graph_tau": 0.0, "cov_graph_tau_color": 0.0}  # no step along any group
VARIANTS = {  # name -> overrides of the shipped DenoiseConfig
    "as shipped": {},
    "pass 1 only (no second pass)": {"second_pass": False},
    "pass 1 only, tau = 0 (no graph diffusion)": {"second_pass": False, "graph_diffusion": False},
    "pass 1 only, chain graph (no attention)": {"second_pass": False, "graph": "chain"},
    "later second passes with 2 covariance EM iterations (session 10, gray)": {"cov_em_iter_later": 2},
    "three gray second passes at every sigma": {"pass2_repeats_gray": 3, "pass2_repeats_gray_high": 3},
    "two gray second passes above sigma 37.5 (session 10)": {"pass2_high": "graph_wiener",
                                                             "pass2_repeats_gray_high": 2},
    "two colour second passes above sigma 37.5 (session 10)": {"pass2_high": "graph_wiener",
                                                               "pass2_repeats_color_high": 2},
    "later passes above sigma 37.5: feedback gamma 0.8": {"feedback_gamma_high": 0.8},
    "no covariance EM (the pilot's covariance: NL-Bayes)": {"cov_em_iter_gray": 0, "cov_em_iter_color": 0},
    "covariance EM, 1 iteration": {"cov_em_iter_gray": 1, "cov_em_iter_color": 1, "cov_em_iter_chroma": 1},
    "covariance EM, 2 iterations": {"cov_em_iter_gray": 2, "cov_em_iter_color": 2, "cov_em_iter_chroma": 2},
    "covariance EM, 4 iterations": {"cov_em_iter_gray": 4, "cov_em_iter_color": 4, "cov_em_iter_chroma": 4},
    "covariance MAP-EM, prior worth K/2 patches, 10 iterations": {
        "cov_em_iter_gray": 10, "cov_em_iter_color": 10, "cov_em_iter_chroma": 10, "cov_prior": 0.5},
    "no feedback (later second passes on the noisy image)": {"feedback": 0.0},
    "one second pass on gray images": {"pass2_repeats_gray": 1},
    "one gray second pass, tau = 0 (no graph diffusion)": {"pass2_repeats_gray": 1,
                                                           "graph_diffusion": False, **NO_GROUP_AXIS},
    "one gray second pass, chain graph (no attention)": {"pass2_repeats_gray": 1, "graph": "chain"},
    "session 7 settings (one gray second pass, no covariance EM, no feedback)": {
        "pass2_repeats_gray": 1, "cov_em_iter_gray": 0, "cov_em_iter_color": 0, "feedback": 0.0,
        "search_radius_high": 16, "group_size_gray": 32, **SESSION8_HIGH},
    "session 8 passes above sigma 37.5 (graph Wiener only: once on gray, twice on colour)": SESSION8_HIGH,
    "session 8 settings (as above, pass-1 groups of 32 on gray images)": {**SESSION8_HIGH, "group_size_gray": 32},
    "no covariance EM above sigma 37.5 on gray images (sessions 12-22)": {"cov_em_iter_high_gray": 0},
    "covariance EM above sigma 37.5 on colour images, 1 iteration": {"cov_em_iter_high_color": 1},
    "chroma covariances not shrunk above sigma 37.5 (before session 29)": {
        "chroma_to_diagonal_high": 0.0, "chroma_to_diagonal_later_high": 0.0},
    "later passes' chroma covariances not shrunk above sigma 37.5 (before session 36)": {
        "chroma_to_diagonal_later_high": 0.0},
    "later passes' flat chroma groups not at their DCT diagonal (before session 36)": {
        "chroma_diagonal_below": 0.0},
    "chroma covariances shrunk to their DCT diagonal above sigma 37.5 in every pass": {
        "chroma_to_diagonal_high": 1.0},
    "flat groups' mean patches not denoised (before session 30)": {"flat_threshold": 0.0},
    "no graph diffusion along the covariance pass's groups (before session 31)": NO_GROUP_AXIS,
    "every group, none left out as covered (before session 33)": {"skip_covered": 0.0,
                                                                 "skip_covered_color": 0.0},
    "colour groups left out as gray ones, at a quarter (session 33)": {"skip_covered_color": 0.25},
    "chroma covariances refit by EM too (before session 34)": {"cov_em_iter_chroma": 1},
    "covariance EM above sigma 37.5 in every gray pass, 1 iteration": {"cov_em_iter_later": 1},
    "pass-1 groups of 32 on gray images (session 8)": {"group_size_gray": 32},
    "pass-1 groups of 32 on colour images (before session 35)": {"group_size": 32},
    "flat aggregation on gray images (no Kaiser window; session 8)": {"aggregation_window_gray": 0.0},
    "later pass above sigma 37.5: feedback gamma 0.6 (as below)": {"feedback_gamma_high": 0.6},
    "+ EM of the global parameters (tau, bandwidths)": {"em_fit": True},
    "+ all four affinity heads and their EM": {"em_fit": True, "affinity_heads": AFFINITY_HEADS},
    "no EM at all (moment-estimated group scales)": {"scale_iter": 0},
    "tau = 0 (no graph diffusion)": {"graph_diffusion": False, **NO_GROUP_AXIS},
    "chain graph (no attention: DCT along the group)": {"graph": "chain"},
    "pass-2 bandwidths refitted on the first estimate": {"refit_bandwidths": True},
    "no sigma schedule (7x7, covariance pass 2)": {"sigma_schedule": False},
    "pass 2 = graph Wiener at every sigma": {"pass2": "graph_wiener", "later_pass2": "graph_wiener"},
    "graph Wiener pass first above sigma 37.5 (sessions 8-11)": {"pass2_high": "graph_wiener"},
    "33x33 search window above sigma 37.5 (as below)": {"search_radius_high": 16},
    "K = 64 in the second passes above sigma 37.5 (before session 14)": {"group_size_wiener_high": 64},
    "--fast (stride 6, two colour second passes)": SPEEDS["fast"],
    "--fast, tau = 0 (no graph diffusion)": {**SPEEDS["fast"], "graph_diffusion": False, **NO_GROUP_AXIS},
    "--fast, chain graph (no attention)": {**SPEEDS["fast"], "graph": "chain"},
    "--fast keeping every colour group (before session 37)": {
        **SPEEDS["fast"], "skip_covered_color": 0.0},
    "--fast without the group-axis step on colour images (before session 37)": {
        **SPEEDS["fast"], "cov_graph_tau_color": 0.0},
    "--fast as before session 37 (both of the above)": {
        **SPEEDS["fast"], "skip_covered_color": 0.0, "cov_graph_tau_color": 0.0},
    "--fast, chroma covariances not shrunk above sigma 37.5": {
        **SPEEDS["fast"], "chroma_to_diagonal_high": 0.0, "chroma_to_diagonal_later_high": 0.0},
    "--best (group-axis Wiener passes after the others)": SPEEDS["best"],
    "--best, one group-axis pass (no iterations)": {"combination_passes": 1, "combination_passes_high": 1},
    "--best, tau = 0 (each pass hands on its estimate, no noise kept)": {**SPEEDS["best"], "combination_tau": 0.0},
    "--best, groups matched once": {**SPEEDS["best"], "combination_rematch": 100},
    "--best on the pass-1 estimate (no covariance passes)": {**SPEEDS["best"], "second_pass": False},
    "--best on the pass-1 estimate, tau = 0 (no graph diffusion)":
        {**SPEEDS["best"], "second_pass": False, "graph_diffusion": False},
    "--best on the pass-1 estimate, chain graph (no attention)":
        {**SPEEDS["best"], "second_pass": False, "graph": "chain"},
}
COLOUR_CROPS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")  # skimage.data
GRAY_CROPS = ("clock", "moon", "brick", "text", "page", "coins", "grass", "gravel")  # smooth first


def skimage_crops(names: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
    """The central 256x256 crops of these skimage images (RGB for colour ones)."""
    from skimage import data

    out = []
    for name in names:
        img = getattr(data, name)()
        img = img[..., :3] if img.ndim == 3 else img
        y, x = (img.shape[0] - 256) // 2, (img.shape[1] - 256) // 2
        out.append((name, np.ascontiguousarray(img[y:y + 256, x:x + 256]).astype(np.float64)))
    return out


def colour_images() -> list[tuple[str, np.ndarray]]:
    """The central 256x256 crops of five skimage colour images (not in Set12 or McMaster)."""
    return skimage_crops(COLOUR_CROPS)


def run(images, sigmas, variants, picture: Path | None = None, crop: int | None = None) -> dict:
    """{(sigma, variant): [PSNR per image]} and the total seconds per variant. picture: the
    first image at the first sigma saved there as noisy | each variant's output
    (`common.side_by_side`, the central crop x crop of each with `crop`)."""
    psnr, seconds = {}, {}
    for sigma in sigmas:
        for name, clean in images:
            y = add_noise(clean, sigma)
            panels = [y] if picture is not None else []  # kept only for the picture
            for variant, overrides in variants.items():
                cfg = DenoiseConfig().override(**overrides)
                start = time.perf_counter()
                out = denoise(y / 255.0, sigma / 255.0, config=cfg) * 255.0
                seconds[variant] = seconds.get(variant, 0.0) + time.perf_counter() - start
                psnr.setdefault((sigma, variant), []).append(quality(clean, out)[0])
                if picture is not None:
                    panels.append(out)
            if picture is not None:
                side_by_side(picture, panels, crop)
                dbs = " | ".join(f"{v} {psnr[(sigma, v)][-1]:.2f} dB" for v in variants)
                print(f"  {picture}: {name} at sigma {sigma:g}, noisy | {dbs}", flush=True)
                picture = None
            print(f"  {name} sigma={sigma:g} done", flush=True)
    return {"psnr": psnr, "seconds": seconds}


def markdown(result: dict, sigmas, variants, title: str) -> str:
    psnr = result["psnr"]
    head = "| variant | " + " | ".join(f"sigma {s:g}" for s in sigmas) + " | time vs shipped |"
    lines = [f"### {title}", "", head, "|---" * (len(sigmas) + 2) + "|"]
    base_t = result["seconds"]["as shipped"]
    for v in variants:
        cells = []
        for s in sigmas:
            ours, base = np.array(psnr[(s, v)]), np.array(psnr[(s, "as shipped")])
            m, b = ours.mean(), base.mean()
            better = int((ours > base).sum())  # images where the variant beats the shipped one
            cells.append(f"{m:.2f}" if v == "as shipped"
                         else f"{m:.2f} ({m - b:+.2f}, {better} of {len(ours)})")
        lines.append(f"| {v} | " + " | ".join(cells)
                     + f" | {result['seconds'][v] / base_t:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.denoise_ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--split", choices=("train", "colour", "gray", "set12"), default="train",
                   help="train: Train400 draw; colour / gray: skimage colour / gray crops (all "
                   "three for tuning); set12: reporting only")
    p.add_argument("--count", type=int, default=24, help="Train400 images drawn")
    p.add_argument("--seed", type=int, default=0, help="seed of the Train400 draw")
    p.add_argument("--sigmas", type=float, nargs="*", default=[15, 25, 50])
    p.add_argument("--variants", nargs="*", default=None, help="only these (by name)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--picture", type=Path, default=None,
                   help="save the first image at the first sigma as noisy | each variant's output")
    p.add_argument("--picture-crop", type=int, default=None,
                   help="the picture's panels: their central N x N crop (default: whole)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    variants = {k: v for k, v in VARIANTS.items()
                if args.variants is None or k in args.variants or k == "as shipped"}
    if args.split == "train":
        images = train_images(args.data_root, args.count, args.seed)
        title = f"Ablations, {len(images)} Train400 images (seed {args.seed}), known sigma"
    elif args.split == "colour":
        images = colour_images()
        title = f"Ablations, {len(images)} skimage colour crops (256x256), known sigma"
    elif args.split == "gray":
        images = skimage_crops(GRAY_CROPS)
        title = f"Ablations, {len(images)} skimage gray crops (256x256), known sigma"
    else:
        images = load_images(args.data_root, "set12", None)
        title = "Ablations, Set12 (12 images), known sigma"
    result = run(images, args.sigmas, variants, args.picture, args.picture_crop)
    text = markdown(result, args.sigmas, variants, title) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
