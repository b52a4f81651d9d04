"""Preset speed and memory: `python -m benchmarks.presets --presets gpu-fractals gpu-cifar10`.

Protocol
- For each preset and stage (tokenizer, prior), build the stage's task from the preset's config on
  synthetic images of the preset's size and channels with fractal-style captions (speed and memory
  do not depend on the pixels; it also needs no download), each in a fresh process (so the peak
  memory is that stage's alone), prepare the Trainer as `libcem train`
  does (Accelerate, EMA, the preset's precision), run `--warmup` optimizer steps, then time
  `--steps` more, synchronising the GPU before reading the clock.
- The prior runs on an untrained tokenizer of the preset's shape: its cost does not depend on the
  tokenizer's weights. The text encoder is the preset's (minilm when installed, else label); the
  table records which.
- Reports images/second, seconds per 1,000 steps and the peak GPU memory (torch.cuda.max_memory_allocated,
  None on a CPU), with the device's name; and the model FLOPs utilisation: the FLOPs of one training
  step (3x one forward of the step's whole batch through `task.loss`, counted by
  torch.utils.flop_counter.FlopCounterMode: the backward costs about twice the forward) times the
  steps per second, over the GPU's dense bf16/fp16 tensor-core peak (`PEAK_TFLOPS`; "n/a" on a CPU
  or an unknown GPU). `--write` merges the figures into the registry's
  measured.json, which `libcem presets` shows.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import device_name, time_train_steps

SYNTHETIC_IMAGES = 2048

# dense bf16/fp16 tensor-core peak TFLOP/s by GPU name (vendor data sheets), first match wins
PEAK_TFLOPS = [(r"H100 PCIe", 756.0), (r"H100", 989.0), (r"H200", 989.0), (r"A100", 312.0), (r"\bL4\b", 121.0),
               (r"\bT4\b", 65.0)]


def peak_flops(device: str) -> float | None:
    """The device's peak FLOP/s from PEAK_TFLOPS, None when unknown (a CPU)."""
    return next((tf * 1e12 for pattern, tf in PEAK_TFLOPS if re.search(pattern, device)), None)


def step_flops(cfg, task) -> float:
    """FLOPs of one optimizer step: 3x the forward FLOPs of `task.loss` on a whole batch."""
    from torch.utils.flop_counter import FlopCounterMode

    from libcem.device import default_device

    device = torch.device(default_device())
    idx = torch.arange(cfg.train.batch_size) % task.n_train
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        task.loss(task.model.to(device), idx, torch.Generator().manual_seed(0), device)
    return 3.0 * counter.get_total_flops()


def synthetic_splits(size: int, channels: int, n: int = SYNTHETIC_IMAGES, seed: int = 0):
    from libcem.generative.data.base import ImageSet, Splits
    from libcem.generative.data.fractals import BACKGROUNDS, COLORS, FAMILIES, caption

    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8))
    fam, col, bg = list(FAMILIES), list(COLORS), list(BACKGROUNDS)
    captions = [caption(fam[i % len(fam)], col[i % len(col)], bg[i % len(bg)]) for i in range(n)]
    data = ImageSet(images, captions)
    return Splits(data, data.subset(np.arange(min(n, 64))))


def build_task(stage: str, preset: str):
    from libcem.config import replace
    from libcem.device import default_device
    from libcem.generative.data.registry import image_shape
    from libcem.generative.models.tokenizer import Tokenizer
    from libcem.generative.presets import get_preset
    from libcem.generative.text import default_encoder
    from libcem.generative.training.stages import prior_task
    from libcem.generative.training.tokenizer import TokenizerTask

    tok_cfg = get_preset(preset).stage_config("tokenizer")
    size, channels = image_shape(tok_cfg.data)
    splits = synthetic_splits(size, channels)
    if stage == "tokenizer":
        return tok_cfg, TokenizerTask(tok_cfg, splits), ""
    cfg = get_preset(preset).stage_config("prior")
    cfg = replace(cfg, text={"encoder": cfg.text.encoder or default_encoder()})
    tok = Tokenizer(tok_cfg.model, channels, size).to(default_device()).eval()
    task = prior_task(cfg, tok, splits, progress=False)
    return cfg, task, task.encoder.name


def measure(preset: str, stage: str, warmup: int, steps: int) -> dict:
    cfg, task, encoder = build_task(stage, preset)
    cuda = torch.cuda.is_available()
    seconds = time_train_steps(cfg, task, warmup, steps)
    flops = step_flops(cfg, task)
    peak = peak_flops(device_name())
    achieved = flops * steps / seconds
    row = {
        "device": device_name(),
        "images_per_s": round(steps * cfg.train.batch_size / seconds, 1),
        "s_per_1000_steps": round(1000 * seconds / steps, 1),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "gflop_per_step": round(flops / 1e9, 2),
        "achieved_tflops": round(achieved / 1e12, 4),
        "mfu": f"{achieved / peak:.2%}" if peak else "n/a",
        "batch_size": cfg.train.batch_size,
        "precision": cfg.train.precision,
        "torch": torch.__version__,
        "timed_steps": steps,
    }
    if encoder:
        row["text_encoder"] = encoder
    return row


def merge(path: Path, results: dict) -> None:
    """table[preset][stage][device] = figures: one entry per device measured on."""
    table = json.loads(path.read_text()) if path.is_file() else {}
    for preset, stages in results.items():
        for stage, row in stages.items():
            table.setdefault(preset, {}).setdefault(stage, {})[row["device"]] = row
    path.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    from libcem.generative.presets import MEASURED_FILE, PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="Protocol: see the module docstring.")
    p.add_argument("--presets", nargs="+", default=[n for n in PRESETS if n != "tiny"], choices=list(PRESETS))
    p.add_argument("--stages", nargs="+", default=["tokenizer", "prior"], choices=["tokenizer", "prior"])
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=100, help="timed optimizer steps per preset and stage")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--one", nargs=2, metavar=("PRESET", "STAGE"), help=argparse.SUPPRESS)
    p.add_argument("--write", action="store_true", help=f"merge the figures into the registry's {MEASURED_FILE}")
    args = p.parse_args(argv)
    if args.one:  # one measurement in this fresh process: its peak memory is this stage's alone
        print(json.dumps(measure(*args.one, args.warmup, args.steps)), flush=True)
        return
    results: dict = {}
    for preset in args.presets:
        for stage in args.stages:
            cmd = [sys.executable, "-m", "benchmarks.presets", "--one", preset, stage,
                   "--warmup", str(args.warmup), "--steps", str(args.steps)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{preset} {stage} failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results.setdefault(preset, {})[stage] = row
            print(json.dumps({"preset": preset, "stage": stage, **row}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    if args.write:
        merge(Path(__file__).resolve().parent.parent / "src" / "libcem" / "generative" / "presets" / MEASURED_FILE, results)


if __name__ == "__main__":
    main()
