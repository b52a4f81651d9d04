"""`libcem train [STAGE]`: train a model into a run folder (resumable).

Stages: `tokenizer`, `prior` (on a trained tokenizer), and `all` (the default): the tokenizer into
OUT/tokenizer, then the prior on it into OUT/prior. With `all`, a setting applies to both stages
unless prefixed: --set tokenizer.train.steps=500 --set prior.model.depth=4.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from libcem.commands.common import add_config_args, shortcut_overrides
from libcem.errors import LibcemError

STAGES = {
    "all": "the tokenizer into OUT/tokenizer, then the prior on it into OUT/prior (the default)",
    "tokenizer": "the EM-codebook VQ autoencoder (images <-> grids of codes)",
    "prior": "the text-conditioned latent diffusion prior on a trained --tokenizer",
}
STAGE_PREFIXES = ("tokenizer", "prior")


def register(sub: argparse._SubParsersAction) -> None:
    from libcem.generative.data.registry import source_help
    from libcem.generative.presets import PRESETS
    from libcem.generative.text import ENCODERS

    p = sub.add_parser(
        "train",
        help="train a model (resumable run folder with metrics, plots and checkpoints)",
        description="Train a libcem model. The run folder gets config.toml, metrics.jsonl, loss.png, "
        "snapshot grids in samples/ and safetensors checkpoints in checkpoints/. "
        "Uses the GPU when there is one. Without a STAGE both stages are trained: OUT/tokenizer, then "
        "OUT/prior; then a --set applies to both unless prefixed with tokenizer. or prior. "
        "(e.g. --set prior.train.steps=2000).",
    )
    p.add_argument("stage", nargs="?", default="all", choices=list(STAGES),
                   help="what to train: " + "; ".join(f"{k}: {v}" for k, v in STAGES.items()))
    p.add_argument("--data", help="data source (default fractals; for prior: the tokenizer's): " + source_help())
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--tokenizer", type=Path,
                   help="prior only: the trained tokenizer (its run folder or a model folder); copied into OUT/tokenizer")
    p.add_argument("--text-encoder", choices=list(ENCODERS),
                   help="prior: " + "; ".join(f"{k}: {v.help}" for k, v in ENCODERS.items())
                   + " (default minilm when installed, else label)")
    p.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="stop with a checkpoint once this many minutes have passed (e.g. before a Kaggle session "
                   "ends); the same command with --resume continues")
    p.add_argument("--preset", choices=list(PRESETS), metavar="NAME",
                   help="start from a named preset: " + ", ".join(PRESETS) + " (details: libcem presets); "
                   "--set changes it")
    add_config_args(p)
    p.set_defaults(func=run)


def split_overrides(overrides: list[str], stage: str) -> list[str]:
    """The overrides for `stage` of a two-stage run: unprefixed ones plus those prefixed 'stage.'."""
    out = []
    for text in overrides:
        head = text.split(".", 1)[0].strip()
        if head == stage:
            out.append(text.split(".", 1)[1])
        elif head not in STAGE_PREFIXES:
            out.append(text)
    return out


def resolve_config(cls, args: argparse.Namespace, out: Path | None = None, overrides: list[str] | None = None,
                   config_base: dict | None = None):
    """Defaults <- the run's saved config.toml (on --resume) or --config <- shortcuts <- --set."""
    from libcem.config import build_config, read_toml

    out = args.out if out is None else out
    base = {}
    saved = out / "config.toml"
    if args.resume and saved.is_file():
        if args.config:
            raise LibcemError("--resume takes the run's own config.toml; pass changes with --set, not --config")
        base = read_toml(saved)
    elif config_base is not None:
        base = config_base
    elif args.config:
        base = read_toml(args.config)
    return build_config(cls, base, shortcut_overrides(args) if overrides is None else overrides)


def deadline(args: argparse.Namespace) -> float | None:
    """The time.monotonic() value at which --time-limit ends (fixed on first use, shared by both stages)."""
    if getattr(args, "time_limit", None) is None:
        return None
    if args.time_limit <= 0:
        raise LibcemError("--time-limit must be a positive number of minutes")
    if not hasattr(args, "_deadline"):
        args._deadline = time.monotonic() + 60 * args.time_limit
    return args._deadline


def stopped_early(result, steps: int, stage: str, main: bool) -> bool:
    if result.finished:
        return False
    if main:
        print(f"{stage}: stopped at the time limit after step {result.step} of {steps}, with a checkpoint; "
              "run the same command with --resume to continue")
    return True


