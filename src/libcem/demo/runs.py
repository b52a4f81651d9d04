"""What the Training tab reads from a run folder: each stage's logged metrics and latest snapshot grid.

The layout itself (RUN/tokenizer and RUN/prior, or a single-stage run, each with metrics.jsonl and
samples/step_XXXXXXXX.png) is `libcem.generative.runs`' business; this module only asks it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from libcem.errors import LibcemError
from libcem.generative.runs import STAGES, StageRun, TwoStageRun, step_of

__all__ = ["STAGES", "StageFiles", "stage_files", "read_metrics", "grid_step"]


@dataclass(frozen=True)
class StageFiles:
    """One trained (or training) stage: its name, its metrics log and its newest snapshot grid."""

    name: str
    metrics: Path  # metrics.jsonl: one JSON row per logged step
    latest_grid: Path | None  # samples/step_XXXXXXXX.png with the largest step, None before the first


def stage_files(run: str | Path) -> list[StageFiles]:
    """The stages of a run folder that have logged something: RUN/tokenizer and RUN/prior, or RUN itself."""
    run = Path(run).expanduser()
    if not run.is_dir():
        raise LibcemError(f"{run}: no such folder; give a run folder made by libcem train")
    found = []
    for name, stage in [(s, TwoStageRun(run).stage(s)) for s in STAGES] + [(run.name, StageRun(run))]:
        if stage.metrics.is_file():
            found.append(StageFiles(name, stage.metrics, stage.latest_snapshot()))
    return found


def read_metrics(path: Path) -> list[dict]:
    """The complete rows of a metrics log; a last line still being written is left for the next read."""
    lines = path.read_text().splitlines(keepends=True)
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.endswith("\n") or not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise LibcemError(f"{path}, line {number}: not a JSON row ({err})") from None
    return rows


def grid_step(grid: Path) -> int:
    """The training step in a snapshot grid's name, samples/step_00001200.png -> 1200."""
    return step_of(grid)
