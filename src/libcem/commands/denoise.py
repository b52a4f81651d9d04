"""`libcem denoise`: denoise an image file, or every image in a folder, with no training."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

EPILOG = """examples:
  libcem denoise noisy.png -o clean.png              noise model and level read from the image
  libcem denoise noisy.png -o clean.png --sigma 25   white noise, std on the 0..255 scale
  libcem denoise photos/ -o clean/                   every PNG/JPEG/WebP/HEIC/TIFF/BMP in the folder
  libcem denoise a.jpg b.jpg -o clean/               several files (or folders) into one folder
  libcem denoise DCIM/ -o clean/ -r                  sub-folders too, their tree kept under clean/
  libcem denoise crop.png -o clean.png --best        highest quality, several times slower
  libcem denoise phone.jpg -o clean.jpg --strength 0.8   a phone's JPEG, some grain kept
  libcem denoise photo.png -o clean.png --noise correlated   blotchy (demosaiced) noise
  libcem denoise phone.png -o clean.png --noise camera       blotches brighter in bright areas

Gray, gray+alpha, RGB and RGBA images in 8 or 16 bits (float TIFF too) keep their bit depth,
in the output suffix's format (WebP and HEIC written lossless; HEIC needs pillow-heif);
alpha is copied (JPEG and BMP hold none: written without it, with a note).
Images larger than --tile are processed in overlapping tiles (memory stays bounded).
In a folder or a list of files, one that cannot be read or denoised is reported on stderr and
skipped; the exit status is 1 if any file failed. Outputs are written atomically (temporary
file, rename) and keep the input's EXIF and ICC profile (8-bit PNG, JPEG, WebP, HEIC; ICC only
in TIFF)."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "denoise",
        help="denoise images with the patch-graph EM denoiser (no training)",
        description="Remove white Gaussian, signal-dependent or correlated noise, or both (a camera's),\n"
        "with the patch-graph diffusion denoiser: groups of similar patches on affinity-weighted\n"
        "graphs, graph diffusion with per-group scales fitted by EM, then a second pass on\n"
        "groups matched on that estimate (a Bayes estimate under each group's patch covariance,\n"
        "fitted by EM on the noisy patches from the estimate's, with part of the residual fed\n"
        "back). --best adds passes that replace each patch by a linear combination of its\n"
        "group's patches. The noise level is estimated unless --sigma gives it; with --noise\n"
        "correlated or camera, the noise's correlation between neighbouring pixels too. See\n"
        "docs/denoise.md.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                   help="image files (PNG, JPEG, WebP, HEIC, TIFF, BMP) or folders of them (their "
                   "own files; with -r their sub-folders' too)")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="a folder's sub-folders too, written under --output in the same tree")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file (for one file) or folder (for a folder or several inputs: "
                   "each image under its own name)")
    p.add_argument("--sigma", type=float, default=None,
                   help="noise std on the 0..255 scale whatever the bit depth (default: "
                   "estimate); on an image whose noise was clipped at black and white (an 8-bit "
                   "image that carries it), the std before clipping: libcem works out the "
                   "smaller std left after clipping and takes out the clipping's bias (an "
                   "estimate of white noise is then of the std before clipping too)")
    p.add_argument("--device", default=None,
                   help="torch device, e.g. cpu or cuda (default: the GPU if there is one)")
    p.add_argument("--tile", type=int, default=None,
                   help="tile side in pixels for large images (default: 768 on a CPU; on a GPU the "
                   "largest its free memory holds, the whole photo when it fits)")
    p.add_argument("--fast", action="store_true",
                   help="about 2x faster for 0.1-0.2 dB less on colour photos, 0.07 dB on "
                   "gray ones: sparser reference patches, on colour two second passes instead "
                   "of three (a 12-megapixel photo: 2.5 minutes on the slowest 2-core CPU "
                   "measured, against 5 with the default settings)")
    p.add_argument("--best", action="store_true",
                   help="the highest quality: 0.10-0.21 dB above the default on Set12 (gray) and "
                   "0.10 dB on McMaster (colour), 2.5-5.5x slower: LIChI-style passes that replace each "
                   "patch by a linear combination of its group's patches (small images and crops)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that denoise the tiles of a large image side by side "
                   "(default: one per CPU core, at most 8 and as many as free memory holds; 1 = none)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads that share the work on one image, or on each tile of a large "
                   "image denoised in this process (default: one per CPU core, as torch's "
                   "thread count; the output is the same for any count)")
    p.add_argument("--noise", choices=("gaussian", "poisson-gaussian", "auto", "correlated", "camera"),
                   default=None,
                   help="noise model (default: auto, or gaussian when --sigma is given): white "
                   "Gaussian, signal-dependent Poisson-Gaussian (variance a x + b, fitted: a raw "
                   "sensor's noise), correlated (Gaussian noise smoothed over neighbouring pixels, "
                   "as demosaicing leaves it: blotches a white-noise model leaves; its "
                   "correlation is fitted, --sigma may give its std), camera (both: "
                   "blotches that grow with brightness, as in a photo from a phone or camera, "
                   "JPEGs included; a, b and the correlation fitted, on colour images one "
                   "correlation per luminance/chroma channel), or auto (camera when the noise "
                   "is correlated, else poisson-gaussian or gaussian, read from the image; "
                   "the line printed per image names the choice). With correlated and camera, "
                   "--best's extra passes are skipped")
    p.add_argument("--strength", type=float, default=1.0,
                   help="1 removes the noise (default); lower keeps part of it as grain (0..1)")
    p.add_argument("--one-head", action="store_true",
                   help="use the texture affinity head only (the default since it measured as "
                   "well as all four; kept for old scripts)")
    p.add_argument("--all-heads", action="store_true",
                   help="use all affinity heads and fit their bandwidths and tau by EM "
                   "(for comparison; same PSNR, slower)")
    p.set_defaults(func=run)


