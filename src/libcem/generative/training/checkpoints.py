"""Training checkpoints: a model folder (inference weights) plus what resuming needs.

checkpoints/step_00001000/
    model.safetensors, config.json     inference weights (EMA when enabled): from_pretrained
    training/raw.safetensors           the live weights and buffers
    training/ema.safetensors           the EMA shadow (when enabled)
    training/optimizer.pt              optimizer state, loaded with weights_only=True
    training/state.json                {"step": 1000}
Each checkpoint is written into a temporary folder and renamed into place, so a process
killed at any moment leaves either the complete checkpoint or none.
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
    save_tensors(tmp / "training" / "raw.safetensors", model.state_dict())
    if ema_model is not None:
        save_tensors(tmp / "training" / "ema.safetensors", ema_model.state_dict())
    buf = io.BytesIO()
    torch.save(optimizer.state_dict(), buf)
    atomic_write_bytes(tmp / "training" / "optimizer.pt", buf.getvalue())
    atomic_write_json(tmp / "training" / "state.json", {"step": step})
    replace_dir(tmp, final)
    for old in run.checkpoints()[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    ckpt: Path,
    model: nn.Module,
    ema_model: nn.Module | None,
    optimizer: torch.optim.Optimizer,
) -> int:
    """Restore weights, EMA and optimizer from `ckpt`; returns the step it was saved at."""
    device = next(model.parameters()).device
    model.load_state_dict(load_tensors(ckpt / "training" / "raw.safetensors", device))
    if ema_model is not None:
        ema_path = ckpt / "training" / "ema.safetensors"
        source = ema_path if ema_path.is_file() else ckpt / "training" / "raw.safetensors"
        ema_model.load_state_dict(load_tensors(source, device))
    try:
        state = torch.load(ckpt / "training" / "optimizer.pt", map_location=device, weights_only=True)
    except Exception as err:  # weights_only refuses arbitrary pickles: say so, never run them
        raise LibcemError(f"{ckpt}/training/optimizer.pt could not be loaded safely: {err}") from None
    optimizer.load_state_dict(state)
    return int(json.loads((ckpt / "training" / "state.json").read_text())["step"])
