"""`libcem export RUN OUT`: a small self-contained folder to share: inference weights, configs, a model card."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained model as a small folder to share (weights, configs, model card, samples)",
        description="Write the prior's and tokenizer's inference (EMA) weights and configs, a sample grid and a "
        "model card (README.md: data, training steps and time, the run's last logged metrics) into OUT. "
        "Pipeline.from_pretrained(OUT) and libcem sample --model OUT load it; libcem push uploads it.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a two-stage run folder (libcem train), a prior run or checkpoint")
    p.add_argument("out", type=Path, metavar="OUT", help="the folder to write")
    p.add_argument("--name", help="the model's name in its card (default: the run folder's name)")
    p.set_defaults(func=run)


def folder_size(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def run(args: argparse.Namespace) -> int:
    from libcem.generative.pipeline import Pipeline

    export = Pipeline.from_pretrained(args.run, "cpu").save_pretrained(args.out, args.name)
    print(f"exported {args.run} to {export.path} ({folder_size(export.path):.1f} MiB); model card: {export.card}")
    print(f"load it with Pipeline.from_pretrained({str(export.path)!r}); share it with: libcem push {export.path} USER/NAME")
    return 0
