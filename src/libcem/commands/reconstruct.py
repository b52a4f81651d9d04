"""`libcem reconstruct`: run images through a trained tokenizer and write input | output pairs."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm.auto import tqdm

from libcem.errors import LibcemError

GRID_MAX = 64


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="encode and decode images with a trained tokenizer; prints the mean PSNR",
        description="Writes one side-by-side PNG (input | reconstruction) per image into --output, "
        "plus grid.png, and prints the mean PSNR. INPUT is an image file, a folder of images, or a "
        "data source name (fractals, digits, ...: its held-out split).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, or data source names")
    p.add_argument("--model", required=True, type=Path, help="a run folder or a model folder")
    p.add_argument("--output", required=True, type=Path, help="folder for the PNGs")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.set_defaults(func=run)


def _expand(inputs: list[str], channels: int, size: int):
    """Yield (name, (1, C, H, W) float image) for every input."""
    from libcem.generative.data import SOURCES, DataConfig, load_data
    from libcem.generative.data.folder import IMAGE_SUFFIXES, load_image

    for item in inputs:
        path = Path(item)
        if item in SOURCES or item.startswith("folder:"):
            test = load_data(DataConfig(source=item, image_size=size, channels=channels)).test
            for i in range(len(test)):
                yield f"{item.replace(':', '_').replace('/', '_')}_{i:04d}", test.floats([i])
        elif path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise LibcemError(f"no images in folder {path}")
            yield from _expand([str(f) for f in files], channels, size)
        elif path.is_file():
            arr = load_image(path, channels)
            if arr is None:
                raise LibcemError(f"{path} is not a readable image")
            yield path.stem, torch.from_numpy(arr)[None].float() / 255
        else:
            raise LibcemError(f"'{item}' is neither an image, a folder, nor a data source")


def run(args: argparse.Namespace) -> int:
    from libcem.device import resolve_device
    from libcem.generative.models.tokenizer import Tokenizer
    from libcem.generative.data.base import evenly_spaced
    from libcem.imaging import grid, psnr, save_png, side_by_side

    device = resolve_device(args.device)
    model = Tokenizer.from_pretrained(args.model, device)
    args.output.mkdir(parents=True, exist_ok=True)
    scores, pairs = [], []
    items = list(_expand(args.inputs, model.in_channels, model.image_size))
    with torch.no_grad():
        for name, x in tqdm(items, desc="reconstruct", disable=len(items) < 20):
            recon = model(x.to(device)).reconstruction.clamp(0, 1).cpu()
            scores.append(float(psnr(recon, x)))
            pair = side_by_side(x, recon)[0]
            save_png(pair, args.output / f"{name}.png")
            if not pairs or pair.shape == pairs[0].shape:  # the grid shows pairs of one shape
                pairs.append(pair)
    chosen = [pairs[i] for i in evenly_spaced(len(pairs), GRID_MAX).tolist()]
    save_png(grid(torch.stack(chosen), cols=8), args.output / "grid.png", upscale=2 if chosen[0].shape[-1] < 128 else 1)
    mean = sum(scores) / len(scores)
    print(f"{len(scores)} images: mean PSNR {mean:.2f} dB; written to {args.output}")
    return 0
