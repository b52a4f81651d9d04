"""What the platform notebooks call once libcem is installed: pick the device and preset, train in a
child process whose output streams into the notebook, and show what the run made so far.

Training runs as `python -m libcem train ... --resume` (or `accelerate launch -m libcem ...` on a
machine with several GPUs), so running the notebook again after a disconnect continues the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from libcem.errors import LibcemError
from libcem.generative.runs import TwoStageRun
from libcem.generative.presets import choose_preset, get_preset

NO_GPU_HINT = {
    "colab": "Runtime > Change runtime type > T4 GPU, then run all cells again",
    "kaggle": "Settings > Accelerator > GPU T4 x2, then run all cells again",
    "vast": "rent an instance with a GPU",
}


def gpu_report(platform: str) -> tuple[float | None, int]:
    """Print what accelerator there is; returns (GPU memory in GiB or None, number of GPUs)."""
    import torch

    from libcem.device import cuda_unsupported

    if not torch.cuda.is_available():
        print(f"No GPU found: training runs on the CPU, slowly. For a GPU: {NO_GPU_HINT.get(platform, '')}.")
        return None, 0
    reason = cuda_unsupported()
    if reason:  # e.g. a P100 under a torch built for sm_75 and later: its first kernel would fail
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the training process runs on the CPU
        print(f"{reason}: training runs on the CPU, slowly. For a GPU it supports: {NO_GPU_HINT.get(platform, '')}.")
        return None, 0
    count = torch.cuda.device_count()
    props = torch.cuda.get_device_properties(0)
    gib = props.total_memory / 2**30
    print(f"GPU: {count} x {props.name}, {gib:.1f} GiB each; torch {torch.__version__}")
    return gib, count


def pick_preset(requested: str, gpu_gib: float | None, smoke: bool) -> str:
    """'auto' -> the registry's choice for this GPU; 'tiny' in smoke mode; else the name, checked."""
    name = "tiny" if smoke else (choose_preset(gpu_gib) if requested == "auto" else requested)
    preset = get_preset(name)
    if preset.gpu_gib > (gpu_gib or 0):
        print(f"warning: preset '{name}' is sized for {preset.hardware}; this machine has "
              f"{'no GPU' if gpu_gib is None else f'{gpu_gib:.1f} GiB'}")
    print(f"preset {name}: {preset.trains}")
    return name


def train_command(preset: str, run: Path, gpus: int = 0, steps: int | None = None,
                  time_limit_min: float | None = None, report_to: str | None = None) -> list[str]:
    """The command that trains (or continues) both stages of `preset` into `run`."""
    args = ["train", "--preset", preset, "--out", str(run), "--resume"]
    if report_to:
        args += ["--report-to", report_to]
    if steps:
        args += ["--set", f"prior.train.steps={steps}"]  # the tokenizer a prior was trained on stays as it is
    if time_limit_min:
        args += ["--time-limit", f"{time_limit_min:g}"]
    if gpus > 1:  # data parallel over every GPU of the machine, through Accelerate
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "libcem", *args]
    return [sys.executable, "-m", "libcem", *args]


def stream(cmd: list[str], log: Path | None = None) -> None:
    """Run `cmd`, copying its output (progress bars included) into this notebook cell and to `log`."""
    print("$", " ".join(cmd), flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as proc, \
            (open(log, "ab") if log else open(os.devnull, "wb")) as copy:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(4096):
            copy.write(chunk)
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        code = proc.wait()
    if code:
        raise LibcemError(f"the command failed with exit code {code}; its output is above"
                          + (f" and in {log}" if log else ""))


def restore_saved_run(run: Path, inputs: Path) -> None:
    """Kaggle: when `run` has not started here, copy back the newest copy of it found under `inputs`
    (an earlier version's output, added as input data: .../libcem/RUN_NAME/tokenizer)."""
    first = TwoStageRun(run).tokenizer.path
    if first.is_dir():
        return
    saved = sorted(inputs.glob(f"*/**/libcem/{run.name}/{first.name}"))
    if saved:
        shutil.copytree(saved[-1].parent, run, dirs_exist_ok=True)
        print("continuing the run saved in", saved[-1].parent)


def show_run(run: Path) -> None:
    """Display each stage's loss plot and latest snapshot grid (inline in a notebook, else their paths)."""
    for stage in TwoStageRun(run).started_stages():
        for title, path in (("loss", stage.loss_plot), ("latest snapshot", stage.latest_snapshot())):
            if path is None or not path.is_file():
                continue
            print(f"{stage.path.name}: {title} ({path})")
            show_png(path)


def show_png(path: Path | None) -> None:
    """Display a PNG inline when running in a notebook (nothing otherwise)."""
    if path is None:
        return
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        return
    if get_ipython() is not None:
        display(Image(filename=str(path)))


def keep_list(run: Path) -> list[Path]:
    """The files worth keeping: each stage's final model folder, its plots and grids, and the samples."""
    keep = []
    for stage in TwoStageRun(run).started_stages():
        keep += [stage.config, stage.metrics, stage.loss_plot] + stage.checkpoints()[-1:] + stage.snapshots()[-1:]
    keep += sorted(run.glob("*.png"))
    return [p for p in keep if p.exists()]


def print_keep_list(run: Path, where: str) -> None:
    print(f"The run folder {run} ({where}) holds everything; the files to keep are:")
    for path in keep_list(run):
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
        print(f"  {path}  ({size / 2**20:.1f} MiB)")
    print(f"Sample again any time: libcem sample --model {run} \"PROMPT\" -n 16 --output grid.png")


def sample_grid(run: Path, prompts: list[str] | None = None, n: int = 8) -> Path | None:
    """RUN/samples.png: n images for each prompt (default: the run's first four snapshot prompts)."""
    if TwoStageRun(run).prior.latest_checkpoint() is None:
        print("the prior has no checkpoint yet: train first")
        return None
    from libcem.generative.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(run)
    prompts = list(prompts or pipe.prompts[:4])
    print("prompts:", prompts)
    return pipe.save_grid(prompts, n, run / "samples.png")
