"""Named training presets: one registry that `libcem train --preset`, `libcem presets` and the kits read.

A preset is a two-stage config (shared tables plus `tokenizer` / `prior` tables, the same shape
as a `libcem train --config` file), what it trains, and the hardware it is sized for. Speed and
memory figures are never written here by hand: `python -m benchmarks.presets` measures them and
stores them in `measured.json` beside this file, with the device they were measured on; a preset
without a measurement shows "not measured".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from libcem.errors import LibcemError
from libcem.generative.runs import STAGES

MEASURED_FILE = "measured.json"


@dataclass(frozen=True)
class Preset:
    name: str
    trains: str  # one line: what a run of it trains, on what data
    hardware: str  # what it is sized for
    config: dict  # two-stage config: shared tables + "tokenizer" / "prior" tables
    gpu_gib: float = 0.0  # the GPU memory (GiB) it needs; 0 = a CPU preset (runs on a GPU too)
    cpu_time: str = ""  # measured time of both stages on an idle 2-core CPU (docs/prior.md), "" = not measured

    def stage_config(self, stage: str, overrides: list[str] = ()):
        """The config of one stage: the shared tables, then the stage's own table, then `overrides`."""
        from libcem.config import build_config, stage_base
        from libcem.generative.training.stages import STAGE_CONFIGS

        return build_config(STAGE_CONFIGS[stage], stage_base(self.config, stage), list(overrides))

    def steps(self, stage: str) -> int:
        return self.stage_config(stage).train.steps


_TINY_TRAIN = {"steps": 4, "batch_size": 8, "log_every": 2, "sample_every": 4, "checkpoint_every": 2}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "tiny",
            "smoke test: 4 steps of tiny models on 16-px fractals (seconds on any machine; the images mean nothing)",
            "any",
            {
                "data": {"source": "fractals", "image_size": 16, "train_size": 64, "test_size": 16},
                "optim": {"warmup_steps": 2},
                "train": dict(_TINY_TRAIN),
                "tokenizer": {"model": {"size": "tiny"}},
                "prior": {"model": {"size": "tiny"}, "text": {"encoder": "label"}},
            },
        ),
        Preset(
            "cpu-digits",
            "digits (5,000 real MNIST digits, offline): both stages with the CLI defaults",
            "CPU (2 cores) or any GPU",
            {"data": {"source": "digits"}},
            cpu_time="about 16 min (15 min 45 s measured)",
        ),
        Preset(
            "cpu-fractals",
            "fractals (built in): the CLI defaults, with the prior trained twice as long and sampled with guidance 5",
            "CPU (2 cores) or any GPU",
            {"data": {"source": "fractals"}, "prior": {"train": {"steps": 5000}, "diffusion": {"guidance": 5.0}}},
            cpu_time="about 36 min (tokenizer 10, prior 26.3, measured stage by stage with the earlier one-codebook "
                     "tokenizer and ddpm prior: the same networks, batches and steps)",
        ),
        Preset(
            "cpu-cifar10",
            "CIFAR-10 (downloaded once, online; or --data folder:PHOTOS): the default tokenizer (product "
            "quantization: 8 EM codebooks of 128 codes) trained a third longer, and a rectified-flow prior trained "
            "2.4x longer on the captions \"a photo of a {label}\", sampled with guidance 5 at noise levels 0-0.75",
            "CPU (2 cores) or any GPU",
            {
                "data": {"source": "cifar10", "caption": "a photo of a {label}"},
                "tokenizer": {"model": {"size": "small"},
                              "train": {"steps": 4000}},
                "prior": {
                    "model": {"size": "small"},
                    "diffusion": {"objective": "flow", "guidance": 5.0, "guidance_interval": [0.0, 0.75]},
                    "train": {"steps": 6000, "ema_decay": 0.999, "sample_every": 1000, "checkpoint_every": 500},
                },
            },
            cpu_time="about 42 min end to end (42 min 16 s measured on the CIFAR-10 training folder, "
                     "its image cache built cold)",
        ),
        Preset(
            "gpu-fractals",
            "fractals: wider tokenizer, a 6-block prior trained 4x longer on 4x larger batches",
            "GPU with 16 GB (T4) or more",
            {
                "data": {"source": "fractals"},
                "train": {"precision": "fp16", "sample_every": 1000, "checkpoint_every": 1000},
                "tokenizer": {
                    "model": {"size": "medium"},
                    "optim": {"lr": 2e-3},
                    "train": {"steps": 6000, "batch_size": 128},
                },
                "prior": {
                    "model": {"size": "medium"},
                    "optim": {"lr": 5e-4},
                    "train": {"steps": 10000, "batch_size": 256, "ema_decay": 0.999},
                },
            },
            gpu_gib=14.0,
        ),
        Preset(
            "gpu-cifar10",
            "CIFAR-10 (downloaded once, online): a deeper tokenizer (32 numbers per latent, 8 codebooks of 128) and an "
            "8-block prior on the class captions",
            "GPU with 16 GB (T4) or more",
            {
                "data": {"source": "cifar10"},
                "train": {"precision": "fp16", "sample_every": 1000, "checkpoint_every": 1000},
                "tokenizer": {
                    "model": {"size": "large"},
                    "optim": {"lr": 1e-3},
                    "train": {"steps": 20000, "batch_size": 128},
                },
                "prior": {
                    "model": {"size": "large"},
                    "optim": {"lr": 3e-4},
                    "train": {"steps": 40000, "batch_size": 256, "ema_decay": 0.9995},
                },
            },
            gpu_gib=14.0,
        ),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise LibcemError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)} (see: libcem presets)")
    return PRESETS[name]


