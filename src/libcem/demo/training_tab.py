"""The Training tab: a run folder's loss curves and latest snapshot grids, refreshed while it trains."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from libcem.demo.runs import STAGES, grid_step, read_metrics, stage_files
from libcem.errors import LibcemError

REFRESH_S = 5.0
SHOWN_SIDE = 384  # small snapshot grids are enlarged (nearest neighbour) to about this side


def loss_table(stages) -> pd.DataFrame:
    """Every logged (step, loss) of every stage, one row each, for the line plot."""
    rows = [{"step": row["step"], "loss": row["loss"], "stage": stage.name}
            for stage in stages for row in read_metrics(stage.metrics) if "loss" in row]
    return pd.DataFrame(rows, columns=["step", "loss", "stage"])


def show_grid(path: Path) -> np.ndarray:
    """A snapshot grid as pixels (read now, so a grid being replaced never reaches the page half-written)."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        factor = max(1, SHOWN_SIDE // max(img.size))
        return np.asarray(img.resize((img.width * factor, img.height * factor), Image.NEAREST))


def summary(stages, table: pd.DataFrame) -> str:
    """One line per stage: its last logged step and loss, and its latest grid."""
    lines = []
    for stage in stages:
        mine = table[table.stage == stage.name]
        last = f"step {int(mine.step.iloc[-1])}, loss {mine.loss.iloc[-1]:.4g}" if len(mine) else "nothing logged yet"
        grid = f"; snapshot of step {grid_step(stage.latest_grid)}" if stage.latest_grid else ""
        lines.append(f"**{stage.name}**: {last}{grid}")
    return "  \n".join(lines) + f"  \n_read at {time.strftime('%H:%M:%S')}_"


def show_run(folder: str):
    """The status line, the loss curves and the latest grids of the run in `folder`.

    Problems (no folder yet, not a run) are written in the status line rather than raised, since
    this runs every few seconds while following a run.
    """
    empty = pd.DataFrame(columns=["step", "loss", "stage"])
    if not folder or not folder.strip():
        return ("Enter a run folder (the --out of libcem train) to follow its training.", empty) + grid_views([])
    try:
        stages = stage_files(folder.strip())
        if not stages:
            raise LibcemError(f"{folder}: no metrics.jsonl here or in tokenizer/ or prior/; "
                              "is it a run folder made by libcem train?")
        table = loss_table(stages)
    except LibcemError as err:
        return (f"⚠️ {err}", empty) + grid_views([])
    return (summary(stages, table), table) + grid_views(stages)


def grid_views(stages) -> tuple:
    """One image per stage (tokenizer, prior) with its latest grid; unused ones hidden."""
    shown = [gr.Image(show_grid(s.latest_grid), label=f"{s.name}: snapshot of step {grid_step(s.latest_grid)}",
                      visible=True) for s in stages if s.latest_grid][:len(STAGES)]
    return tuple(shown + [gr.Image(None, visible=False)] * (len(STAGES) - len(shown)))


def build(app: gr.Blocks, run: str | Path | None, lock_paths: bool) -> None:
    """Lay out the Training tab (inside `app`) and wire its refresh timer."""
    with gr.Row():
        folder = gr.Textbox(str(run or ""), label="Run folder (the --out of libcem train)", scale=4,
                            interactive=not lock_paths, elem_id="run-path")
        refresh = gr.Button("Refresh", scale=1, elem_id="refresh-run")
        follow = gr.Checkbox(bool(run), label=f"Refresh every {REFRESH_S:g} s", scale=1)
    status = gr.Markdown(elem_id="run-status")
    with gr.Row():
        curves = gr.LinePlot(x="step", y="loss", color="stage", title="Training loss", elem_id="loss-plot",
                             scale=1)
        with gr.Column(scale=1, elem_id="snapshots"):
            grids = [gr.Image(label="Latest snapshot grid", format="png", interactive=False, visible=False,
                              height=260) for _ in STAGES]
    timer = gr.Timer(REFRESH_S, active=bool(run))
    outputs = [status, curves, *grids]
    for event in (app.load, refresh.click, folder.submit, timer.tick):
        event(show_run, folder, outputs, show_progress="hidden" if event is timer.tick else "minimal")
    follow.change(lambda on: gr.Timer(active=on), follow, timer)
