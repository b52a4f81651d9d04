"""Arguments and helpers that several commands share."""

from __future__ import annotations

import argparse
import json


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="TOML", help="a TOML config file (sections data, model, optim, train)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set optim.lr=2e-4 --set train.steps=500 (repeatable)",
    )
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --out (starts fresh if there is none)")
    p.add_argument("--precision", choices=("no", "bf16", "fp16"),
                   help="mixed precision (fp16 needs a GPU); default from the config: no")
    p.add_argument("--steps", type=int, help="shortcut for --set train.steps=N")
    p.add_argument("--seed", type=int, help="shortcut for --set train.seed=N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--report-to", choices=("tensorboard", "wandb"),
                   help="also log metrics and snapshot grids to TensorBoard (RUN/logs) or Weights & Biases, "
                   "through Accelerate (shortcut for --set train.report_to=NAME)")


def shortcut_overrides(args: argparse.Namespace) -> list[str]:
    """--data, --precision, --steps and --seed as dotted overrides, before the explicit --set ones."""
    out = []
    if getattr(args, "data", None):
        out.append(f"data.source={json.dumps(args.data)}")  # a TOML string, a Windows path's backslashes too
    if args.precision:
        out.append(f'train.precision="{args.precision}"')
    if args.steps is not None:
        out.append(f"train.steps={args.steps}")
    if args.seed is not None:
        out.append(f"train.seed={args.seed}")
    if getattr(args, "report_to", None):
        out.append(f'train.report_to="{args.report_to}"')
    return out + list(args.overrides)


def add_guidance_interval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LO", "HI"),
                   help="apply guidance only at noise levels LO..HI (0 = data, 1 = pure noise; Kynkaanniemi et al. "
                   "2024), the conditional prediction alone elsewhere (default: the prior's config, e.g. 0 0.75 "
                   "for the cpu-cifar10 preset; 0 1 = everywhere)")


def with_guidance_interval(pipe, args: argparse.Namespace):
    """`pipe` with --guidance-interval applied to its sampling settings (checked), if given."""
    import dataclasses

    if args.guidance_interval is not None:
        pipe.diffusion = dataclasses.replace(pipe.diffusion, guidance_interval=tuple(args.guidance_interval))
    return pipe