def _pairs(srcs: list[Path], dst: Path, recursive: bool = False) -> list[tuple[Path, Path]]:
    """(input, output) files: one file to `dst` (or into it, when it is a folder); a folder's
    images, or several inputs' images, into the folder `dst` under their own names (with
    `recursive`, a folder's sub-folders' images too, under their path in it)."""
    from libcem.denoiser.io import is_image_path
    from libcem.errors import LibcemError

    if len(srcs) == 1 and not srcs[0].is_dir():
        if not srcs[0].exists():
            raise LibcemError(f"{srcs[0]}: no such file or folder")
        return [(srcs[0], dst / srcs[0].name if dst.is_dir() else dst)]
    pairs: dict[Path, Path] = {}  # input -> output; a file given twice is denoised once
    out_root = dst.resolve()
    for src in srcs:
        if src.is_dir():
            found = sorted(f for f in (src.rglob("*") if recursive else src.iterdir())
                           if f.is_file() and is_image_path(f)
                           and out_root not in f.resolve().parents)  # not earlier outputs inside it
            if not found:
                subs = sum(f.is_dir() for f in src.iterdir())
                raise LibcemError(f"{src}: no PNG, JPEG, WebP, HEIC, TIFF or BMP images in this folder"
                                  + (f" (its {subs} sub-folder(s) are read with -r)" if subs and not recursive
                                     else ""))
            pairs.update((f, dst / f.relative_to(src)) for f in found)
        elif src.exists():
            pairs[src] = dst / src.name
        else:
            raise LibcemError(f"{src}: no such file or folder")
    if dst.exists() and not dst.is_dir():
        raise LibcemError(f"{dst}: the inputs are {'a folder' if len(srcs) == 1 else 'several'}, "
                          "so the output must be a folder")
    written: dict[Path, Path] = {}
    for f, out in pairs.items():  # two inputs of one name would write one output
        if written.setdefault(out, f) != f:
            raise LibcemError(f"{written[out]} and {f} would both be written to {out}")
    return list(pairs.items())


