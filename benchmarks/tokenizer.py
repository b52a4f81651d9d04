"""Tokenizer benchmark: `python -m benchmarks.tokenizer`.

Protocol
- For each data source (default: digits and fractals), train the tokenizer with the CLI
  defaults (`libcem train tokenizer --data SRC`), timing the whole run on this machine.
- Evaluate the final (EMA) model on the source's fixed held-out split: mean PSNR (peak 1,
  images in [0, 1]) and the fraction of the codebook used on it; plus codebook usage and
  perplexity from the last training log line.
- Reference, same split: plain k-means (512 codes) on non-overlapping PxP pixel patches of
  the training images (MiniBatchKMeans, seed 0; `--patch`, default 8; 4 gives digits the same
  7x7 = 49 tokens as the tokenizer); images are edge-padded to a multiple of P.
- Training throughput in images/second at batch 32 and 128: the mean over 10 optimizer steps
  after 3 warm-up steps, the same model and optimizer as `libcem train`.
Writes a markdown table to stdout and to OUT/tokenizer.md; reconstruction grids stay in the runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import device_name, time_train_steps
from libcem.cli import main as cli_main
from libcem.config import build_config
from libcem.generative.data import DataConfig, load_data
from libcem.generative.models.tokenizer import Tokenizer
from libcem.generative.training.metrics_log import MetricsLog
from libcem.generative.training.tokenizer import (
    TokenizerRunConfig,
    TokenizerTask,
    evaluate,
)
from libcem.imaging import psnr


def kmeans_patch_psnr(source: str, codes: int = 512, patch: int = 8) -> float:
    """Held-out PSNR of k-means vector quantisation of 8x8 pixel patches."""
    from sklearn.cluster import MiniBatchKMeans

    splits = load_data(DataConfig(source=source))

    def patches(x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        b, c, h, w = x.shape
        ph, pw = (-h) % patch, (-w) % patch
        xp = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
        cols = torch.nn.functional.unfold(xp, patch, stride=patch)  # (B, C*p*p, L)
        return cols.transpose(1, 2).reshape(-1, c * patch * patch), (b, xp.shape, h, w)

    train, _ = patches(splits.train.floats())
    km = MiniBatchKMeans(codes, random_state=0, batch_size=4096, n_init=3).fit(train.numpy())
    test = splits.test.floats()
    cols, (b, shape, h, w) = patches(test)
    quant = torch.from_numpy(km.cluster_centers_[km.predict(cols.numpy())]).float()
    quant = quant.reshape(b, -1, cols.shape[1]).transpose(1, 2)
    recon = torch.nn.functional.fold(quant, shape[-2:], patch, stride=patch)[..., :h, :w]
    return float(psnr(recon, test).mean())


def throughput(source: str, batch: int, steps: int = 10, warmup: int = 3) -> float:
    """Training images/second of the default tokenizer at `batch` (optimizer steps as `libcem train` runs them)."""
    cfg = build_config(TokenizerRunConfig, {"data": {"source": source, "train_size": 512},
                                            "train": {"batch_size": batch}})
    task = TokenizerTask(cfg, load_data(cfg.data))
    return steps * batch / time_train_steps(cfg, task, warmup, steps)


def train_and_score(source: str, out: Path, extra: list[str]) -> dict:
    run = out / f"tok-{source}"
    t0 = time.perf_counter()
    code = cli_main(["train", "tokenizer", "--data", source, "--out", str(run), "--resume", "--quiet", *extra])
    minutes = (time.perf_counter() - t0) / 60
    if code:
        raise SystemExit(code)
    model = Tokenizer.from_pretrained(run)
    scores = evaluate(model, load_data(DataConfig(source=source, image_size=model.image_size)).test)
    last = MetricsLog(run).rows()[-1]
    return {"source": source, "minutes": minutes, **scores, "usage": last["usage"], "perplexity": last["perplexity"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="Protocol: see the module docstring.")
    p.add_argument("--data", nargs="+", default=["digits", "fractals"])
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="passed to libcem train")
    p.add_argument("--patch", type=int, default=8, help="patch size of the k-means reference")
    p.add_argument("--skip-train", action="store_true", help="only throughput and the k-means reference")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    extra = [a for o in args.overrides for a in ("--set", o)]
    lines = ["| data | train minutes | held-out PSNR (dB) | codes used (held-out) | usage (last log) | perplexity | "
             f"k-means {args.patch}x{args.patch}, 512 codes (dB) |",
             "|---|---|---|---|---|---|---|"]
    for source in args.data:
        ref = kmeans_patch_psnr(source, patch=args.patch)
        if args.skip_train:
            lines.append(f"| {source} | - | - | - | - | - | {ref:.2f} |")
            continue
        r = train_and_score(source, args.out, extra)
        lines.append(f"| {source} | {r['minutes']:.1f} | {r['psnr']:.2f} | {r['codes_used']:.0%} | {r['usage']:.0%} | "
                     f"{r['perplexity']:.0f} | {ref:.2f} |")
    lines += ["", "| data | batch | training images/s |", "|---|---|---|"]
    for source in args.data:
        for batch in (32, 128):
            lines.append(f"| {source} | {batch} | {throughput(source, batch):.0f} |")
    lines += ["", f"Device: {device_name()}; torch {torch.__version__}."]
    text = "\n".join(lines)
    (args.out / "tokenizer.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
