"""`libcem demo`: a local web page to denoise photos, generate images and watch a run train."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  libcem demo                          the Denoise tab (and any run folder typed into the page)
  libcem demo --model runs/fr          also generate with this run's prior and follow its training
  libcem demo --model runs/fr --share  a public link too (from Colab or a remote machine)

Needs Gradio: pip install 'libcem[demo]'. See docs/demo.md."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="a web page to denoise photos, generate images and watch training (Gradio)",
        description="Start a local web app with three tabs: Denoise (upload a photo, see the estimated noise "
        "level, compare before and after, download the result), Generate (a prompt to a gallery of images with "
        "a trained prior) and Training (a run folder's loss curves and latest snapshot grids, refreshed while "
        "it trains). Prints the address to open.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=Path, metavar="RUN_OR_EXPORT",
                   help="a run folder of libcem train (two-stage or prior) or a prior checkpoint folder, for the "
                   "Generate tab")
    p.add_argument("--run", type=Path, help="the run folder the Training tab follows (default: --model)")
    p.add_argument("--port", type=int, help="port to listen on (default: 7860, or the next free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: the network)")
    p.add_argument("--share", action="store_true",
                   help="also open a public gradio.live link (for Colab or a remote machine); the model and run "
                   "folders are then fixed to --model and --run")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--max-megapixels", type=float, default=None,
                   help="the largest photo the Denoise tab accepts (default 16)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from libcem.errors import LibcemError

    if args.port is not None and not 0 < args.port < 65536:
        raise LibcemError(f"--port must be between 1 and 65535; got {args.port}")
    from libcem.demo.app import build_app, launch
    from libcem.demo.photos import MAX_MEGAPIXELS

    limit = MAX_MEGAPIXELS if args.max_megapixels is None else args.max_megapixels
    if limit <= 0:
        raise LibcemError(f"--max-megapixels must be > 0; got {limit}")
    app = build_app(args.model, args.run, device=args.device, max_megapixels=limit, lock_paths=args.share)
    launch(app, host=args.host, port=args.port, share=args.share)
    return 0
