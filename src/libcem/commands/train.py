"""`libcem train STAGE`: train a model into a run folder (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from libcem.commands.common import add_config_args, shortcut_overrides
from libcem.errors import LibcemError

STAGES = {"tokenizer": "the EM-codebook VQ autoencoder (images <-> grids of codes)"}


def register(sub: argparse._SubParsersAction) -> None:
    from libcem.data.registry import source_help

    p = sub.add_parser(
        "train",
        help="train a model (resumable run folder with metrics, plots and checkpoints)",
        description="Train a libcem model. The run folder gets config.toml, metrics.jsonl, loss.png, "
        "snapshot grids in samples/ and safetensors checkpoints in checkpoints/. "
        "Uses the GPU when there is one.",
    )
    p.add_argument("stage", nargs="?", default="tokenizer", choices=sorted(STAGES),
                   help="what to train: " + "; ".join(f"{k}: {v}" for k, v in STAGES.items()))
    p.add_argument("--data", help="data source (default fractals): " + source_help())
    p.add_argument("--out", required=True, type=Path, help="run folder")
    add_config_args(p)
    p.set_defaults(func=run)


def resolve_config(cls, args: argparse.Namespace):
    """Defaults <- the run's saved config.toml (on --resume) or --config <- shortcuts <- --set."""
    from libcem.config import build_config, read_toml

    base = {}
    saved = args.out / "config.toml"
    if args.resume and saved.is_file():
        if args.config:
            raise LibcemError("--resume takes the run's own config.toml; pass changes with --set, not --config")
        base = read_toml(saved)
    elif args.config:
        base = read_toml(args.config)
    return build_config(cls, base, shortcut_overrides(args))


def run(args: argparse.Namespace) -> int:
    from libcem.data import load_data
    from libcem.training.tokenizer import TokenizerRunConfig, TokenizerTask, evaluate
    from libcem.training.trainer import Trainer

    cfg = resolve_config(TokenizerRunConfig, args)
    splits = load_data(cfg.data)
    task = TokenizerTask(cfg, splits)
    trainer = Trainer(args.out, cfg, task, progress=not args.quiet)
    result = trainer.fit(resume=args.resume)
    if trainer.acc.is_main_process:
        model = trainer.ema.model if trainer.ema else trainer.acc.unwrap_model(trainer.model)
        scores = evaluate(model, splits.test)
        print(
            f"step {result.step}: held-out PSNR {scores['psnr']:.2f} dB on {scores['images']} images, "
            f"{scores['codes_used']:.0%} of codes used; model: {result.checkpoint}"
        )
    return 0
