"""`libcem eval`: prompt adherence, feature FID and (--fid) Inception FID of a trained prior on a data source."""

from __future__ import annotations

import argparse
from pathlib import Path

from libcem.commands.common import add_guidance_interval, with_guidance_interval
from libcem.errors import LibcemError


def register(sub: argparse._SubParsersAction) -> None:
    from libcem.generative.data.registry import data_source
    from libcem.generative.diffusion.samplers import SAMPLERS, sampler_help
    from libcem.generative.evaluation.inception import RESIZES

    p = sub.add_parser(
        "eval",
        help="prompt adherence and feature FID of a trained prior (with the real-data reference)",
        description="Generates one image per held-out image of the data source, from its caption, and reports for "
        "each label (digits: digit; fractals: family and color): adherence = accuracy of a small classifier "
        "(trained once on the real training split and cached) on the generated images, and the Frechet distance "
        "in that classifier's penultimate features to the held-out images; next to the same numbers for real "
        "images as the reference. --fid adds the Inception FID of the generated images against the held-out "
        "split, beside that of as many real training images (offline: the TorchScript Inception network of the "
        "fid extra, or $LIBCEM_FID_NETWORK).",
    )
    p.add_argument("--model", required=True, type=Path, help="a two-stage run folder, a prior run folder or a prior checkpoint")
    p.add_argument("--data", type=data_source,
                   help="data source (default: the one the prior was trained on; a folder's path: folder:PATH)")
    p.add_argument("--labels", nargs="+", help="labels to evaluate (default: digits: digit; fractals: family color)")
    p.add_argument("--limit", type=int, help="evaluate on N held-out images spread evenly over the split (faster, noisier)")
    p.add_argument("--per-class", type=int, default=0, metavar="K",
                   help="generate K images per distinct held-out caption (a balanced set for class captions) "
                   "instead of one per held-out image")
    p.add_argument("--fid", action="store_true",
                   help="also the Inception FID (2048 pool features) vs the held-out split, with the real-data reference")
    p.add_argument("--fid-per-class", action="store_true",
                   help="also the Inception FID per class (distinct caption), for sources whose captions name a class")
    p.add_argument("--fid-resize", choices=RESIZES, default="bilinear",
                   help="how images are resized to Inception's 299 px: bilinear (the StyleGAN and torchmetrics "
                   "convention, the default) or pil-bicubic (clean-fid's clean mode); docs/prior.md")
    p.add_argument("--steps", type=int, help="sampling steps (default: the prior's config, 20)")
    p.add_argument("--guidance", type=float, help="guidance scale (default: the prior's config, 2)")
    add_guidance_interval(p)
    p.add_argument("--sampler", choices=list(SAMPLERS), help=sampler_help() + " (default: the prior's config: euler for a flow prior, dpm++ for ddpm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--classifier-steps", type=int, default=500,
                   help="training steps of each label's classifier (trained once per setting, then cached)")
    p.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    p.add_argument("--grid", type=Path, help="also write 64 generated images, spread over all prompts, as a grid PNG")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from libcem.files import atomic_write_json
    from libcem.generative.data import load_data
    from libcem.generative.evaluation import eval_labels, evaluate_prior, format_report
    from libcem.generative.pipeline import Pipeline
    from libcem.imaging import grid, save_png

    if args.limit is not None and args.limit < 2:
        raise LibcemError("--limit must be >= 2 (a Frechet distance needs two images)")
    if args.classifier_steps < 1 or args.batch_size < 1:
        raise LibcemError("--classifier-steps and --batch-size must be >= 1")
    if args.seed < 0:
        raise LibcemError("--seed must be >= 0")
    if args.per_class < 0 or args.per_class == 1:
        raise LibcemError("--per-class must be >= 2 (a Frechet distance needs two images)")
    pipe = with_guidance_interval(Pipeline.from_pretrained(args.model, args.device), args)
    data_cfg = trained_data(pipe.record, args.model)
    if args.data and args.data != data_cfg.source:
        data_cfg = dataclasses.replace(data_cfg, source=args.data)  # size and channels stay the tokenizer's
    splits = load_data(data_cfg)
    unlabelled = args.fid and not args.labels and not splits.test.label_names  # Inception FID needs no labels
    labels = [] if unlabelled else eval_labels(data_cfg.source, splits.test, args.labels)
    result = evaluate_prior(pipe, data_cfg, splits, labels, args.steps, args.guidance, args.seed, args.sampler,
                            args.limit, args.batch_size, args.classifier_steps, progress=not args.quiet,
                            per_class=args.per_class, fid=args.fid, fid_per_class=args.fid_per_class,
                            fid_resize=args.fid_resize)
    print(format_report(result))
    if args.grid:
        from libcem.generative.data.base import evenly_spaced

        samples = result["samples"]  # prompt-major: spread the 64 over every prompt
        save_png(grid(samples[evenly_spaced(len(samples), 64)], cols=8), args.grid, upscale=2)
    if args.json:
        atomic_write_json(args.json, {k: v for k, v in result.items() if k != "samples"})
    return 0


def trained_data(record: dict, where: Path):
    """The data config the prior was trained on, from its config.json, minus `cache_dir`: a model
    folder never chooses where libcem writes (the classifier cache stays in $LIBCEM_CACHE)."""
    from libcem.config import ConfigError, from_dict
    from libcem.generative.data import DataConfig

    data = record.get("data_config", {"source": record.get("data", "fractals")})
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "cache_dir"}
    try:
        return from_dict(DataConfig, data, prefix="data_config.")
    except ConfigError as err:
        raise LibcemError(f"{where}: {err}") from None

