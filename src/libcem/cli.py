"""The `libcem` command line: a few sub-commands, each defined in `libcem.commands.<name>`.

Every command module has `register(subparsers)`, which adds its parser and sets `func`.
Heavy imports (torch, data) happen inside the commands, so `libcem --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from libcem.errors import LibcemError

COMMAND_MODULES = (
    "libcem.commands.train",
    "libcem.commands.reconstruct",
    "libcem.commands.denoise",
    "libcem.commands.sample",
    "libcem.commands.eval",
    "libcem.commands.presets",
    "libcem.commands.kit",
    "libcem.commands.export",
    "libcem.commands.push",
    "libcem.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and each sub-command's own parser by name."""
    parser = argparse.ArgumentParser(
        prog="libcem",
        description="libcem: patch-graph EM denoising, an EM-codebook VQ tokenizer and "
        "text-to-image latent diffusion, on CPU or GPU.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser, sub.choices


def main(argv: list[str] | None = None) -> int:
    parser, commands = _build()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command's own parser, with its usage, not the top level's
        name = getattr(args, "command", None)
        commands.get(name, parser).error(f"unrecognized arguments: {' '.join(extra)} "
                                         f"(see libcem {name + ' ' if name else ''}--help)")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LibcemError as err:
        print(f"libcem: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine refused (a full disk, a permission): say which file and why
        where = f"{err.filename}: " if err.filename else ""
        print(f"libcem: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("libcem: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
