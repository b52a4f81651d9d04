"""`folder:PATH`: images in class sub-folders (folder name = caption), or a `metadata.jsonl`
with `file_name` and `text` per line (the Hugging Face imagefolder convention).

Only regular files inside PATH are read (symlinks resolved): an entry that points outside it,
a FIFO or device, an unreadable file or a decompression bomb is skipped and counted."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from libcem.errors import LibcemError
from libcem.generative.data.base import ImageSet, Splits, split_fixed

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL image to 8-bit L (channels=1) or RGB (channels=3).

    16-bit images are rescaled to 8 bits; transparency is composited on white.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I") and arr.max() > 255 else max(arr.max(), 1.0)
        img = Image.fromarray(np.clip(np.rint(arr / peak * 255), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def square_resize(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square, then resize to size x size (bicubic, antialiased)."""
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return img.crop(box).resize((size, size), Image.BICUBIC, reducing_gap=None)


def load_image(path: Path, channels: int, size: int = 0) -> np.ndarray | None:
    """One image as (C, H, W) uint8 (square-resized when `size`), or None if it is not a readable image
    (not a regular file, not an image, or more than PIL's MAX_IMAGE_PIXELS pixels: a decompression bomb)."""
    if not path.is_file():  # a FIFO or a device would block or never end
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = to_mode(img, channels)
                arr = np.array(square_resize(img, size) if size else img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning):
        return None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def as_text(name: str) -> str:
    """A file name as valid UTF-8 text (bytes that are not UTF-8 become U+FFFD), for captions."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _metadata_entries(root: Path, meta: Path) -> list[tuple[Path, str]]:
    out = []
    for n, raw in enumerate(meta.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise LibcemError(f"{meta}:{n}: the line is not UTF-8 text") from None
        except ValueError:
            row = None
        if not (isinstance(row, dict) and isinstance(row.get("file_name"), str) and isinstance(row.get("text"), str)):
            raise LibcemError(f"{meta}:{n}: each line must be a JSON object with a string 'file_name' and 'text'")
        out.append((root / row["file_name"], row["text"]))
    return out


def _entries(root: Path) -> list[tuple[Path, str]]:
    meta = root / "metadata.jsonl"
    if meta.is_file():
        return _metadata_entries(root, meta)
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        caption = as_text(sub.name).replace("_", " ")
        out += [(f, caption) for f in sorted(sub.rglob("*")) if not f.is_dir()]  # FIFOs too: skipped, counted
    out += [(f, "") for f in sorted(root.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    return out


def inside(path: Path, root: Path) -> bool:
    """True when `path`, symlinks resolved, is `root` or lies under it (`root` resolved already)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name the OS rejects
        return False


def load_folder(path: str, size: int, channels: int, n_test: int) -> Splits:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise LibcemError(f"data folder {root} does not exist")
    real_root = root.resolve()
    arrays, captions, skipped, outside = [], [], 0, 0
    for file, caption in _entries(root):
        if not inside(file, real_root):
            outside += 1
            continue
        arr = load_image(file, channels, size)
        if arr is None:
            skipped += 1
            continue
        arrays.append(arr)
        captions.append(caption)
    if skipped or outside:
        warnings.warn(f"{root}: skipped {skipped} file(s) that are not readable images and {outside} entries "
                      "outside the folder", stacklevel=2)
    if not arrays:
        raise LibcemError(
            f"no readable images in {root}: put images in class sub-folders or list them in metadata.jsonl"
        )
    names = sorted(set(captions))
    labels = np.array([names.index(c) for c in captions])
    data = ImageSet(torch.from_numpy(np.stack(arrays)), captions, {"caption": labels}, {"caption": names})
    return split_fixed(data, n_test, seed=0)
