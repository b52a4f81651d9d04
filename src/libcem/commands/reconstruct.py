"""`libcem reconstruct`: run images through a trained tokenizer and write input | output pairs."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from libcem.errors import LibcemError

GRID_MAX = 64


def register(sub: argparse._SubParsersAction) -> None:
    from libcem.generative.evaluation.inception import RESIZES

    p = sub.add_parser(
        "reconstruct",
        help="encode and decode images with a trained tokenizer; prints the mean PSNR",
        description="Writes one side-by-side PNG (input | reconstruction) per image into --output, "
        "plus grid.png, and prints the mean PSNR. INPUT is an image file, a folder of images, or a "
        "data source name (fractals, digits, ...: its held-out split).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, or data source names")
    p.add_argument("--model", required=True, type=Path,
                   help="the tokenizer: its run or model folder, or a two-stage run or export (their tokenizer)")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for the PNGs")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="N images spread evenly over the inputs (held-out splits may be sorted by class)")
    p.add_argument("--fid", action="store_true",
                   help="also print rFID: the Inception FID of the reconstructions against the inputs (needs "
                   "pip install 'libcem[fid]'; at least 2 images, thousands for a stable figure; docs/prior.md)")
    p.add_argument("--fid-resize", choices=RESIZES, default="bilinear",
                   help="how images are resized to Inception's 299 px (see libcem eval --help)")
    p.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    p.set_defaults(func=run)


def _expand(inputs: list[str], channels: int, size: int, trained: dict | None = None, where: Path | None = None):
    """Yield (name, (1, C, H, W) float image) for every input. A data source is its held-out split:
    the one the tokenizer was trained without when it is the data of `trained` (its record, read from `where`)."""
    from libcem.commands.eval import trained_data
    from libcem.generative.data import SOURCES, DataConfig, load_data
    from libcem.generative.data.folder import IMAGE_SUFFIXES, load_image

    for item in inputs:
        path = Path(item)
        if item in SOURCES or item.startswith("folder:"):
            cfg = DataConfig(source=item, image_size=size, channels=channels)
            if trained and trained.get("data") == item:  # the training run's split (its test_size, seed)
                cfg = dataclasses.replace(trained_data(trained, where), image_size=size, channels=channels)
            test = load_data(cfg).test
            for i in range(len(test)):
                yield f"{item.replace(':', '_').replace('/', '_')}_{i:04d}", test.floats([i])
        elif path.is_dir():  # a file that is not a readable image is skipped and counted, as in training
            files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            arrays = [(f, load_image(f, channels)) for f in files]
            readable = [(f, a) for f, a in arrays if a is not None]
            if not readable:
                raise LibcemError(f"no readable images in folder {path}")
            if len(readable) < len(files):
                skipped = [f.name for f, a in arrays if a is None]
                print(f"{path}: skipped {len(skipped)} file(s) that are not readable images: "
                      f"{', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}", file=sys.stderr)
            for f, arr in readable:
                yield f.stem, torch.from_numpy(arr)[None].float() / 255
        elif path.is_file():
            arr = load_image(path, channels)
            if arr is None:
                raise LibcemError(f"{path} is not a readable image")
            yield path.stem, torch.from_numpy(arr)[None].float() / 255
        else:
            raise LibcemError(f"'{item}' is neither an image, a folder, nor a data source")


def run(args: argparse.Namespace) -> int:
    from libcem.device import resolve_device
    from libcem.generative.evaluation.report import reconstruction_fid
    from libcem.files import read_record
    from libcem.generative.runs import resolve_tokenizer_dir
    from libcem.generative.models.tokenizer import Tokenizer
    from libcem.generative.data.base import evenly_spaced
    from libcem.imaging import grid, psnr, save_png, side_by_side

    if args.limit is not None and args.limit < 1:
        raise LibcemError("--limit must be >= 1")
    if args.fid:
        from libcem.generative.evaluation.inception import network_path

        network_path()  # a missing network is one clear error before any work
    device = resolve_device(args.device)
    model_dir = resolve_tokenizer_dir(args.model)  # a two-stage run or an export: their tokenizer
    model = Tokenizer.from_pretrained(model_dir, device)
    trained = read_record(model_dir)
    args.output.mkdir(parents=True, exist_ok=True)
    scores, pairs, inputs, outputs = [], [], [], []
    items = list(_expand(args.inputs, model.in_channels, model.image_size, trained, model_dir))
    if args.limit:
        items = [items[i] for i in evenly_spaced(len(items), args.limit).tolist()]
    with torch.no_grad():
        for name, x in tqdm(items, desc="reconstruct", disable=len(items) < 20):
            recon = model(x.to(device)).reconstruction.clamp(0, 1).cpu()
            scores.append(float(psnr(recon, x)))
            if args.fid:
                inputs.append(x)
                outputs.append(recon)
            pair = side_by_side(x, recon)[0]
            save_png(pair, args.output / f"{name}.png")
            if not pairs or pair.shape == pairs[0].shape:  # the grid shows pairs of one shape
                pairs.append(pair)
    chosen = [pairs[i] for i in evenly_spaced(len(pairs), GRID_MAX).tolist()]
    save_png(grid(torch.stack(chosen), cols=8), args.output / "grid.png", upscale=2 if chosen[0].shape[-1] < 128 else 1)
    mean = sum(scores) / len(scores)
    print(f"{len(scores)} images: mean PSNR {mean:.2f} dB; written to {args.output}")
    result = {"images": len(scores), "psnr": mean}
    if args.fid:
        if len({x.shape for x in inputs}) > 1:
            raise LibcemError("--fid needs images of one size (a data source or a folder of equal-sized images)")
        result["rfid"] = reconstruction_fid(torch.cat(inputs), torch.cat(outputs), device, args.fid_resize)
        print(f"rFID (Inception FID of the {len(scores)} reconstructions against their inputs): {result['rfid']:.2f}")
    if args.json:
        from libcem.files import atomic_write_json

        atomic_write_json(args.json, result)
    return 0

