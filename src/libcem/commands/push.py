"""`libcem push RUN_OR_EXPORT USER/NAME`: upload a model to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push",
        help="upload a run or an export to the Hugging Face Hub (then: --model hf:USER/NAME)",
        description="Upload an export (libcem export) to a model repository on the Hugging Face Hub, created "
        "when missing; a run folder is exported first. Log in once with `hf auth login` or set HF_TOKEN. "
        "Anyone can then sample it: libcem sample --model hf:USER/NAME \"PROMPT\".",
    )
    p.add_argument("path", type=Path, metavar="RUN_OR_EXPORT", help="a run folder, or a folder from libcem export")
    p.add_argument("repo_id", metavar="USER/NAME", help="the model repository on the Hub")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--token", help="a Hugging Face token (default: HF_TOKEN or the login's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from libcem.generative.hub import push
    from libcem.generative.pipeline import Pipeline
    from libcem.generative.runs import ExportFolder

    with tempfile.TemporaryDirectory(prefix="libcem-export-") as tmp:
        folder = args.path
        if not ExportFolder(folder).exists():
            name = args.repo_id.split("/")[-1]
            folder = Pipeline.from_pretrained(folder, "cpu").save_pretrained(Path(tmp) / name, name).path
        url = push(folder, args.repo_id, private=args.private, token=args.token)
    print(f"pushed {args.path} to {url}")
    print(f"sample it with: libcem sample --model hf:{args.repo_id} \"PROMPT\" -n 16 --output grid.png")
    return 0
