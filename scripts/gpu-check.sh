#!/usr/bin/env bash
# The GPU checks behind the GPU figures in the presets registry and docs/platforms.md:
#   bash scripts/gpu-check.sh OUTDIR
# 1. preset speed and memory (python -m benchmarks.presets), 2. the denoiser on the GPU against
# the CPU on one image, 2b. the denoiser on the 12-megapixel benchmark photo on the GPU, 3. the
# gpu-fractals preset end to end (both stages, --time-limit), then libcem eval on it. Settings:
# PRESET, BENCH_STEPS, TOKENIZER_MINUTES and PRIOR_MINUTES (time limits of the two stages),
# BENCH_PRESETS, DENOISE_SPEEDS (of part 2b; empty skips it). A failed part is reported and the
# next one still runs.
set -uo pipefail
OUT="${1:-gpu-check}"
PRESET="${PRESET:-gpu-fractals}"
BENCH_STEPS="${BENCH_STEPS:-100}"
TOKENIZER_MINUTES="${TOKENIZER_MINUTES:-2}"
PRIOR_MINUTES="${PRIOR_MINUTES:-3}"
DENOISE_SPEEDS="${DENOISE_SPEEDS:-fast default best}"
read -r -a BENCH_PRESETS <<<"${BENCH_PRESETS:-cpu-digits cpu-fractals gpu-fractals gpu-cifar10}"
mkdir -p "$OUT"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

echo "== 1. preset speed and memory"
python3 -m benchmarks.presets --presets "${BENCH_PRESETS[@]}" --warmup 20 --steps "$BENCH_STEPS" \
  --json "$OUT/measured.json" || echo "== part 1 FAILED"

echo "== 2. denoiser: GPU vs CPU on camera (256 px, sigma 25)"
if ! python3 - "$OUT/denoise.json" <<'PY'
import json, sys, time
import numpy as np, torch
from skimage import data, transform
import libcem
from libcem.imaging import psnr
clean = (transform.resize(data.camera(), (256, 256), anti_aliasing=True) * 255).round().astype(np.uint8)
noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25, clean.shape), 0, 255).round().astype(np.uint8)
rows = {}
for dev in (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]:
    libcem.denoise(noisy[:64, :64], 25, device=dev)  # warm-up
    t0 = time.perf_counter(); out = libcem.denoise(noisy, 25, device=dev); sec = time.perf_counter() - t0
    p = float(psnr(torch.from_numpy(out).float()[None, None] / 255, torch.from_numpy(clean).float()[None, None] / 255))
    rows[dev] = {"seconds": round(sec, 3), "psnr": round(p, 3)}
print(rows); json.dump(rows, open(sys.argv[1], "w"), indent=1)
PY
then echo "== part 2 FAILED"; fi

echo "== 2b. denoiser: the 12-megapixel colour photo on the GPU (speeds: ${DENOISE_SPEEDS})"
for speed in $DENOISE_SPEEDS; do
  python3 -m benchmarks.denoise_speed --device cuda --speed "$speed" | tee -a "$OUT/denoise-12mp.txt" \
    || echo "== part 2b ($speed) FAILED"
done

echo "== 3. $PRESET end to end (time limits: tokenizer $TOKENIZER_MINUTES min, prior $PRIOR_MINUTES min), then libcem eval"
RUN=/tmp/libcem-gpu-check
rm -rf "$RUN"
start=$(date +%s)
python3 -m libcem train tokenizer --preset "$PRESET" --out "$RUN/tokenizer" --time-limit "$TOKENIZER_MINUTES" --quiet
echo "tokenizer wall seconds: $(( $(date +%s) - start ))"
start=$(date +%s)
python3 -m libcem train prior --preset "$PRESET" --tokenizer "$RUN/tokenizer" --out "$RUN/prior" \
  --time-limit "$PRIOR_MINUTES" --quiet
echo "prior wall seconds: $(( $(date +%s) - start ))"
python3 -m libcem eval --model "$RUN" --json "$OUT/eval.json" --grid "$OUT/grid.png" --quiet
tail -n 2 "$RUN/tokenizer/metrics.jsonl" "$RUN/prior/metrics.jsonl"
cp "$RUN/prior/metrics.jsonl" "$OUT/prior-metrics.jsonl"
cp "$RUN/tokenizer/metrics.jsonl" "$OUT/tokenizer-metrics.jsonl"
