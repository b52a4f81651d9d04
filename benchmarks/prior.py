"""Prior benchmark: `python -m benchmarks.prior --tokenizer digits=runs/tok-digits`.

Protocol
- For each data source (default: digits and fractals), train the prior with the CLI defaults:
  `libcem train prior --tokenizer TOK --data SRC` when a tokenizer is given as SRC=PATH, else both
  stages with `libcem train --data SRC` (extra --set options are passed through). The training
  wall-clock time and the mean training images/second of the prior (metrics.jsonl) are reported.
- Evaluate with `libcem eval` defaults: one image per held-out image from its caption, 20 DPM-Solver++
  steps, guidance 3, seed 0; adherence and classifier-feature FID per label, with the real-data
  reference (see libcem.generative.evaluation.report).
- Sampling speed: 100 images of the first snapshot prompt at 20 steps with guidance 3 (two network
  evaluations per step), batch 50, timed after the model is loaded; images/second.
- Writes a 4x8 sample grid (4 prompts x 8 seeds) to OUT/SRC-grid.png and a markdown table to
  stdout and OUT/prior.md. The CPU may be shared: the table states the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from benchmarks.common import device_name
from libcem.cli import main as cli_main


def train(source: str, tokenizer: str | None, out: Path, extra: list[str]) -> tuple[Path, float]:
    run = out / f"prior-{source}"
    if tokenizer:
        cmd = ["train", "prior", "--tokenizer", tokenizer, "--data", source, "--out", str(run)]
    else:
        cmd = ["train", "--data", source, "--out", str(run)]
    t0 = time.perf_counter()
    code = cli_main([*cmd, "--resume", "--quiet", *extra])
    if code:
        raise SystemExit(code)
    return run, (time.perf_counter() - t0) / 60


def prior_run(run: Path) -> Path:
    """The prior stage of a two-stage run, or the run itself when it is a prior run."""
    from libcem.generative.runs import TwoStageRun

    stage = TwoStageRun(run).prior.path
    return stage if stage.is_dir() else run


def train_speed(run: Path) -> float:
    from libcem.generative.training.metrics_log import MetricsLog

    rows = MetricsLog(prior_run(run)).rows()
    return sum(r["images_per_s"] for r in rows) / len(rows)


def sampling_speed(pipe, prompt: str, n: int = 100) -> float:
    t0 = time.perf_counter()
    pipe(prompt, n=n, steps=20, guidance=3.0, seed=0, batch_size=50)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    from libcem.generative.pipeline import Pipeline

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="Protocol: see the module docstring.")
    p.add_argument("--data", nargs="+", default=["digits", "fractals"])
    p.add_argument("--tokenizer", action="append", default=[], metavar="SRC=PATH",
                   help="train only the prior, on this trained tokenizer, for source SRC")
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="passed to libcem train")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizers = dict(t.split("=", 1) for t in args.tokenizer)
    extra = [a for o in args.overrides for a in ("--set", o)]
    lines = ["| data | label | adherence | real-data adherence | feature FID | real-data feature FID | ratio |",
             "|---|---|---|---|---|---|---|"]
    speed = ["| data | train minutes | prior training images/s | sampling images/s (100 images, 20 steps, guidance 3) |",
             "|---|---|---|---|"]
    for source in args.data:
        run, minutes = train(source, tokenizers.get(source), args.out, extra)
        load0 = os.getloadavg()[0]
        result_path = args.out / f"{source}-eval.json"
        if cli_main(["eval", "--model", str(run), "--json", str(result_path), "--quiet"]):
            raise SystemExit(f"libcem eval failed for {source}")
        result = json.loads(result_path.read_text())
        for key, r in result["labels"].items():
            lines.append(f"| {source} | {key} | {r['adherence']:.1%} | {r['real_accuracy']:.1%} | "
                         f"{r['feature_fid']:.2f} | {r['real_feature_fid']:.2f} | "
                         f"{r['feature_fid'] / max(r['real_feature_fid'], 1e-12):.2f}x |")
        pipe = Pipeline.from_pretrained(run, "cpu" if not torch.cuda.is_available() else None)
        rate = sampling_speed(pipe, pipe.prompts[0])
        speed.append(f"| {source} | {minutes:.1f} | {train_speed(run):.0f} | {rate:.1f} |")
        pipe.save_grid(pipe.prompts[:4], 8, args.out / f"{source}-grid.png")
        print(f"{source}: load average before eval {load0:.1f}")
    device = device_name()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = "\n".join(lines + [""] + speed + ["", f"Device: {device}; torch {torch.__version__}; load average {load} "
                                                 f"on {os.cpu_count()} cores at the end."])
    (args.out / "prior.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
