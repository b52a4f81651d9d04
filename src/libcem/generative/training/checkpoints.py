"""Training checkpoints: a model folder (inference weights) plus what resuming needs, each tensor once.

checkpoints/step_00001000/
    model.safetensors, config.json     inference weights (the EMA shadow when enabled): from_pretrained
    training/raw.safetensors           the live weights and buffers (only with EMA: else model.safetensors)
    training/optimizer.pt              optimizer state, loaded with weights_only=True
    training/state.json                {"step": 1000}
Each checkpoint is written into a temporary folder and renamed into place, so a process
killed at any moment leaves either the complete checkpoint or none. Checkpoints written before
libcem 0.1.0's slim layout also hold training/ema.safetensors (then read instead of model.safetensors).

Rotated checkpoints are truncated before they are unlinked: on a Google Drive mount a deleted file
goes to Drive's trash and keeps counting against the quota, an emptied one does not.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import torch
from torch import nn

from libcem.errors import LibcemError
from libcem.files import (
    WEIGHTS,
    atomic_write_bytes,
    atomic_write_json,
    load_tensors,
    replace_dir,
    save_model,
    save_tensors,
)
from libcem.generative.runs import StageRun


def clean_partial(run: StageRun) -> None:
    """Remove temporary folders left by a process killed while writing a checkpoint."""
    for p in run.partial_checkpoints():
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    run: StageRun,
    step: int,
    model: nn.Module,
    ema_model: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    extra: dict,
    keep: int,
) -> Path:
    final, tmp = run.checkpoint(step), run.partial_checkpoint(step)
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "training").mkdir(parents=True)
    save_model(tmp, ema_model if ema_model is not None else model, {"step": step, **extra})
    if ema_model is not None:  # without EMA the live weights are model.safetensors
        save_tensors(tmp / "training" / "raw.safetensors", model.state_dict())
    buf = io.BytesIO()
    torch.save(optimizer.state_dict(), buf)
    atomic_write_bytes(tmp / "training" / "optimizer.pt", buf.getvalue())
    atomic_write_json(tmp / "training" / "state.json", {"step": step})
    replace_dir(tmp, final)
    for old in run.checkpoints()[:-keep]:
        remove_for_good(old)
    return final


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def remove_for_good(path: Path) -> None:
    """Delete folder `path`, emptying each file first, so a trash (a Drive mount's) keeps nothing of it."""
    for f in path.rglob("*"):
        if f.is_file() and not f.is_symlink():
            with open(f, "r+b") as handle:
                handle.truncate(0)
    shutil.rmtree(path)


def load_checkpoint(
    ckpt: Path,
    model: nn.Module,
    ema_model: nn.Module | None,
    optimizer: torch.optim.Optimizer,
) -> int:
    """Restore weights, EMA and optimizer from `ckpt`; returns the step it was saved at."""
    device = next(model.parameters()).device
    raw, ema, inference = (ckpt / "training" / "raw.safetensors", ckpt / "training" / "ema.safetensors",
                           ckpt / WEIGHTS)
    for needed in (inference, ckpt / "training" / "state.json"):
        if not needed.is_file():
            raise LibcemError(f"{ckpt} is not a complete checkpoint (no {needed.relative_to(ckpt)}); "
                              "delete it to resume from the one before")
    model.load_state_dict(load_tensors(raw if raw.is_file() else inference, device))
    if ema_model is not None:  # the shadow is the inference weights; older checkpoints kept a copy in ema
        ema_model.load_state_dict(load_tensors(ema if ema.is_file() else inference, device))
    try:
        state = torch.load(ckpt / "training" / "optimizer.pt", map_location=device, weights_only=True)
    except Exception as err:  # weights_only refuses arbitrary pickles: say so, never run them
        raise LibcemError(f"{ckpt}/training/optimizer.pt could not be loaded safely: {err}") from None
    optimizer.load_state_dict(state)
    return int(json.loads((ckpt / "training" / "state.json").read_text())["step"])
