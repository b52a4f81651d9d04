"""CIFAR-10 benchmark: `python -m benchmarks.cifar10 --run defaults=runs/base --run cpu-cifar10=runs/c10`.

Protocol (docs/prior.md, "CIFAR-10")
- The runs are two-stage `libcem train` runs on the same data, e.g. today's CLI defaults and the
  `cpu-cifar10` preset, both trained on `folder:../shared/data/cifar10/train` with
  `data.caption = "a photo of a {label}"` and `data.test_size = 5000` (a 5,000-image validation
  split held out of the 50,000, the same one for every run).
- Tokenizer: mean PSNR and rFID (Inception FID of the reconstructions against the originals) on the
  `--recon` validation images spread evenly over the split (as `libcem reconstruct --fid` measures them).
- Prior: `libcem eval --fid --fid-per-class --per-class K`: K images for each of the 10 captions
  against the whole validation split, beside the real-data reference (10 K training images against
  the same split); per class likewise (`--no-class-fid`: overall only, which saves the per-class
  real references, as many Inception images again as are generated). Sampling: the prior's own
  defaults unless `--guidance`; `--batch-size` images at once (the images do not depend on it).
- `--sweep G1 G2 ...`: guidance chosen without the validation split: FID of `--sweep-per-class`
  images per caption against `--sweep-reference` seeded *training* images, per guidance
  (`--guidance-interval LO HI`: guided only at those noise levels, in the sweep and the evaluation).
- Inception features of real images are cached, so a second run costs only its own samples; each
  run's figures are kept in OUT/NAME-tokenizer.json and OUT/NAME-eval.json and reused by a later
  invocation (runs can be measured one at a time, then tabled together).
Writes a markdown table to stdout and OUT/cifar10.md (numbers also in OUT/cifar10.json).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from libcem.cli import main as cli_main


def tokenizer_figures(run: Path, n: int) -> dict:
    """Mean PSNR and rFID of the run's tokenizer on the first n images of the prior's validation split."""
    import torch

    from libcem.commands.eval import trained_data
    from libcem.files import read_record
    from libcem.generative.data import load_data
    from libcem.generative.data.base import evenly_spaced
    from libcem.generative.evaluation.report import reconstruction_fid
    from libcem.generative.models.tokenizer import Tokenizer
    from libcem.generative.runs import resolve_model_dir
    from libcem.imaging import psnr

    prior = resolve_model_dir(run / "prior")
    test = load_data(trained_data(read_record(prior), prior)).test
    tok = Tokenizer.from_pretrained(run / "tokenizer").eval()
    x = test.floats(evenly_spaced(len(test), n))  # the split is sorted by class
    with torch.no_grad():
        recon = torch.cat([tok(x[i : i + 250]).reconstruction.clamp(0, 1) for i in range(0, len(x), 250)])
    return {"images": len(x), "psnr": float(np.mean([float(psnr(r[None], o[None])) for r, o in zip(recon, x)])),
            "rfid": reconstruction_fid(x, recon, "cpu")}


def prior_figures(run: Path, name: str, per_class: int, guidance: float | None, out: Path,
                  interval: list[float] | None = None, class_fid: bool = True, batch_size: int = 50,
                  quiet: bool = True) -> dict:
    record = out / f"{name}-eval.json"
    if record.is_file():  # measured by an earlier invocation (delete the file to measure again)
        return json.loads(record.read_text())
    cmd = ["eval", "--model", str(run), "--fid", *(["--fid-per-class"] if class_fid else []),
           "--per-class", str(per_class), "--batch-size", str(batch_size),
           "--json", str(record), "--grid", str(out / f"{name}-grid.png"), *(["--quiet"] if quiet else [])]
    if guidance is not None:
        cmd += ["--guidance", str(guidance)]
    if interval is not None:
        cmd += ["--guidance-interval", *map(str, interval)]
    code = cli_main(cmd)
    if code:
        raise SystemExit(code)
    return json.loads(record.read_text())


def guidance_sweep(run: Path, values: list[float], per_class: int, reference: int, seed: int = 1,
                   interval: list[float] | None = None) -> dict[float, float]:
    """FID against `reference` training images (not the validation split) for each guidance scale
    (within the guidance `interval` of noise levels; default: the prior's own)."""
    from libcem.commands.eval import trained_data
    from libcem.generative.data import load_data
    from libcem.generative.data.downloads import cache_dir
    from libcem.generative.evaluation.fid import frechet_distance
    from libcem.generative.evaluation.inception import cached_features, inception_features
    from libcem.generative.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(run, "cpu")
    splits = load_data(trained_data(pipe.record, run))
    idx = np.sort(np.random.default_rng(seed).choice(len(splits.train), reference, replace=False))
    real = cached_features(splits.train.floats(idx), cache_dir() / "inception")
    prompts = sorted(set(splits.train.captions))
    out = {}
    for g in values:
        fake = pipe(prompts, n=per_class, guidance=g, seed=seed, guidance_interval=interval)
        out[g] = frechet_distance(inception_features(fake), real)
        where = f" in {interval}" if interval else ""
        print(f"{run.name}: guidance {g}{where}: FID vs training slice {out[g]:.2f}", flush=True)
    return out


def table(results: dict) -> str:
    lines = ["| run | tokenizer PSNR (dB) | rFID | FID | real-data FID | ratio | mean per-class FID |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        inc = r["prior"]["inception"]
        per = [c["fid"] for c in inc["per_class"].values()]
        lines.append(f"| {name} | {r['tokenizer']['psnr']:.2f} | {r['tokenizer']['rfid']:.2f} | {inc['fid']:.2f} | "
                     f"{inc['real_fid']:.2f} | {inc['fid'] / inc['real_fid']:.2f}x | "
                     f"{f'{np.mean(per):.2f}' if per else 'not measured'} |")
    if not all(r["prior"]["inception"]["per_class"] for r in results.values()):
        return "\n".join(lines)  # a run measured with --no-class-fid
    first = next(iter(results.values()))["prior"]["inception"]
    lines += ["", "| class | " + " | ".join(results) + " | real data |", "|---|" + "---|" * (len(results) + 1)]
    for c, row in first["per_class"].items():
        cells = [f"{r['prior']['inception']['per_class'][c]['fid']:.1f}" for r in results.values()]
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {row['real_fid']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, metavar="NAME=PATH", help="a two-stage run folder")
    ap.add_argument("--per-class", type=int, default=1000, help="generated images per caption (the issue's protocol: 1000)")
    ap.add_argument("--recon", type=int, default=2000, help="validation images reconstructed for PSNR and rFID")
    ap.add_argument("--guidance", type=float, help="sampling guidance (default: each prior's own)")
    ap.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LO", "HI"),
                    help="noise levels where guidance applies, for the evaluation and the sweep (default: each prior's own)")
    ap.add_argument("--sweep", type=float, nargs="*", default=[], help="guidance scales to compare on training images")
    ap.add_argument("--sweep-per-class", type=int, default=50)
    ap.add_argument("--sweep-reference", type=int, default=2000, help="training images the sweep compares against")
    ap.add_argument("--no-class-fid", action="store_true",
                    help="overall FID only: skip the per-class FIDs, whose real references cost as many "
                         "more Inception images as are generated")
    ap.add_argument("--batch-size", type=int, default=50,
                    help="images sampled at once (the images do not depend on it)")
    ap.add_argument("--progress", action="store_true", help="progress bars of the sampling")
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for item in args.run:
        name, _, path = item.partition("=")
        run = Path(path)
        if args.sweep:
            results.setdefault(name, {})["sweep"] = guidance_sweep(run, args.sweep, args.sweep_per_class,
                                                                  args.sweep_reference, interval=args.guidance_interval)
            continue
        record = args.out / f"{name}-tokenizer.json"
        if not record.is_file():
            record.write_text(json.dumps(tokenizer_figures(run, args.recon)) + "\n")
        results[name] = {"tokenizer": json.loads(record.read_text()),
                         "prior": prior_figures(run, name, args.per_class, args.guidance, args.out,
                                                args.guidance_interval, not args.no_class_fid,
                                                args.batch_size, not args.progress)}
    name = "sweep.json" if args.sweep else "cifar10.json"
    (args.out / name).write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.sweep:
        return
    text = f"{table(results)}\n\n(load average {os.getloadavg()[0]:.1f} at the end)\n"
    (args.out / "cifar10.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