def measured() -> dict:
    """{preset: {stage: {device: {images_per_s, peak_gib, s_per_1000_steps, batch_size, precision, ...}}}}."""
    text = resources.files(__package__).joinpath(MEASURED_FILE)
    return json.loads(text.read_text()) if text.is_file() else {}


AUTO_CHOICE = ("gpu-fractals", "cpu-fractals")  # offline data, so a kit runs without internet access


def choose_preset(gpu_gib: float | None) -> str:
    """The first of AUTO_CHOICE that fits a GPU of `gpu_gib` GiB of memory (None: no GPU)."""
    for name in AUTO_CHOICE:
        if PRESETS[name].gpu_gib <= (gpu_gib or 0):
            return name
    return AUTO_CHOICE[-1]


def describe(name: str, table: dict | None = None) -> dict[str, str]:
    """What `libcem presets` prints for one preset: measured figures, or 'not measured'."""
    p = get_preset(name)
    rows = (measured() if table is None else table).get(name, {})
    out = {"preset": name, "trains": p.trains, "sized for": p.hardware,
           "steps": f"tokenizer {p.steps('tokenizer')}, prior {p.steps('prior')}"}
    for stage in STAGES:
        figures = [_figure(m) for m in rows.get(stage, {}).values()]
        out[stage] = "; ".join(figures) if figures else "not measured"
    return out


def _figure(m: dict) -> str:
    memory = f"{m['peak_gib']:.2f} GiB peak GPU memory, " if m.get("peak_gib") is not None else ""
    precision = "fp32" if m["precision"] == "no" else m["precision"]
    return (f"{memory}{m['s_per_1000_steps']:.0f} s per 1,000 steps, {m['images_per_s']:.0f} images/s "
            f"(batch {m['batch_size']}, {precision}) on {m['device']}" + (f"; {m['note']}" if m.get("note") else ""))


def expected_time(name: str, device: str) -> str:
    """One line on how long a preset's two stages take on `device` (a GPU's name, or "cpu"), from
    measurements only: measured.json's rows for that GPU, or the preset's 2-core CPU figures; "" if none."""
    p = get_preset(name)
    rows = measured().get(name, {})
    per_stage = [rows.get(stage, {}).get(device) for stage in STAGES]
    if all(per_stage):
        minutes = [p.steps(stage) * row["s_per_1000_steps"] / 60_000 for stage, row in zip(STAGES, per_stage)]
        return (f"expected: about {sum(minutes):.0f} min on this {device} (tokenizer {minutes[0]:.0f}, "
                f"prior {minutes[1]:.0f}; from measured steps/s)")
    if device == "cpu" and p.cpu_time:
        return f"expected: {p.cpu_time} on an idle 2-core CPU; less with more cores"
    return ""
