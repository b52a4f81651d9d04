"""An on-disk image cache: images decoded once into one raw uint8 file, memory-mapped when read.

`<cache dir>/folders/<key>/` holds `<fingerprint>.u8` ((N, C, S, S) uint8, row after row) and
`index.json` (the fingerprint, the shape, and what the caller stores beside it: captions, labels,
counts). The key names what is cached (a folder, a size, channels); the fingerprint names its
contents (every file's path, size and modification time), so a changed file means a new build,
which replaces the old one. A build writes a temporary file, renames it into place, then writes
the index atomically: a killed build leaves no half cache that a later run would read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from libcem.errors import LibcemError
from libcem.files import atomic_write_json, read_json

CACHE_VERSION = 1
INDEX = "index.json"


def digest(obj) -> str:
    """A stable hex name for a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def open_cache(folder: Path, fingerprint: str) -> tuple[torch.Tensor, dict] | None:
    """The cached images, memory-mapped (N, C, S, S) uint8, and the index; None when there is no
    complete cache of exactly this fingerprint (a damaged index counts as none: it is rebuilt)."""
    try:
        index = read_json(folder / INDEX, "image cache index")
    except LibcemError:
        return None
    if not isinstance(index, dict) or index.get("version") != CACHE_VERSION or index.get("fingerprint") != fingerprint:
        return None
    shape = tuple(index.get("shape", ()))
    data = folder / f"{fingerprint}.u8"
    if len(shape) != 4 or not data.is_file() or data.stat().st_size != int(np.prod(shape)):
        return None
    # copy-on-write: a writable array (torch.from_numpy takes it without a warning) whose pages are read
    # from the file only when touched; nothing is ever written back to the cache
    return torch.from_numpy(np.memmap(data, dtype=np.uint8, mode="c", shape=shape)), index


class CacheWriter:
    """Append (C, S, S) uint8 images to a new cache of `fingerprint`; `commit` publishes it."""

    def __init__(self, folder: Path, fingerprint: str, image_shape: tuple[int, int, int]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.fingerprint, self.image_shape, self.count = folder, fingerprint, tuple(image_shape), 0
        self.tmp = folder / f".{fingerprint}.{os.getpid()}.part"
        self.file = open(self.tmp, "wb")

    def add(self, image: np.ndarray) -> None:
        assert image.shape == self.image_shape and image.dtype == np.uint8, (image.shape, image.dtype)
        self.file.write(np.ascontiguousarray(image).tobytes())
        self.count += 1

    def commit(self, extra: dict) -> tuple[torch.Tensor, dict]:
        """Publish the cache (data file, then index) and remove older builds; returns `open_cache`'s answer."""
        self.file.close()
        name = f"{self.fingerprint}.u8"
        os.replace(self.tmp, self.folder / name)
        index = {**extra, "version": CACHE_VERSION, "fingerprint": self.fingerprint,
                 "shape": [self.count, *self.image_shape]}
        atomic_write_json(self.folder / INDEX, index)
        for old in self.folder.iterdir():
            if old.name != name and (old.suffix == ".u8" or _abandoned(old)):
                old.unlink(missing_ok=True)
        opened = open_cache(self.folder, self.fingerprint)
        assert opened is not None
        return opened

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, *exc) -> None:
        if not self.file.closed:  # not committed: an error or an interrupt
            self.file.close()
            self.tmp.unlink(missing_ok=True)


def _abandoned(path: Path) -> bool:
    """A `.part` file of a build whose process no longer runs (killed mid-build)."""
    parts = path.name.split(".")
    if path.suffix != ".part" or len(parts) < 4 or not parts[-2].isdigit():
        return False
    try:
        os.kill(int(parts[-2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False
