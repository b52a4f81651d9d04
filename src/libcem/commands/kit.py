"""`libcem kit PLATFORM -o DIR`: write a ready notebook or script for Colab, Kaggle or Vast.ai."""

from __future__ import annotations

import argparse
from pathlib import Path

NEXT_STEP = {
    "colab": "upload {wheel} into MyDrive/libcem on your Google Drive; open {name} in Colab (File > Upload "
             "notebook), choose a GPU runtime, then Runtime > Run all",
    "kaggle": "upload {wheel} as a Kaggle dataset; import {name} on Kaggle (File > Import notebook), add the "
              "dataset (Add Input), turn on the GPU and internet in Settings, then Run all",
    "vast": "copy both files into one folder of the instance (scp), then: bash {name}   (again after any disconnect)",
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
                   help="what the kit pip-installs when the wheel written beside it was not uploaded (default: "
                   "the git repository and commit or the URL this libcem was installed from, else nothing: "
                   "the kit then asks for the wheel); e.g. git+https://github.com/OWNER/libcem")
    p.add_argument("--no-wheel", action="store_true",
                   help="do not write the wheel of this libcem beside the kit (it then installs --install)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from libcem.platforms import WHERE_TO_UPLOAD, default_install, pip_spec, write_kit

    install = args.install or default_install()
    paths = write_kit(args.platform, args.output, wheel=not args.no_wheel, preset=args.preset,
                      run_name=args.run_name, install=install)
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size / 2**10:.0f} KiB)")
    if len(paths) > 1:
        print(f"it installs libcem from {paths[1].name} when you put it in {WHERE_TO_UPLOAD[args.platform]}")
    print(f"without the wheel it installs: pip install '{pip_spec(install)}'" if install else
          "without the wheel it stops and says where to upload it (--install git+https://... gives it a fallback)")
    if len(paths) > 1:
        print("next: " + NEXT_STEP[args.platform].format(name=paths[0].name, wheel=paths[1].name))
    return 0
