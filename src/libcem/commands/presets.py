"""`libcem presets [NAME]`: list the training presets, with their measured speed and memory."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "presets",
        help="list the training presets (libcem train --preset NAME)",
        description="List the named training presets: what each trains, what it is sized for, its steps, and "
        "per stage the peak GPU memory and time per 1,000 steps where they were measured (with the device), "
        "else 'not measured'. Figures come from `python -m benchmarks.presets`.",
    )
    from libcem.generative.presets import PRESETS

    p.add_argument("name", nargs="?", choices=list(PRESETS), metavar="NAME",
                   help="show this preset only, with its full config: " + ", ".join(PRESETS))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tomli_w

    from libcem.generative.presets import PRESETS, describe, get_preset, measured

    names = [get_preset(args.name).name] if args.name else list(PRESETS)
    table = measured()
    for i, name in enumerate(names):
        rows = describe(name, table)
        rows.pop("preset")
        print(("" if i == 0 else "\n") + f"{name}: {rows.pop('trains')}")
        for key, value in rows.items():
            print(f"  {key + ':':<11}{value}")
    if args.name:
        print("\nconfig (as for libcem train --config; --set overrides it, --resume keeps the run's own):")
        print(tomli_w.dumps(get_preset(args.name).config))
    else:
        print("\ntrain one: libcem train --preset NAME --out RUN --resume   (details: libcem presets NAME)")
    return 0
