"""`libcem sample`: text to images with a trained prior, as a grid or one PNG per image."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from libcem.commands.common import add_guidance_interval, with_guidance_interval
from libcem.errors import LibcemError


def register(sub: argparse._SubParsersAction) -> None:
    from libcem.generative.diffusion.samplers import SAMPLERS, sampler_help

    p = sub.add_parser(
        "sample",
        help="generate images from text prompts with a trained prior",
        description="Generate N images per PROMPT with the prior's EMA weights, classifier-free guidance and a "
        "diffusers sampler. Image i is drawn from its own generator seeded by (--seed, i), so the same seed gives "
        "the same images whatever --batch-size. Writes one grid (--output, one row per prompt when there are "
        "several) or one PNG per image (--output-dir).",
    )
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help='text, e.g. "a red fern fractal on a black background"')
    p.add_argument("--model", required=True, type=Path,
                   help="a two-stage run folder (libcem train), a prior run or checkpoint folder, an export "
                   "(libcem export), or hf:USER/NAME on the Hugging Face Hub (downloaded once)")
    p.add_argument("-n", type=int, default=16, help="images per prompt (default 16)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the prior's config, 20)")
    p.add_argument("--guidance", type=float,
                   help="classifier-free guidance scale; 1 = no guidance (default: the prior's config, 2)")
    add_guidance_interval(p)
    p.add_argument("--sampler", choices=list(SAMPLERS),
                   help=sampler_help() + " (default: the prior's config: euler for a flow prior, dpm++ for ddpm)")
    p.add_argument("--seed", type=int, default=0, help="image i is drawn from a generator seeded by (SEED, i) (default 0)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", type=Path, help="grid PNG to write (default samples.png)")
    out.add_argument("--output-dir", type=Path, help="folder for one PNG per image instead of a grid")
    p.add_argument("--batch-size", type=int, default=50, help="images sampled at once (results do not depend on it)")
    p.add_argument("--upscale", type=int, default=2, help="nearest-neighbour enlargement of the grid (default 2)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from libcem.generative.pipeline import Pipeline
    from libcem.imaging import check_write_size, grid, grid_size, save_png

    if args.n < 1 or args.batch_size < 1 or args.upscale < 1:
        raise LibcemError("-n, --batch-size and --upscale must be >= 1")
    if args.steps is not None and args.steps < 1:
        raise LibcemError("--steps must be >= 1")
    if args.seed < 0:
        raise LibcemError("--seed must be >= 0")
    if args.output_dir and args.output_dir.exists() and not args.output_dir.is_dir():
        raise LibcemError(f"--output-dir {args.output_dir} is a file")
    pipe = with_guidance_interval(Pipeline.from_pretrained(args.model, args.device), args)
    cols = args.n if len(args.prompts) > 1 else math.ceil(math.sqrt(args.n))
    if not args.output_dir:  # refuse a grid too large to write before drawing a single image
        check_write_size(*grid_size(len(args.prompts) * args.n, pipe.image_size, cols), args.upscale)
    t0 = time.perf_counter()
    batches = pipe.generate(args.prompts, n=args.n, steps=args.steps, guidance=args.guidance, seed=args.seed,
                            sampler=args.sampler, batch_size=args.batch_size, progress=True)
    count = 0
    if args.output_dir:  # written batch by batch, so any -n fits in memory
        for batch in batches:
            for img in batch:
                save_png(img, args.output_dir / f"{count // args.n:02d}_{count % args.n:04d}.png")
                count += 1
        where = args.output_dir
    else:
        images = torch.cat(list(batches))
        count, where = len(images), args.output or Path("samples.png")
        save_png(grid(images, cols=cols), where, upscale=args.upscale)
    seconds = time.perf_counter() - t0
    print(f"{count} images in {seconds:.1f} s ({count / seconds:.2f} images/s); written to {where}")
    return 0
