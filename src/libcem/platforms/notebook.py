"""The Colab and Kaggle notebooks: nbformat-4 JSON, built from the cells below.

Each notebook runs top to bottom, and again after a disconnect: it installs libcem when it is
missing, reports the GPU, puts the run folder on storage that outlives the session, trains a
preset with `--resume` (so a rerun continues), shows the loss plots and grids inline, samples,
and lists the files to keep. With the environment variable LIBCEM_KIT_SMOKE=1 it trains the
`tiny` preset under $LIBCEM_RUN_ROOT instead (how CI executes it on a CPU).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PARAMETERS = '''# Settings: change them here, then Runtime/Run all. Rerunning continues the same run.
PRESET = {preset!r}  # a name from `libcem presets`, or "auto": chosen from the GPU below
RUN_NAME = {run_name!r}  # the run's folder on persistent storage; a new name starts a new run
STEPS = None  # None: the preset's; a larger number (then Run all) trains the prior of an existing run further
PROMPTS = None  # None: the run's own snapshot prompts; or a list of strings
TENSORBOARD = False  # True: log the run to TensorBoard and show it inline above the training output
WHEEL = {wheel!r}  # written by `libcem kit` beside this notebook: upload it (see the next cell)
INSTALL = {install!r}  # None, or what pip installs when no wheel is found: a git URL or a published name

import os
SMOKE = os.environ.get("LIBCEM_KIT_SMOKE") == "1"  # CI: the tiny preset on a CPU, in $LIBCEM_RUN_ROOT
if SMOKE and os.environ.get("LIBCEM_KIT_STEPS"):
    STEPS = int(os.environ["LIBCEM_KIT_STEPS"])'''

INSTALL = '''# libcem is installed from the wheel uploaded to {where}; else from INSTALL; else this cell says what to upload
import importlib.util, subprocess, sys
from pathlib import Path


class KitStop(Exception):  # shown as its one sentence, without a traceback
    def _render_traceback_(self):
        return [f"{{type(self).__name__}}: {{self}}"]


def find_wheel(places):
    for folder, pattern in places:
        found = sorted(Path(folder).resolve().glob(pattern)) if Path(folder).is_dir() else []
        if found:  # the kit's own wheel, else the newest version
            return next((p for p in found if p.name == WHEEL), found[-1])
    return None


if importlib.util.find_spec("libcem") is None:
{search}
    wheel = find_wheel(WHEEL_PLACES)
    spec = f"{{wheel}}[text]" if wheel else INSTALL
    if spec is None:
        raise KitStop(f"libcem is not installed: upload {{WHEEL}} (written by `libcem kit` beside this notebook) "
                      f"to {where}, then run all cells again (or set INSTALL to a git URL or a published name)")
    print("installing", spec)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec], capture_output=True, text=True)
    if done.returncode:
        raise KitStop(f"pip could not install {{spec}}: " + (done.stderr.strip().splitlines() or ["no output"])[-1])
import libcem
print("libcem", libcem.__version__, "from", Path(libcem.__file__).parent)'''

DEVICE = '''from libcem.platforms.runtime import gpu_report, pick_preset
GPU_GIB, GPUS = gpu_report({platform!r})
preset = pick_preset(PRESET, GPU_GIB, SMOKE)'''

TRAIN = '''from libcem.platforms.runtime import stream, train_command
TIME_LIMIT_MIN = {time_limit}  # {time_limit_why}
if TENSORBOARD:  # inline; it refreshes while the run writes RUN/*/logs
    get_ipython().run_line_magic("load_ext", "tensorboard")
    get_ipython().run_line_magic("tensorboard", f"--logdir {{RUN}}")
stream(train_command(preset, RUN, GPUS, STEPS, None if SMOKE else TIME_LIMIT_MIN,
                     report_to="tensorboard" if TENSORBOARD else None), log=RUN / "train.log")'''

SHOW = '''from libcem.platforms.runtime import show_run
show_run(RUN)'''

SAMPLE = '''from libcem.platforms.runtime import sample_grid, show_png
show_png(sample_grid(RUN, PROMPTS))'''

KEEP = '''from libcem.platforms.runtime import print_keep_list
print_keep_list(RUN, {where!r})'''

DEMO = '''import importlib.util, subprocess, sys
if importlib.util.find_spec("gradio") is None and not SMOKE:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "gradio"], check=True)
if importlib.util.find_spec("gradio") is None:
    print("the demo needs gradio: pip install 'libcem[demo]'")
else:
    from libcem.demo.app import build_app, launch
    from libcem.errors import LibcemError
    try:
        app = build_app(model=RUN, run=RUN)
    except LibcemError as err:  # opened before training: the Generate tab loads the model once there is one
        print("no model to generate with yet:", err)
        app = build_app(run=RUN)
    if not SMOKE:  # CI executes this notebook: it builds the page but opens no public link
        launch(app, share=True, block=False)'''
DEMO_MD = ("## The demo page\nA web page on this run (a public gradio.live link, valid while the session lasts): "
           "denoise your photos, generate from prompts, and follow the loss curves and snapshot grids. Run this "
           "cell before the training cell to watch a run train from the Training tab.")


@dataclass(frozen=True)
class Platform:
    title: str
    storage_md: str  # what survives, in the intro
    storage: str  # the cell that sets RUN
    where: str  # where the run folder lives, for the closing list
    time_limit: str  # the TIME_LIMIT_MIN value
    time_limit_why: str
    after_md: str  # the closing markdown
    search: str  # install cell: where the uploaded wheel is looked for (WHEEL_PLACES: (folder, glob) pairs)
    upload_md: str  # the intro's step for the wheel


COLAB = Platform(
    "Google Colab",
    "The run folder is on your Google Drive, so it outlives the Colab session: after a disconnect or a "
    "timeout, reconnect and **Runtime > Run all** again, and training continues from its latest checkpoint.",
    '''from pathlib import Path
if SMOKE:
    ROOT = Path(os.environ.get("LIBCEM_RUN_ROOT", "runs"))
else:
    from google.colab import drive  # asks for permission once per session
    drive.mount("/content/drive")
    ROOT = Path("/content/drive/MyDrive/libcem")
RUN = ROOT / RUN_NAME
RUN.mkdir(parents=True, exist_ok=True)
print("run folder:", RUN)''',
    "on your Google Drive",
    "None",
    "Colab ends sessions without warning: the checkpoints (every train.checkpoint_every steps) cover that",
    "Everything is in `MyDrive/libcem/RUN_NAME` on your Drive. To train longer, raise `STEPS` and "
    "Run all; to start over, choose a new `RUN_NAME`.",
    '''    if not SMOKE:
        from google.colab import drive  # the wheel is on your Drive; asks for permission once per session
        drive.mount("/content/drive")
    WHEEL_PLACES = [("/content/drive/MyDrive/libcem", "libcem-*.whl"), (".", "libcem-*.whl")]''',
    "**Before the first run**, upload the wheel `libcem kit` wrote beside this notebook "
    "(`libcem-VERSION-py3-none-any.whl`) into the folder `MyDrive/libcem` of your Google Drive.",
)

KAGGLE = Platform(
    "Kaggle",
    "Only `/kaggle/working` outlives a Kaggle session, and only when you **Save Version** (Save & Run All): "
    "its files become this notebook's output. To continue a run in a later session, add this notebook's "
    "output as input data (**Add Input > Your Work**) and Run all: the run folder is copied back from "
    "`/kaggle/input` and training resumes. The training cell stops itself with a checkpoint before the "
    "12-hour session limit.",
    '''from pathlib import Path
from libcem.platforms.runtime import restore_saved_run
ROOT = Path(os.environ.get("LIBCEM_RUN_ROOT", "/kaggle/working/libcem"))
INPUTS = Path(os.environ.get("LIBCEM_KAGGLE_INPUT", "/kaggle/input"))
RUN = ROOT / RUN_NAME
restore_saved_run(RUN, INPUTS)  # a new session: bring back the run saved by an earlier version
RUN.mkdir(parents=True, exist_ok=True)
print("run folder:", RUN)''',
    "in /kaggle/working: Save Version keeps it as this notebook's output",
    "11 * 60",
    "Kaggle ends a session after 12 hours: stop with a checkpoint well before",
    "**Save Version** now keeps `/kaggle/working/libcem` as output. Next session: add that output as input "
    "and Run all to continue. The weekly GPU quota (30 hours) is not checked here: when it is spent, the "
    "GPU is gone until it resets, and the same notebook continues on the CPU, slowly, or waits for next week.",
    '''    INPUTS = os.environ.get("LIBCEM_KAGGLE_INPUT", "/kaggle/input")
    WHEEL_PLACES = [(INPUTS, "**/libcem-*.whl"), (".", "libcem-*.whl")]''',
    "**Before the first run**, make the wheel `libcem kit` wrote beside this notebook "
    "(`libcem-VERSION-py3-none-any.whl`) a Kaggle dataset (**Add Input > Upload**, any name) and add it to "
    "this notebook; turn **Internet** on (pip fetches libcem's dependencies).",
)

PLATFORMS = {"colab": COLAB, "kaggle": KAGGLE}


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def _cell(kind: str, text: str, tags: tuple[str, ...] = ()) -> dict:
    cell = {"cell_type": kind, "metadata": {"tags": list(tags)} if tags else {}, "source": _lines(text)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def build_notebook(platform: str, preset: str = "auto", run_name: str = "libcem-run",
                   install: str | None = None, wheel: str = "libcem-0.1.0-py3-none-any.whl") -> dict:
    from libcem.platforms import WHERE_TO_UPLOAD

    p = PLATFORMS[platform]
    intro = (f"# libcem on {p.title}: text-to-image training that survives disconnects\n\n"
             "Run all cells top to bottom. The notebook installs libcem, checks the GPU, trains a preset "
             "(tokenizer, then the text-conditioned prior) into a run folder with `--resume`, shows the loss "
             f"plots and sample grids, and lists the files to keep.\n\n{p.upload_md}\n\n{p.storage_md}")
    cells = [
        _cell("markdown", intro),
        _cell("code", PARAMETERS.format(preset=preset, run_name=run_name, install=install, wheel=wheel),
              ("parameters",)),
        _cell("markdown", "## Install libcem and check the GPU"),
        _cell("code", INSTALL.format(search=p.search, where=WHERE_TO_UPLOAD[platform])),
        _cell("code", DEVICE.format(platform=platform)),
        _cell("markdown", "## Storage that outlives the session"),
        _cell("code", p.storage),
        _cell("markdown", "## Train (or continue)\nRerunning this cell continues from the latest checkpoint; "
                          "it never starts over."),
        _cell("code", TRAIN.format(time_limit=p.time_limit, time_limit_why=p.time_limit_why)),
        _cell("markdown", "## Loss plots and the latest snapshot grids"),
        _cell("code", SHOW),
        _cell("markdown", "## Sample"),
        _cell("code", SAMPLE),
        _cell("markdown", "## The files to keep\n" + p.after_md),
        _cell("code", KEEP.format(where=p.where)),
    ]
    if platform == "colab":  # Colab proxies a public link; Kaggle sessions have no such link
        cells += [_cell("markdown", DEMO_MD), _cell("code", DEMO)]
    for i, cell in enumerate(cells):
        cell["id"] = f"libcem-{i:02d}"
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
            "accelerator": "GPU",
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def notebook_json(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
