"""`libcem kit PLATFORM -o DIR`: write a ready notebook or script for Colab, Kaggle or Vast.ai."""

from __future__ import annotations

import argparse
from pathlib import Path

NEXT_STEP = {
    "colab": "open it in Colab (File > Upload notebook), choose a GPU runtime, then Runtime > Run all",
    "kaggle": "import it on Kaggle (File > Import notebook), turn on the GPU and internet in Settings, then Run all",
    "vast": "copy it to the instance (scp), then: bash {name}   (again after any disconnect)",
}


def register(sub: argparse._SubParsersAction) -> None:
    from libcem.generative.presets import PRESETS
    from libcem.platforms import KITS

    p = sub.add_parser(
        "kit",
        help="write a ready Colab/Kaggle notebook or Vast.ai script that trains and survives disconnects",
        description="Write a kit that installs libcem, checks the GPU, puts the run folder on storage that "
        "outlives the session, trains a preset with --resume (run it again after a disconnect and it "
        "continues), shows progress, loss plots and sample grids, and lists the files to keep. "
        "Platforms: " + "; ".join(f"{k}: {v[1]}" for k, v in KITS.items()) + ". See docs/platforms.md.",
    )
    p.add_argument("platform", choices=list(KITS), help="where it runs")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="folder to write the kit into")
    p.add_argument("--preset", default="auto", choices=["auto", *PRESETS], metavar="NAME",
                   help="the preset it trains: " + ", ".join(PRESETS) + " (libcem presets); auto (default): "
                   "chosen from the GPU it finds")
    p.add_argument("--run-name", default="libcem-run", help="the run folder's name on the platform's storage")
    p.add_argument("--install", default=None, metavar="PIP_SPEC",
                   help="what the kit pip-installs when libcem is missing (default: the git repository and "
                   "commit or the URL this libcem was installed from, else libcem from PyPI; e.g. "
                   "git+https://github.com/OWNER/libcem or a wheel's URL)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from libcem.platforms import PYPI_NAME, default_install, write_kit

    install = args.install or default_install()
    path = write_kit(args.platform, args.output, preset=args.preset, run_name=args.run_name, install=install)
    print(f"wrote {path}")
    print(f"it installs libcem with: pip install {install}")
    if install == PYPI_NAME and not args.install:
        print("  (this libcem was not installed from a git repository or a URL; if PyPI does not have the "
              "version you want, pass --install git+https://github.com/OWNER/libcem or a wheel's URL)")
    print("next: " + NEXT_STEP[args.platform].format(name=path.name))
    return 0
