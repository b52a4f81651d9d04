"""`folder:PATH`: photos of any size, decoded once into a memory-mapped on-disk cache.

Captions, by the first convention that applies:
- a `metadata.jsonl` at the top with `file_name` and `text` per line (the Hugging Face imagefolder
  convention);
- a `.txt` file beside an image with the same stem (`cat.jpg` + `cat.txt`: kohya's convention);
- the name of the image's class sub-folder (underscores as spaces), through `data.caption`'s
  template when one is set ("a photo of a {label}").

Only regular files inside PATH are read (symlinks resolved): an entry that points outside it,
a FIFO or device, an unreadable file or a decompression bomb is skipped and counted."""

from __future__ import annotations

import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from libcem.errors import LibcemError
from libcem.generative.data.base import ImageSet
from libcem.generative.data.cache import CacheWriter, digest, open_cache

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
CAPTION_SUFFIX = ".txt"
MAX_CAPTION_BYTES = 64 << 10  # a caption file larger than this is read only this far
DECODE_THREADS = 8  # PIL decodes and resizes without the GIL
DECODE_CHUNK = 256  # images decoded at once (memory: a chunk of small arrays)


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
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return decode_image(path, channels, size)


def decode_image(path: Path, channels: int, size: int = 0) -> np.ndarray | None:
    """`load_image` without touching the warning filters (so threads may call it): an image of more than
    MAX_IMAGE_PIXELS pixels is refused by its size. A large JPEG is decoded at a reduced scale (still at
    least twice `size`) before the antialiased resize."""
    if not path.is_file():  # a FIFO or a device would block or never end
        return None
    try:
        with Image.open(path) as img:
            if img.width * img.height > Image.MAX_IMAGE_PIXELS:
                return None
            if size:
                img.draft(None, (2 * size, 2 * size))
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


@dataclass(frozen=True)
class Entry:
    path: Path
    text: str | None = None  # its own caption, from metadata.jsonl
    caption_file: Path | None = None  # a .txt beside it (kohya's convention)
    label: str | None = None  # its class sub-folder's name, underscores as spaces


def _metadata_entries(root: Path, meta: Path) -> list[Entry]:
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
        out.append(Entry(root / row["file_name"], text=row["text"]))
    return out


def _with_captions(files: list[str], label: str | None) -> list[Entry]:
    """Entries for `files` (sorted paths): a .txt with the stem of an image beside it is that image's caption."""
    split = [os.path.splitext(f) for f in files]
    stems = {stem for stem, ext in split if ext.lower() in IMAGE_SUFFIXES}
    names, out = set(files), []
    for f, (stem, ext) in zip(files, split):
        if ext == CAPTION_SUFFIX and stem in stems:
            continue
        side = stem + CAPTION_SUFFIX
        out.append(Entry(Path(f), caption_file=Path(side) if ext.lower() in IMAGE_SUFFIXES and side in names else None,
                         label=label))
    return out


def _files_below(folder: Path) -> list[str]:
    """Every file below `folder` (FIFOs and links too; symlinked folders are not entered), sorted as paths."""
    out = []
    for parent, _, names in os.walk(folder):
        out += [os.path.join(parent, n) for n in names]
    return sorted(out, key=lambda f: f.split(os.sep))