def run(args: argparse.Namespace) -> int:
    """Denoise each (input, output) pair; in a folder, a bad file is reported and skipped."""
    from tqdm import tqdm

    from libcem.denoiser.heap import keep_freed_memory
    from libcem.errors import LibcemError

    if args.noise is None:  # a given sigma describes white Gaussian noise
        args.noise = "auto" if args.sigma is None else "gaussian"
    if args.sigma is not None and not 0 <= args.sigma <= 255:
        raise LibcemError(f"--sigma is on the 0..255 scale; got {args.sigma}")
    if args.sigma is not None and args.noise not in ("gaussian", "correlated"):
        raise LibcemError("--sigma sets Gaussian noise; leave it out with --noise "
                          f"{args.noise} (the noise parameters are fitted)")
    cfg = _config(args)
    keep_freed_memory()  # this process denoises pass after pass, image after image (`heap`)
    if args.best and args.noise in ("correlated", "camera"):
        print("note: --best's group-axis passes assume white noise; with --noise "
              f"{args.noise} they are skipped", file=sys.stderr)
    pairs = _pairs(args.inputs, args.output, args.recursive)
    noted: set[str] = set()  # notes already printed in this run
    # no tqdm monitor thread: a single-threaded process forks its tile workers, a threaded one
    # spawns them, each importing torch again (`tiling._pool`)
    tqdm.monitor_interval = 0
    if len(args.inputs) == 1 and not args.inputs[0].is_dir():  # one file: its error is the command's
        _denoise_file(*pairs[0], args, cfg, noted)
        return 0
    failed = 0
    for src, dst in tqdm(pairs, desc="denoise", unit="image", disable=len(pairs) == 1):
        try:
            _denoise_file(src, dst, args, cfg, noted)
        except LibcemError as err:  # one bad file must not stop the folder: report, go on
            failed += 1
            why = str(err) if str(src) in str(err) else f"{src}: {err}"
            tqdm.write(f"libcem: skipped {why}", file=sys.stderr)
    if failed:
        print(f"libcem: {failed} of {len(pairs)} images failed", file=sys.stderr)
    return 1 if failed else 0


