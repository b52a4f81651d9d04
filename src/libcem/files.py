"""Model folders: weights as safetensors plus a JSON config, written atomically, never pickled.

A model folder holds `model.safetensors` and `config.json` ({"kind", "config", "metadata", ...}).
Where model folders sit inside a training run is `libcem.generative.runs`' business.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from libcem.config import from_dict, to_dict
from libcem.errors import LibcemError

WEIGHTS, CONFIG = "model.safetensors", "config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
M = TypeVar("M")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> None:
    """Atomic safetensors write (tensors made contiguous and moved to CPU)."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file(clean, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything else (a pickle included) is refused with a clear error."""
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise LibcemError(f"{path} is not a valid safetensors file ({err}); refusing to load it") from None


def model_record(model: Any, extra: dict | None = None) -> dict:
    from libcem import __version__

    return {
        "kind": model.kind,
        "config": to_dict(model.cfg),
        "metadata": model.metadata(),
        "libcem_version": __version__,
        **(extra or {}),
    }


def save_model(path: str | Path, model: Any, extra: dict | None = None) -> None:
    """Write `model.safetensors` and `config.json` into folder `path` (each file atomically)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_tensors(path / WEIGHTS, model.state_dict())
    atomic_write_json(path / CONFIG, model_record(model, extra))


def read_record(model_dir: Path) -> dict:
    try:
        return json.loads((model_dir / CONFIG).read_text())
    except json.JSONDecodeError as err:
        raise LibcemError(f"{model_dir / CONFIG} is not valid JSON: {err}") from None


def load_model(cls: type[M], cfg_cls: type, model_dir: Path, device: str | torch.device = "cpu",
               record: dict | None = None) -> M:
    """Rebuild `cls(cfg, **metadata)` from a model folder and load its weights (eval mode).

    `record` is the folder's config.json when the caller has read it already."""
    record = read_record(model_dir) if record is None else record
    if record.get("kind") != cls.kind:
        raise LibcemError(f"{model_dir} holds a '{record.get('kind')}', not a '{cls.kind}'")
    model = cls(from_dict(cfg_cls, record["config"]), **record.get("metadata", {}))
    state = load_tensors(model_dir / WEIGHTS, device)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LibcemError(f"{model_dir}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval()


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place by rename (atomic on one file system)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
