"""Spatially correlated noise: `noise="correlated"` against the white-noise model and BM3D.

Protocol: clean Set12 images (reporting only: the correlation fit's settings were chosen on
256x256 crops of skimage's cameraman and astronaut), per image a generator seeded 0, white
N(0, 1) noise filtered by a unit-energy kernel (so the pixel std stays 1) and scaled by
--sigma on the 0..255 scale, without clipping. Kernels: `binomial`, [1 2 1]^T [1 2 1]
normalised (neighbour correlation 0.67, like demosaiced sensor noise) and `gauss`, a 5x5
Gaussian of std 1 normalised (0.78; a shape the fit was not written against). Methods:
libcem with `noise="gaussian"` (sigma estimated), libcem with `noise="correlated"` (the
correlation and std fitted), and the `bm3d` package given the true noise power spectrum
(`sigma_psd`: |FFT of the kernel|^2 x sigma^2 x pixels, in its [0, 1] units), all on one
thread. PSNR (peak 255) of the output clipped and rounded to 8 bits; the fitted neighbour
correlation against the true one; time as a ratio to BM3D's, image by image.

`--bayer` runs a camera's path instead (`bayer_demosaic`): McMaster through an RGGB mosaic,
white noise on the raw samples, bilinear demosaicing, PSNR against the noise-free demosaiced
image (the noise is then neither stationary nor filtered by one kernel). With `--gain` the raw
noise grows with the signal (variance gain x + sigma^2, as a sensor's) and every noise model is
compared, `camera` among them (`camera_rows`).

Run `python -m benchmarks.denoise_correlated` (defaults: sigma 15 and 25, both kernels), and
`python -m benchmarks.denoise_correlated --bayer --sigmas 10 20`, and
`python -m benchmarks.denoise_correlated --bayer --gain 1 --sigmas 2 4`.
`--jpeg 95 90` saves each noisy input as a JPEG first (4:2:0 chroma unless `--subsampling`).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import side_by_side
from benchmarks.denoise import DEFAULT_DATA, bm3d_profile, load_images, quality
from libcem.denoiser import DenoiseConfig, denoise


def kernel(name: str) -> np.ndarray:
    """A unit-energy noise-shaping kernel (module docstring)."""
    if name == "binomial":
        k = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0])
    elif name == "gauss":
        g = np.exp(-0.5 * np.arange(-2, 3) ** 2)
        k = np.outer(g, g)
    else:
        raise ValueError(f"kernel must be binomial or gauss, got {name!r}")
    return k / np.sqrt((k * k).sum())


def correlated_noise(shape: tuple[int, int], k: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """White noise (generator seeded `seed`) filtered by k ('valid' convolution), times sigma."""
    from scipy.signal import fftconvolve

    w = np.random.default_rng(seed).standard_normal((shape[0] + k.shape[0] - 1, shape[1] + k.shape[1] - 1))
    return fftconvolve(w, k, mode="valid") * sigma


def bayer_demosaic(rgb: np.ndarray, sigma: float, seed: int = 0, gain: float = 0.0) -> np.ndarray:
    """A camera's path in miniature: the RGB image sampled through an RGGB Bayer mosaic, noise
    of variance gain x + sigma^2 added to each raw sample x (generator seeded `seed`; gain 0:
    white noise of std sigma), then bilinear demosaicing. With no noise it gives the target
    the denoiser should reach."""
    from scipy.signal import convolve2d

    h, w, _ = rgb.shape
    mask = np.zeros((h, w, 3))
    mask[0::2, 0::2, 0] = mask[1::2, 1::2, 2] = mask[0::2, 1::2, 1] = mask[1::2, 0::2, 1] = 1
    mosaic = (rgb * mask).sum(2)
    std = np.sqrt(np.maximum(gain * mosaic + sigma**2, 0.0))
    raw = mosaic + std * np.random.default_rng(seed).standard_normal((h, w))
    green = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4.0
    red_blue = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4.0
    return np.stack([convolve2d(raw * mask[:, :, c], k, mode="same", boundary="symm")
                     for c, k in enumerate((red_blue, green, red_blue))], 2)


def camera_rows(images: list[tuple[str, np.ndarray]], gains: list[float], sigmas: list[float],
                picture: Path | None = None, jpeg: list[int] | None = None,
                subsampling: str = "4:2:0", config: DenoiseConfig | None = None) -> None:
    """`--gain`: the Bayer path with signal-dependent raw noise (variance gain x + sigma^2),
    the input clipped and rounded to 8 bits as a camera writes it; each noise model of
    `denoise` on it, mean PSNR, and the (a, b) that `camera` fitted (image units, per RGB
    pixel after demosaicing). `picture`: the first image's crops, noisy | correlated | camera.
    `jpeg` (qualities, a row each; chroma `subsampling` "4:4:4" or "4:2:0"): the noisy input is
    saved as a JPEG first, as a phone or camera saves it; the PSNR of the input and of `camera`
    against the clean image saved the same way (what is left to reach once the compression's
    own loss is set aside) is printed too. `config`: the denoiser's settings (default: shipped)."""
    models = ("gaussian", "poisson-gaussian", "correlated", "camera")
    print("| raw noise variance | JPEG | noisy | " + " | ".join(models) + " | camera better than "
          "correlated | fitted (a, b), mean | noisy / camera against the clean JPEG |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for gain, sigma, compress in itertools.product(gains, sigmas, jpeg or [None]):
        psnr: dict[str, list[float]] = {m: [] for m in ("noisy", *models, "noisy jpeg", "camera jpeg")}
        fitted = []
        for _, clean in images:
            x = clean.astype(np.float64)
            y = np.clip(np.round(bayer_demosaic(x, sigma, gain=gain)), 0, 255)
            target = np.clip(np.round(bayer_demosaic(x, 0.0)), 0, 255)
            target_jpeg = target
            if compress is not None:
                y = jpeg_round_trip(y, compress, subsampling)
                target_jpeg = jpeg_round_trip(target, compress, subsampling)
            psnr["noisy"].append(quality(target, y)[0])
            psnr["noisy jpeg"].append(quality(target_jpeg, y)[0])
            outs = {}
            for model in models:
                out, info = denoise(y.astype(np.uint8), noise=model, return_info=True, config=config)
                psnr[model].append(quality(target, out.astype(np.float64))[0])
                outs[model] = out / 255.0
                if model == "camera":
                    psnr["camera jpeg"].append(quality(target_jpeg, out.astype(np.float64))[0])
                    fitted.append(info.noise_params)
            if picture is not None:
                write_picture(picture, [y / 255.0, outs["correlated"], outs["camera"]])
                picture = None
        better = int(np.sum(np.array(psnr["camera"]) > np.array(psnr["correlated"])))
        a, b = np.mean(fitted, 0)
        compressed = "-" if compress is None else f"quality {compress}, {subsampling}"
        print(f"| {gain:g} x + {sigma**2:g} | {compressed} | " + " | ".join(
            f"{np.mean(psnr[m]):.2f}" for m in ("noisy", *models)) + f" | {better} of "
            f"{len(images)} | ({a:.2f}, {b:.1f}) | {np.mean(psnr['noisy jpeg']):.2f} / "
            f"{np.mean(psnr['camera jpeg']):.2f} |", flush=True)


def jpeg_round_trip(rgb: np.ndarray, quality_: int, subsampling: str) -> np.ndarray:
    """An 8-bit RGB image (float array) saved as a JPEG by Pillow at `quality_` with chroma
    `subsampling` ("4:4:4" or "4:2:0", the one phones use) and read back, as float."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8)).save(
        buf, "JPEG", quality=quality_, subsampling=subsampling)
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float64)


def true_psd(shape: tuple[int, int], k: np.ndarray, sigma: float) -> np.ndarray:
    """The noise power spectrum as the `bm3d` package takes it, in [0, 1] image units."""
    padded = np.zeros(shape)
    padded[:k.shape[0], :k.shape[1]] = k
    return np.abs(np.fft.fft2(padded)) ** 2 * (sigma / 255) ** 2 * padded.size


def write_picture(path: Path, images: list[np.ndarray], side: int = 192) -> None:
    """The central side x side crops of images in [0, 1], side by side, as an 8-bit PNG."""
    side_by_side(path, [x * 255.0 for x in images], side, gap=0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.denoise_correlated", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--sigmas", type=float, nargs="+", default=[15.0, 25.0])
    p.add_argument("--kernels", nargs="+", default=["binomial", "gauss"])
    p.add_argument("--set", default="set12", choices=("set12", "mcmaster"),
                   help="test images; on McMaster (colour) each RGB channel gets its own noise "
                   "and BM3D is left out")
    p.add_argument("--bayer", action="store_true",
                   help="instead of the kernels: McMaster through a Bayer mosaic, noise on the raw "
                   "samples, bilinear demosaicing (`bayer_demosaic`); PSNR against the noise-free "
                   "demosaiced image")
    p.add_argument("--gain", type=float, nargs="+", default=None,
                   help="with --bayer: signal-dependent raw noise of variance gain x + sigma^2, "
                   "every noise model compared (`camera_rows`)")
    p.add_argument("--jpeg", type=int, nargs="+", default=None, metavar="QUALITY",
                   help="with --gain: save the noisy input as a JPEG of each quality first "
                   "(Pillow), as a phone or camera saves it")
    p.add_argument("--subsampling", default="4:2:0", choices=("4:2:0", "4:4:4"),
                   help="with --jpeg: the JPEG's chroma subsampling (default 4:2:0, as phones "
                   "save photos)")
    p.add_argument("--one-noise-fit", action="store_true",
                   help="with --gain: one noise correlation for the three luminance/chroma "
                   "channels (noise_per_channel=False, as before session 19)")
    p.add_argument("--limit", type=int, default=None, help="first N images")
    p.add_argument("--no-bm3d", action="store_true", help="leave BM3D out")
    p.add_argument("--picture", type=Path, default=None,
                   help="also write a PNG of the first image's central 192x192 crop at the first "
                   "kernel and sigma: noisy | white model | correlated (with --gain: noisy | "
                   "correlated | camera)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if not hasattr(np, "trapz"):  # the bm3d package still calls np.trapz, gone in NumPy 2
        np.trapz = np.trapezoid
    images = load_images(args.data_root, "mcmaster" if args.bayer else args.set, args.limit)
    colour = args.bayer or args.set == "mcmaster"
    if args.gain:
        if not args.bayer:
            p.error("--gain needs --bayer")
        config = DenoiseConfig(noise_per_channel=not args.one_noise_fit)
        camera_rows(images, args.gain, args.sigmas, args.picture, args.jpeg, args.subsampling, config)
        return
    if args.jpeg:
        p.error("--jpeg needs --bayer --gain")
    print("| kernel | sigma | white model | correlated model | BM3D, true spectrum | "
          "neighbour correlation fitted (true) | time / BM3D |\n|---|---|---|---|---|---|---|")
    for name in ["bayer"] if args.bayer else args.kernels:
        k = kernel("binomial" if args.bayer else name)
        true_corr = float((k[:, 1:] * k[:, :-1]).sum())  # r(0, 1) of unit-variance noise
        for sigma in args.sigmas:
            psnr: dict[str, list[float]] = {}
            fitted, ratio = [], []
            for _, clean in images:
                if args.bayer:
                    y = bayer_demosaic(clean.astype(np.float64), sigma)
                    clean = np.clip(np.round(bayer_demosaic(clean.astype(np.float64), 0.0)), 0, 255)
                elif colour:
                    noise = [correlated_noise(clean.shape[:2], k, sigma, seed=c)
                             for c in range(clean.shape[2])]
                    y = clean.astype(np.float64) + np.stack(noise, 2)
                else:
                    y = clean.astype(np.float64) + correlated_noise(clean.shape, k, sigma)
                out = denoise(y / 255)
                psnr.setdefault("white", []).append(quality(clean, out * 255)[0])
                white = out
                start = time.perf_counter()
                out, info = denoise(y / 255, noise="correlated", return_info=True)
                seconds = time.perf_counter() - start
                psnr.setdefault("correlated", []).append(quality(clean, out * 255)[0])
                fitted.append(info.noise_correlation.neighbour_correlation()[0])
                if args.picture is not None:
                    write_picture(args.picture, [y / 255, white, out])
                    args.picture = None
                if not (args.no_bm3d or colour):
                    import bm3d

                    start = time.perf_counter()
                    out = bm3d.bm3d(y / 255, sigma_psd=true_psd(clean.shape, k, sigma),
                                    profile=bm3d_profile(1))
                    ratio.append(seconds / (time.perf_counter() - start))
                    psnr.setdefault("bm3d", []).append(quality(clean, out * 255)[0])
            bm = f"{np.mean(psnr['bm3d']):.2f}" if ratio else "-"
            rt = f"{np.mean(ratio):.2f}" if ratio else "-"
            truth = "" if args.bayer else f" ({true_corr:.2f})"
            print(f"| {name} | {sigma:g} | {np.mean(psnr['white']):.2f} | "
                  f"{np.mean(psnr['correlated']):.2f} | {bm} | {np.mean(fitted):.2f}{truth} | {rt} |",
                  flush=True)


if __name__ == "__main__":
    main()