def _config(args: argparse.Namespace):
    from libcem.denoiser import DenoiseConfig
    from libcem.errors import LibcemError

    if args.fast and args.best:
        raise LibcemError("--fast and --best exclude each other")
    cfg = DenoiseConfig.for_speed("fast" if args.fast else "best" if args.best else "default")
    if args.tile is not None:
        cfg = cfg.override(tile=args.tile, gpu_tile=args.tile,
                           overlap=min(cfg.overlap, args.tile // 4))
    if args.workers is not None:
        if args.workers < 1:
            raise LibcemError(f"--workers must be at least 1; got {args.workers}")
        cfg = cfg.override(workers=args.workers)
    if args.threads is not None:
        if args.threads < 1:
            raise LibcemError(f"--threads must be at least 1; got {args.threads}")
        cfg = cfg.override(threads=args.threads)
    if args.one_head and args.all_heads:
        raise LibcemError("--one-head and --all-heads exclude each other")
    if args.one_head:
        cfg = cfg.override(affinity_heads=("texture",))
    if args.all_heads:
        from libcem.denoiser.settings import AFFINITY_HEADS

        cfg = cfg.override(affinity_heads=AFFINITY_HEADS, em_fit=True)
    return cfg


def _denoise_file(src: Path, dst: Path, args: argparse.Namespace, cfg, noted: set[str]) -> None:
    from tqdm import tqdm

    from libcem.denoiser import denoise
    from libcem.denoiser.api import dtype_white
    from libcem.denoiser.io import (
        check_writable,
        drops_alpha,
        read_image,
        read_metadata,
        write_image,
    )

    img = read_image(src)
    check_writable(dst, img.dtype)  # before the work: the output keeps the input's dtype
    note = _speed_note(img, args)
    if note and note[0] not in noted:  # once per run
        noted.add(note[0])
        tqdm.write(f"note: {src.name}: {note[1]}", file=sys.stderr)
    if drops_alpha(dst, img) and "alpha" not in noted:  # once per run
        noted.add("alpha")
        tqdm.write(f"note: {src.name}: {dst.suffix[1:].upper()} holds no alpha channel: the output is "
                   "written without it (PNG, WebP or TIFF keep it)", file=sys.stderr)
    scale = 255.0 / dtype_white(img.dtype)  # image units -> 0..255 scale
    sigma = None if args.sigma is None else args.sigma / scale
    with _TileBar(src) as bar:
        out, info = denoise(img, sigma, config=cfg, device=args.device, return_info=True,
                            noise=args.noise, strength=args.strength, progress=bar.update)
    write_image(dst, out, read_metadata(src))
    tqdm.write(f"{src} -> {dst}: {_summary(info, args, scale)}")


def _summary(info, args: argparse.Namespace, scale: float) -> str:
    """What `denoise` found and did, in one line: the noise model (and whether `auto` chose
    it), its std on the 0..255 scale and, per model, its parameters; `scale` maps image units
    to that scale."""
    corr = info.noise_correlation
    grows = info.noise_model == "poisson-gaussian" or (
        info.noise_model == "camera" and info.noise_params is not None and info.noise_params[0] > 0)
    where = (", at the image's mean level" if grows
             else ", root mean square over luminance and chroma"
             if corr is not None and corr.per_channel else "")
    model = ""
    if grows:  # variance a x + b; `camera` without a slope is the stationary correlated model
        model = (f", Poisson-Gaussian a {info.noise_params[0] * scale:.3f} "
                 f"b {info.noise_params[1] * scale**2:.2f}")
    if corr is not None:
        right, below = corr.neighbour_correlation()
        model += f", correlated noise: neighbour correlation {right:.2f} across, {below:.2f} down"
        if corr.per_channel:
            stds = " / ".join(f"{s * scale:.2f}" for s in corr.channel_stds())
            model += f", std in luminance / chroma / chroma {stds}"
    if info.clipped_sigma is not None:
        model += (f", clipped at black and white: std {info.clipped_sigma * scale:.2f} after "
                  "clipping, its bias taken out")
    elif info.clipping_modelled:
        model += ", clipped at black and white: its bias taken out"
    if info.trace.iterations:  # the EM of the global parameters (--all-heads) ran
        model += f", EM iterations {info.trace.iterations}"
    chosen = f"{info.noise_model} noise" + (" (auto)" if args.noise == "auto" else "")
    if args.noise == "camera" and info.noise_model == "correlated":
        chosen += " (camera: its fit found no growth with brightness)"
    if args.best and args.noise == "auto" and info.noise_model in ("correlated", "camera"):
        chosen += ", --best's extra passes skipped (they assume white noise)"
    if info.white is not None and info.white * scale < 255:  # 12-bit data in a 16-bit file
        where += (f"; {info.sigma:.1f} in the file's units, whose data fill "
                  f"{round(math.log2(info.white + 1))} bits")
    return f"{chosen}, sigma {info.sigma * scale:.2f} (0..255 scale{where}){model}"


BIG_PHOTO_MEGAPIXELS = 4.0  # from here on, the speed note


def _speed_note(img, args: argparse.Namespace) -> tuple[str, str] | None:
    """(kind, text) of a hint for a big photo denoised on a CPU under settings meant for
    smaller ones, or None. Times: docs/denoise.md, 12 megapixels, two tile workers."""
    from libcem.device import resolve_device

    megapixels = img.shape[0] * img.shape[1] / 1e6
    if megapixels < BIG_PHOTO_MEGAPIXELS or args.fast or resolve_device(args.device).type != "cpu":
        return None
    if args.best:
        return "best", (f"{megapixels:.1f} megapixels with --best, meant for small images and "
                        "crops: 12 megapixels took 16 minutes on 2 cores, 3-5 with the default "
                        "settings")
    return "fast", (f"{megapixels:.1f} megapixels; --fast is about 2x faster for 0.1-0.2 dB "
                    "less on colour photos (12 megapixels on 2 cores: 149 s against 301 s)")


class _TileBar:
    """A progress bar over the tiles of one large image (shown only once tiling starts)."""

    def __init__(self, src: Path) -> None:
        self.src, self.bar = src, None

    def update(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.src.name, unit="tile", leave=False)
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> _TileBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