def train_tokenizer(args: argparse.Namespace, out: Path, overrides: list[str] | None = None,
                    config_base: dict | None = None) -> bool:
    """Train (or resume) the tokenizer; False when it stopped at the time limit."""
    from libcem.generative.data import load_data
    from libcem.generative.training.tokenizer import TokenizerRunConfig, TokenizerTask, evaluate
    from libcem.generative.training.trainer import Trainer

    cfg = resolve_config(TokenizerRunConfig, args, out, overrides, config_base)
    splits = load_data(cfg.data)
    task = TokenizerTask(cfg, splits)
    trainer = Trainer(out, cfg, task, progress=not args.quiet)
    result = trainer.fit(resume=args.resume, deadline=deadline(args))
    if stopped_early(result, cfg.train.steps, "tokenizer", trainer.acc.is_main_process):
        return False
    if trainer.acc.is_main_process:
        model = trainer.ema.model if trainer.ema else trainer.acc.unwrap_model(trainer.model)
        scores = evaluate(model, splits.test)
        print(
            f"step {result.step}: held-out PSNR {scores['psnr']:.2f} dB on {scores['images']} images, "
            f"{scores['codes_used']:.0%} of codes used; model: {result.checkpoint}"
        )
    return True


def train_prior(args: argparse.Namespace, out: Path, tokenizer: Path | None, overrides: list[str] | None = None,
                config_base: dict | None = None) -> bool:
    """Train (or resume) the prior; False when it stopped at the time limit."""
    from libcem.files import read_record
    from libcem.config import replace
    from libcem.generative.data import load_data
    from libcem.device import default_device
    from libcem.generative.models.tokenizer import Tokenizer
    from libcem.generative.text import build_encoder, default_encoder
    from libcem.generative.training.prior import PriorRunConfig, PriorTask, attach_tokenizer
    from libcem.generative.training.trainer import Trainer

    overrides = shortcut_overrides(args) if overrides is None else list(overrides)
    if args.text_encoder:
        overrides.append(f'text.encoder="{args.text_encoder}"')
    tok_dir = attach_tokenizer(out, tokenizer, args.resume)
    tok = Tokenizer.from_pretrained(tok_dir, default_device())  # encodes the training images once
    if not args.data and not (args.resume and (out / "config.toml").is_file()):
        source = read_record(tok_dir).get("data")  # by default, the data the tokenizer was trained on
        overrides = ([f'data.source="{source}"'] if source else []) + overrides
    cfg = resolve_config(PriorRunConfig, args, out, overrides, config_base)
    cfg = replace(cfg, latent={"tokenizer": str(tokenizer or cfg.latent.tokenizer)},
                  data={"image_size": cfg.data.image_size or tok.image_size, "channels": cfg.data.channels or tok.in_channels},
                  text={"encoder": cfg.text.encoder or default_encoder()})
    if (cfg.data.image_size, cfg.data.channels) != (tok.image_size, tok.in_channels):
        raise LibcemError(
            f"data.image_size={cfg.data.image_size}, data.channels={cfg.data.channels} differ from the tokenizer's "
            f"{tok.image_size} and {tok.in_channels}: leave them at 0 for the prior"
        )
    splits = load_data(cfg.data)
    encoder = build_encoder(cfg.text.encoder, sorted(set(splits.train.captions)))
    task = PriorTask(cfg, splits, tok, encoder, progress=not args.quiet)
    trainer = Trainer(out, cfg, task, progress=not args.quiet)
    result = trainer.fit(resume=args.resume, deadline=deadline(args))
    if stopped_early(result, cfg.train.steps, "prior", trainer.acc.is_main_process):
        return False
    if trainer.acc.is_main_process:
        print(
            f"step {result.step}: prior trained on {len(splits.train)} images with the '{encoder.name}' text encoder; "
            f"model: {result.checkpoint}"
        )
    return True


def run(args: argparse.Namespace) -> int:
    from libcem.config import read_toml, stage_base
    from libcem.generative.presets import get_preset

    if args.preset and args.config:
        raise LibcemError("use --preset or --config, not both (change a preset with --set)")
    # a preset, and a --config file of `libcem train` (all), have shared tables plus [tokenizer.*] /
    # [prior.*] ones; a --config file of one stage is that stage's own (read by resolve_config)
    two_stage = get_preset(args.preset).config if args.preset else None
    if args.stage != "all":
        base = None if two_stage is None else stage_base(two_stage, args.stage)
        if args.stage == "tokenizer":
            train_tokenizer(args, args.out, config_base=base)
        else:
            train_prior(args, args.out, args.tokenizer, config_base=base)
        return 0
    if args.tokenizer:
        raise LibcemError("--tokenizer is for 'libcem train prior'; 'libcem train' trains its own tokenizer")
    if two_stage is None and args.config:
        two_stage = read_toml(args.config)
    bases = {s: None if two_stage is None else stage_base(two_stage, s) for s in STAGE_PREFIXES}
    overrides = shortcut_overrides(args)
    tok_run = args.out / "tokenizer"
    if not train_tokenizer(args, tok_run, split_overrides(overrides, "tokenizer"), bases["tokenizer"]):
        return 0
    if not train_prior(args, args.out / "prior", tok_run, split_overrides(overrides, "prior"), bases["prior"]):
        return 0
    print(f"both stages trained; sample with: libcem sample --model {args.out} \"PROMPT\" -n 16 --output grid.png")
    return 0