def entries(root: Path) -> list[Entry]:
    """What `folder:root` holds, in a fixed order: metadata.jsonl's lines, or the class sub-folders'
    files (FIFOs and other non-images too: skipped and counted when decoded), then the top's images."""
    meta = root / "metadata.jsonl"
    if meta.is_file():
        return _metadata_entries(root, meta)
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        out += _with_captions(_files_below(sub), as_text(sub.name).replace("_", " "))
    top = [str(f) for f in sorted(root.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES | {CAPTION_SUFFIX}]
    return out + [e for e in _with_captions(top, None) if e.path.suffix != CAPTION_SUFFIX]


def inside(path: Path, root: Path) -> bool:
    """True when `path`, symlinks resolved, is `root` or lies under it (`root` resolved already)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name the OS rejects
        return False


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # missing, a broken link or a loop: recorded as such, skipped when decoded
        return -1, -1
    return st.st_size, st.st_mtime_ns


def fingerprint(root: Path, items: list[Entry]) -> str:
    """A name for the folder's contents: every file's relative path, size and modification time."""
    files = [e.path for e in items] + [e.caption_file for e in items if e.caption_file]
    if (root / "metadata.jsonl").is_file():
        files.append(root / "metadata.jsonl")
    prefix = os.path.join(str(root), "")
    rel = lambda f: f[len(prefix):] if f.startswith(prefix) else f  # noqa: E731  (relpath is slow)
    return digest([(as_text(rel(str(f))), *_stat(f)) for f in files])


def read_caption(path: Path) -> str | None:
    """The text of a caption file, stripped (at most MAX_CAPTION_BYTES of it), or None if unreadable."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            return f.read(MAX_CAPTION_BYTES).decode("utf-8", "replace").strip()
    except OSError:
        return None


def _decode(entry: Entry, real_root: Path, channels: int, size: int) -> tuple[str, np.ndarray | None, str | None]:
    """('ok' | 'skipped' | 'outside', image, own caption) for one entry."""
    if not inside(entry.path, real_root):
        return "outside", None, None
    arr = decode_image(entry.path, channels, size)
    if arr is None:
        return "skipped", None, None
    text = entry.text
    if entry.caption_file is not None:
        if not inside(entry.caption_file, real_root):
            return "outside", None, None
        text = read_caption(entry.caption_file)
        if text is None:
            return "skipped", None, None
    return "ok", arr, text


def _decoded(items: list[Entry], real_root: Path, channels: int, size: int, desc: str, progress: bool):
    """_decode over `items`, in order, a chunk at a time on a few threads (PIL releases the GIL)."""
    threads = max(1, min(DECODE_THREADS, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool, tqdm(total=len(items), desc=desc, disable=None if progress else True,
                                                    leave=False) as bar:
        for start in range(0, len(items), DECODE_CHUNK):
            chunk = items[start : start + DECODE_CHUNK]
            yield from pool.map(lambda e: _decode(e, real_root, channels, size), chunk)
            bar.update(len(chunk))


def _build(root: Path, real_root: Path, items: list[Entry], folder: Path, fp: str, size: int, channels: int,
           progress: bool):
    t0, counts, texts, labels = time.perf_counter(), {"skipped": 0, "outside": 0}, [], []
    with CacheWriter(folder, fp, (channels, size, size)) as writer, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused by size in decode_image
        for entry, (status, arr, text) in zip(items, _decoded(items, real_root, channels, size, "decode", progress)):
            if status != "ok":
                counts[status] += 1
                continue
            writer.add(arr)
            texts.append(text)
            labels.append(entry.label)
        if writer.count == 0:
            raise LibcemError(
                f"no readable images in {root}: put images in class sub-folders or list them in metadata.jsonl"
            )
        pixels, index = writer.commit({"root": str(real_root), "texts": texts, "labels": labels, **counts})
    if counts["skipped"] or counts["outside"]:
        warnings.warn(f"{root}: skipped {counts['skipped']} file(s) that are not readable images and "
                      f"{counts['outside']} entries outside the folder", stacklevel=3)
    if progress:
        print(f"data: cached {writer.count:,} images from {root} ({counts['skipped']:,} skipped, {counts['outside']:,} "
              f"outside) in {time.perf_counter() - t0:.0f} s, in {folder}", flush=True)
    return pixels, index


def folder_images(path: str, size: int, channels: int, template: str, cache_root: Path,
                  progress: bool = False) -> ImageSet:
    """All readable images of `folder:path` as size x size, memory-mapped from the cache (built first
    when the folder has changed since the last build, or was never cached)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise LibcemError(f"data folder {root} does not exist")
    real_root = root.resolve()
    items = entries(root)
    fp = fingerprint(root, items)
    folder = cache_root / "folders" / digest([str(real_root), size, channels])
    opened = open_cache(folder, fp)
    if opened is None:
        opened = _build(root, real_root, items, folder, fp, size, channels, progress)
    elif progress:
        print(f"data: {opened[1]['shape'][0]:,} images of {root} from its cache {folder} "
              f"({opened[1]['skipped']:,} files skipped when it was built)", flush=True)
    return _imageset(*opened, template)


def _imageset(pixels, index: dict, template: str) -> ImageSet:
    """Captions: a file's own text, else its class through `template` (or the class name), else ''."""
    texts, labels = index["texts"], index["labels"]
    captions = [t if t is not None else (template.format(label=c) if template else c) if c is not None else ""
                for t, c in zip(texts, labels)]
    out_labels, out_names = {}, {}
    out_labels["caption"], out_names["caption"] = indexed(captions)
    if all(c is not None for c in labels):  # every image in a class sub-folder: a class label too
        out_labels["class"], out_names["class"] = indexed(labels)
    return ImageSet(pixels, captions, out_labels, out_names)


def indexed(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Values -> (their indices into the sorted distinct values, those values)."""
    names = sorted(set(values))
    lookup = {v: i for i, v in enumerate(names)}
    return np.array([lookup[v] for v in values], dtype=np.int64), names
