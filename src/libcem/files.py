"""Model folders: weights as safetensors plus a JSON config, written atomically, never pickled.

A model folder holds `model.safetensors` and `config.json` ({"kind", "config", "metadata", ...}).
Where model folders sit inside a training run is `libcem.generative.runs`' business.

A model folder may come from anyone, so `load_model` trusts nothing in it: the record is checked
key by key, the model's size is bounded (parameters and per-image activations, computed on the
`meta` device, which allocates nothing) and every tensor's shape in the safetensors header is
checked against the model before any weight is read; non-finite weights are refused.
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

from libcem.config import ConfigError, from_dict, to_dict, with_saved_defaults
from libcem.errors import LibcemError

WEIGHTS, CONFIG = "model.safetensors", "config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
TRASH_PREFIX = ".trash-"  # a folder renamed away before it is deleted: never read, removed on the next run
MAX_RECORD_BYTES = 64 << 20  # a config.json / state.json larger than this is refused unread
MAX_PARAMETERS = 1_000_000_000  # the most numbers a loaded model may hold (4 GB in float32)
MAX_ACTIVATIONS = 1 << 30  # the most numbers one image may need in one layer (model.activation_elements())
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


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy a file into a temporary file next to `dst`, then rename it over `dst`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, what: str = "file") -> Any:
    """A small JSON file, or a LibcemError that says what is wrong with it (missing, too large, not JSON)."""
    try:
        size = path.stat().st_size
        if size > MAX_RECORD_BYTES:
            raise LibcemError(f"{path} is {size} bytes; a libcem {what} is at most {MAX_RECORD_BYTES}")
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise LibcemError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise LibcemError(f"{path} is not a valid JSON {what}: {str(err)[:200]}") from None


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
    """A model folder's config.json: a JSON object with a string 'kind' and 'config' / 'metadata' objects."""
    path = model_dir / CONFIG
    record = read_json(path, "model record")
    if not isinstance(record, dict):
        raise LibcemError(f"{path} must hold a JSON object, not {type(record).__name__}")
    if not isinstance(record.get("kind"), str):
        raise LibcemError(f"{path} has no 'kind' (tokenizer or prior)")
    for key in ("config", "metadata"):
        if not isinstance(record.get(key, {}), dict):
            raise LibcemError(f"{path}: '{key}' must be a JSON object")
    return record


def tensor_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) from a safetensors file's header, without reading a tensor."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise LibcemError(f"{path} is not a valid safetensors file ({str(err)[:200]}); refusing to load it") from None


FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
DTYPE_NAMES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
               torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL", torch.uint8: "U8"}


def check_tensor_header(path: Path, expected: dict[str, torch.Tensor]) -> None:
    """Every tensor `expected` (a state_dict, on any device, `meta` included) names is in the file
    with the same shape and a compatible dtype, and the file holds nothing else."""
    found = tensor_header(path)
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise LibcemError(f"{path} does not match the model's config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, t in expected.items():
        shape, dtype = found[name]
        want = DTYPE_NAMES.get(t.dtype, str(t.dtype))
        if shape != tuple(t.shape) or not (dtype == want or {dtype, want} <= FLOAT_DTYPES):
            raise LibcemError(f"{path}: tensor '{name}' is {dtype} {list(shape)}; the model's config needs "
                              f"{want} {list(t.shape)}")


def load_weights(path: Path, model: torch.nn.Module, device: str | torch.device = "cpu") -> None:
    """Load a safetensors file into `model` after checking its header against the model; refuses
    NaN or infinite weights."""
    check_tensor_header(path, model.state_dict())
    state = load_tensors(path, device)
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise LibcemError(f"{path}: tensor '{bad[0]}' holds NaN or infinite numbers; refusing to load it")
    model.load_state_dict(state)


def check_model_size(model: torch.nn.Module, where: Path) -> None:
    """Refuse a model (built on the `meta` device) whose weights or activations are beyond the bounds."""
    params = sum(t.numel() for t in model.state_dict().values())
    if params > MAX_PARAMETERS:
        raise LibcemError(f"{where}: the config asks for {params:,} numbers of weights; libcem loads at most "
                          f"{MAX_PARAMETERS:,}")
    acts = model.activation_elements()
    if acts > MAX_ACTIVATIONS:
        raise LibcemError(f"{where}: the config needs {acts:,} numbers per image in one layer; libcem allows at most "
                          f"{MAX_ACTIVATIONS:,}")


def build_model(cls: type[M], cfg_cls: type, record: dict, where: Path) -> tuple[M, dict]:
    """The model a record describes, on the `meta` device (nothing allocated), size-checked; and its kwargs."""
    if record.get("kind") != cls.kind:
        raise LibcemError(f"{where} holds a '{record.get('kind')}', not a '{cls.kind}'")
    try:
        cfg = from_dict(cfg_cls, with_saved_defaults(cfg_cls, record.get("config", {})), prefix="model.")
        meta = to_dict(from_dict(cls.metadata_type, record.get("metadata", {}), prefix="metadata."))
        with torch.device("meta"):
            shell = cls(cfg, **meta)
    except (ConfigError, ValueError) as err:  # ValueError: the constructor's own consistency checks
        raise LibcemError(f"{where}: {err}") from None
    check_model_size(shell, where)
    return shell, meta


def load_model(cls: type[M], cfg_cls: type, model_dir: Path, device: str | torch.device = "cpu",
               record: dict | None = None) -> M:
    """Rebuild `cls(cfg, **metadata)` from a model folder and load its weights (eval mode).

    `record` is the folder's config.json when the caller has read it already. Nothing is allocated
    before the config, the size bounds and the weights' header have been checked."""
    record = read_record(model_dir) if record is None else record
    shell, meta = build_model(cls, cfg_cls, record, model_dir / CONFIG)
    check_tensor_header(model_dir / WEIGHTS, shell.state_dict())
    model = cls(shell.cfg, **meta)
    load_weights(model_dir / WEIGHTS, model, device)
    return model.to(device).eval()


def remove_dir(path: Path) -> None:
    """Rename a folder to a trash name first (atomic), then empty its files and delete it: a kill leaves
    a whole folder or a `.trash-` one, never a half-deleted one under its own name."""
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    empty_files(trash)
    shutil.rmtree(trash)


def empty_files(folder: Path) -> None:
    """Truncate every file below `folder` to 0 bytes: on a Google Drive mount a deleted file goes to
    Drive's trash and keeps counting against the quota, an emptied one does not."""
    for f in folder.rglob("*"):
        if f.is_file() and not f.is_symlink():
            with open(f, "r+b") as handle:
                handle.truncate(0)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place by rename (atomic on one file system)."""
    if final.exists():
        remove_dir(final)
    os.replace(tmp, final)
