"""`libcem train [STAGE]`: train a model into a run folder (resumable).

Stages: `tokenizer`, `prior` (on a trained tokenizer), and `all` (the default): the tokenizer into
OUT/tokenizer, then the prior on it into OUT/prior. With `all`, a setting applies to both stages
unless prefixed: --set tokenizer.train.steps=500 --set prior.model.depth=4.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from libcem.commands.common import add_config_args, shortcut_overrides
from libcem.errors import LibcemError

STAGES = {
    "all": "the tokenizer into OUT/tokenizer, then the prior on it into OUT/prior (the default)",
    "tokenizer": "the EM-codebook VQ autoencoder (images <-> grids of codes)",
    "prior": "the text-conditioned latent diffusion prior on a trained --tokenizer",
}


def register(sub: argparse._SubParsersAction) -> None:
    from libcem.generative.data.registry import data_source, source_help
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
    p.add_argument("--data", type=data_source,
                   help="data source (default fractals; for prior: the tokenizer's): " + source_help()
                   + "; a folder's path alone is taken as folder:PATH")
    p.add_argument("-o", "--out", required=True, type=Path, help="run folder")
    p.add_argument("--tokenizer", type=Path,
                   help="prior only: the trained tokenizer (its run or model folder, or a two-stage run or export: their tokenizer); copied into OUT/tokenizer")
    p.add_argument("--text-encoder", choices=list(ENCODERS),
                   help="prior: " + "; ".join(f"{k}: {v.help}" for k, v in ENCODERS.items())
                   + " (default minilm when installed, else label)")
    p.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="stop with a checkpoint once this many minutes have passed (e.g. before a Kaggle session "
                   "ends); the same command with --resume continues")
    p.add_argument("--prompts", nargs="+", metavar="PROMPT",
                   help='prior: the prompts of the snapshot grids, e.g. --prompts "a red fern fractal" "a blue '
                   'spiral fractal" (default: the first 8 training captions; config: snapshot.prompts)')
    p.add_argument("--preset", choices=list(PRESETS), metavar="NAME",
                   help="start from a named preset: " + ", ".join(PRESETS) + " (details: libcem presets); "
                   "--set changes it")
    add_config_args(p)
    p.set_defaults(func=run)


def deadline(args: argparse.Namespace) -> float | None:
    """The time.monotonic() value at which --time-limit ends."""
    if getattr(args, "time_limit", None) is None:
        return None
    if args.time_limit <= 0:
        raise LibcemError("--time-limit must be a positive number of minutes")
    return time.monotonic() + 60 * args.time_limit


def check_resume_config(args: argparse.Namespace, runs: list[Path]) -> None:
    from libcem.generative.runs import StageRun

    if args.resume and args.config and any(StageRun(r).exists() for r in runs):
        raise LibcemError("--resume takes the run's own config.toml; pass changes with --set, not --config")


def print_expected_time(preset: str) -> None:
    import torch

    from libcem.generative.presets import expected_time

    line = expected_time(preset, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    if line:
        print(line, flush=True)


def report(outcome) -> bool:
    """Print a stage's outcome (main process only); True when it finished."""
    if outcome.main_process:
        print(outcome.report())
    return outcome.finished


def run(args: argparse.Namespace) -> int:
    from libcem.config import read_toml, stage_base
    from libcem.generative.presets import get_preset
    from libcem.generative.runs import TwoStageRun
    from libcem.generative.training import stages

    if args.preset and args.config:
        raise LibcemError("use --preset or --config, not both (change a preset with --set)")
    overrides = shortcut_overrides(args)
    if args.text_encoder and args.stage != "tokenizer":  # a setting of the prior stage only
        overrides.append(("prior." if args.stage == "all" else "") + f'text.encoder="{args.text_encoder}"')
    if args.prompts:
        if args.stage == "tokenizer":
            raise LibcemError("--prompts sets the prior's snapshot prompts: use it with 'libcem train' or 'libcem train prior'")
        overrides.append(("prior." if args.stage == "all" else "") + f"snapshot.prompts={json.dumps(args.prompts)}")
    common = dict(resume=args.resume, deadline=deadline(args), progress=not args.quiet)
    # a preset, and a --config file of `libcem train` (all), have shared tables plus [tokenizer.*] /
    # [prior.*] ones; a --config file of one stage is that stage's own
    two_stage = get_preset(args.preset).config if args.preset else None
    if args.preset and args.stage == "all" and not args.quiet:
        print_expected_time(args.preset)
    if args.stage != "all":
        check_resume_config(args, [args.out])
        if two_stage is not None:
            base = stage_base(two_stage, args.stage)
        else:
            base = read_toml(args.config) if args.config else None
        if args.stage == "tokenizer":
            report(stages.train_tokenizer(args.out, base, overrides, **common))
        else:
            report(stages.train_prior(args.out, args.tokenizer, base, overrides, **common))
        return 0
    if args.tokenizer:
        raise LibcemError("--tokenizer is for 'libcem train prior'; 'libcem train' trains its own tokenizer")
    run_dir = TwoStageRun(args.out)
    check_resume_config(args, [run_dir.tokenizer.path, run_dir.prior.path])
    if two_stage is None and args.config:
        two_stage = read_toml(args.config)
    if report(stages.train_two_stage(args.out, two_stage, overrides, **common)):
        print(f"both stages trained; sample with: libcem sample --model {args.out} \"PROMPT\" -n 16 --output grid.png")
    return 0
