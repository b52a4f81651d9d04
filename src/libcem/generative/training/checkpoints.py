"""Training checkpoints: a model folder (inference weights) plus what resuming needs, each tensor once.

checkpoints/step_00001000/
    model.safetensors, config.json     inference weights (the EMA shadow when enabled): from_pretrained
    training/raw.safetensors           the live weights and buffers (only with EMA: else model.safetensors)
    training/optimizer.pt              optimizer state, loaded with weights_only=True
    training/NAME.safetensors          a Task's auxiliary network (e.g. discriminator), when it has one,
    training/NAME_optimizer.pt         and its optimizer state
    training/state.json                {"step": 1000, "window": ...}, written last
Each checkpoint is written into a temporary folder and renamed into place, so a process
killed at any moment leaves either the complete checkpoint or none. An old checkpoint is
renamed to a `.trash-` folder and its files are emptied before it is deleted, so a kill never
leaves a half-deleted one under a checkpoint's name, and on a Google Drive mount (where a deleted
file goes to Drive's trash and keeps counting against the quota) nothing of it is kept. Checkpoints
written before the slim layout also hold training/ema.safetensors (then read for the EMA shadow).
`window` holds the metrics summed since the last metrics.jsonl row (and over how many steps each
was reported), so the row after a resume averages the same steps as an uninterrupted run's.
A checkpoint without an auxiliary network's files (written before it was switched on) loads with a
warning, and the auxiliary network starts fresh.
"""

from __future__ import annotations

import io
import math
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from libcem.errors import LibcemError
from libcem.files import (
    WEIGHTS,
    atomic_write_bytes,
    atomic_write_json,
    load_weights,
    read_json,
    remove_dir,
    replace_dir,
    save_model,
    save_tensors,
)
from libcem.generative.runs import STATE, StageRun, step_name


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
    progress: dict | None = None,
    auxiliary: tuple[str, nn.Module, torch.optim.Optimizer] | None = None,
) -> Path:
    """Write checkpoint `step` (`progress`: more JSON for state.json; `auxiliary`: (name, network, its
    optimizer) of a second network), then keep only the last `keep`.

    A write that fails (a full disk) removes its temporary folder and raises a LibcemError."""
    final, tmp = run.checkpoint(step), run.partial_checkpoint(step)
    try:
        if tmp.exists():
            remove_dir(tmp)
        (tmp / "training").mkdir(parents=True)
        save_model(tmp, ema_model if ema_model is not None else model, {"step": step, **extra})
        if ema_model is not None:  # without EMA the live weights are model.safetensors
            save_tensors(tmp / "training" / "raw.safetensors", model.state_dict())
        save_optimizer(tmp / "training" / "optimizer.pt", optimizer)
        if auxiliary is not None:
            name, aux_model, aux_opt = auxiliary
            save_tensors(tmp / "training" / f"{name}.safetensors", aux_model.state_dict())
            save_optimizer(tmp / "training" / f"{name}_optimizer.pt", aux_opt)
        atomic_write_json(tmp / STATE, {**(progress or {}), "step": step})
        replace_dir(tmp, final)
        for old in run.checkpoints()[:-keep]:
            remove_dir(old)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)  # best effort: a full disk may refuse even this
        raise LibcemError(f"could not write checkpoint {final} ({err.strerror or err}); "
                          "the previous checkpoints are intact") from None
    return final


def save_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    buf = io.BytesIO()
    torch.save(optimizer.state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def read_state(ckpt: Path) -> dict:
    """A checkpoint's training/state.json: a JSON object whose 'step' is the folder's step."""
    state = read_json(ckpt / STATE, "training state")
    step = state.get("step") if isinstance(state, dict) else None
    if not is_int(step) or step_name(step) != ckpt.name or not valid_window(state.get("window")):
        raise LibcemError(f"{ckpt / STATE} is not this checkpoint's training state; delete {ckpt} to resume "
                          "from the one before it")
    return state


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def valid_window(window) -> bool:
    """None, or {"n": steps >= 0, "sums": {name: finite number}, "seconds": number >= 0}."""
    if window is None:
        return True
    if not isinstance(window, dict) or not is_int(window.get("n")) or window["n"] < 0:
        return False
    sums, seconds, counts = window.get("sums"), window.get("seconds"), window.get("counts", {})
    numbers = [*sums.values(), seconds] if isinstance(sums, dict) else [None]
    counted = isinstance(counts, dict) and all(k in sums and is_int(c) and 1 <= c <= window["n"]
                                               for k, c in counts.items())
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers) \
        and seconds >= 0 and counted


def load_checkpoint(
    ckpt: Path,
    model: nn.Module,
    ema_model: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    auxiliary: tuple[str, nn.Module, torch.optim.Optimizer] | None = None,
) -> int:
    """Restore weights, EMA and optimizer (and `auxiliary`: (name, network, its optimizer)) from
    `ckpt`; returns its state.json (with its 'step').

    Every tensor's shape is checked against the model first: a checkpoint of another model size is
    a LibcemError, not a half-loaded model. A checkpoint without the auxiliary network's files
    leaves it as it is, with a warning."""
    state = read_state(ckpt)
    device = next(model.parameters()).device
    raw, ema, inference = (ckpt / "training" / "raw.safetensors", ckpt / "training" / "ema.safetensors",
                           ckpt / WEIGHTS)
    if not inference.is_file():
        raise LibcemError(f"{ckpt} is not a complete checkpoint (no {WEIGHTS}); delete it to resume from the one before")
    load_weights(raw if raw.is_file() else inference, model, device)
    if ema_model is not None:  # the shadow is the inference weights; older checkpoints kept a copy in ema
        load_weights(ema if ema.is_file() else inference, ema_model, device)
    load_optimizer(ckpt / "training" / "optimizer.pt", optimizer, device)
    if auxiliary is not None:
        load_auxiliary(ckpt, *auxiliary)
    return state


def load_auxiliary(ckpt: Path, name: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The auxiliary network `name` and its optimizer from `ckpt`; a checkpoint without them (written
    before the network was switched on) leaves both as they are, with a warning."""
    weights, opt = ckpt / "training" / f"{name}.safetensors", ckpt / "training" / f"{name}_optimizer.pt"
    if not weights.exists() and not opt.exists():
        warnings.warn(f"{ckpt} has no {name} (it was written without one): the {name} starts fresh", stacklevel=3)
        return
    if not (weights.is_file() and opt.is_file()):
        raise LibcemError(f"{ckpt} holds only part of the {name} ({weights.name}, {opt.name}); delete the "
                          "checkpoint to resume from the one before")
    load_weights(weights, model, next(model.parameters()).device)
    load_optimizer(opt, optimizer, next(model.parameters()).device)


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    try:
        opt_state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # weights_only refuses arbitrary pickles: say so, never run them
        raise LibcemError(f"{path} could not be loaded safely: {str(err)[:200]}") from None
    try:
        optimizer.load_state_dict(opt_state)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise LibcemError(f"{path} does not match the model: {str(err)[:200]}") from None
