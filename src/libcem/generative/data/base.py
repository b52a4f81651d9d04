"""A labelled image set (in memory or memory-mapped), its train/held-out splits, training augmentation,
and a resumable batch order."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import torch


@dataclass(frozen=True)
class Augment:
    """Training augmentation, drawn from the step's generator (so a resumed run repeats itself)."""

    flip: bool = False  # a horizontal flip for half the examples
    random_crop: bool = False  # a random size x size window of the stored image (else the centre one)

    @property
    def active(self) -> bool:
        return self.flip or self.random_crop


@dataclass
class ImageSet:
    """Images as uint8, one caption per image, and named integer labels.

    `pixels` (M, C, S, S) may be a memory-mapped file; the set's images are its rows `rows` (all when
    None), centre-cropped to `out_size` (0: S). Only the rows a call asks for are read.
    `labels["family"][i]` indexes `label_names["family"]`; sources without labels leave both empty.
    """

    pixels: torch.Tensor  # (M, C, S, S) uint8
    captions: list[str]
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    label_names: dict[str, list[str]] = field(default_factory=dict)
    rows: np.ndarray | None = None  # (N,) int64 rows of `pixels`; None: all of them
    out_size: int = 0  # the images' size: a centre (or, in `augmented`, random) crop of S; 0: S
    augment: Augment = field(default_factory=Augment)  # what `augmented` does (training split only)

    def __post_init__(self) -> None:
        assert self.pixels.dtype == torch.uint8 and self.pixels.ndim == 4, self.pixels.shape
        assert len(self.captions) == len(self), (len(self.captions), len(self))
        assert self.out_size <= self.pixels.shape[-1]

    def __len__(self) -> int:
        return len(self.pixels) if self.rows is None else len(self.rows)

    @property
    def channels(self) -> int:
        return self.pixels.shape[1]

    @property
    def size(self) -> int:
        return self.out_size or self.pixels.shape[-1]

    @property
    def images(self) -> torch.Tensor:
        """All images, (N, C, H, W) uint8, in memory: for small sets; training reads batches (`floats`)."""
        return self.uint8()

    def subset(self, idx: np.ndarray) -> "ImageSet":
        """The images `idx`, sharing `pixels` (nothing is copied)."""
        idx = np.asarray(idx, dtype=np.int64)
        rows = idx if self.rows is None else self.rows[idx]
        return replace(self, captions=[self.captions[i] for i in idx], labels={k: v[idx] for k, v in self.labels.items()},
                       rows=rows)

    def _read(self, idx: np.ndarray | torch.Tensor | None) -> torch.Tensor:
        """The stored rows of images `idx`, (B, C, S, S) uint8, copied out of `pixels`."""
        if idx is None:
            rows = self.rows
        else:
            idx = np.asarray(torch.as_tensor(idx, dtype=torch.long).reshape(-1))
            rows = idx if self.rows is None else self.rows[idx]
        if rows is None:
            return self.pixels.clone()
        return self.pixels[torch.from_numpy(np.asarray(rows, dtype=np.int64))]

    def uint8(self, idx: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Images `idx` (all when None), centre-cropped, (B, C, H, W) uint8."""
        x = self._read(idx)
        m = x.shape[-1] - self.size
        return x[..., m // 2 : m // 2 + self.size, m // 2 : m // 2 + self.size] if m else x

    def floats(self, idx: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] as float32, (B, C, H, W): centre crops, never flipped."""
        return self.uint8(idx).float() / 255.0

    def augmented(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training images `idx` in [0, 1], (B, C, H, W), augmented by `self.augment` with draws from
        `generator` (none when there is no augmentation, so the generator's stream is unchanged)."""
        if not self.augment.active:
            return self.floats(idx)
        x = self._read(idx)
        b, s, m = len(x), self.size, x.shape[-1] - self.size
        if self.augment.random_crop:
            offsets = torch.randint(0, m + 1, (b, 2), generator=generator)
        else:
            offsets = torch.full((b, 2), m // 2)
        x = torch.stack([x[i, :, top : top + s, left : left + s] for i, (top, left) in enumerate(offsets.tolist())])
        if self.augment.flip:
            flip = torch.rand(b, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x.float() / 255.0

    def with_augment(self, augment: Augment) -> "ImageSet":
        return replace(self, augment=augment)


@dataclass
class Splits:
    train: ImageSet
    test: ImageSet  # the fixed held-out split used for evaluation


def held_out_size(n: int, requested: int) -> int:
    """How many of `n` images to hold out: `requested`, but at most a tenth of them (at least one),
    so that a small data set keeps nine tenths of its images for training."""
    return max(1, min(requested, n // 10))


def split_fixed(data: ImageSet, n_test: int, seed: int = 0) -> Splits:
    """A fixed held-out split: a seeded permutation, the last `held_out_size(len(data), n_test)` images
    held out (a warning says so when that is fewer than `n_test`)."""
    if len(data) < 2:
        return Splits(data, data)
    k = held_out_size(len(data), n_test)
    if k < n_test:
        warnings.warn(f"{len(data)} images: holding out {k} for evaluation instead of data.test_size={n_test}, "
                      f"so that {len(data) - k} remain for training", stacklevel=2)
    n_test = k
    perm = np.random.default_rng(seed).permutation(len(data))
    return Splits(data.subset(np.sort(perm[:-n_test])), data.subset(np.sort(perm[-n_test:])))


def evenly_spaced(n: int, k: int) -> torch.Tensor:
    """min(n, k) indices evenly spread over range(n), for a grid that shows a whole split (held-out
    splits may be sorted by class)."""
    return torch.linspace(0, n - 1, min(n, k)).round().long()


def batch_indices(step: int, batch: int, n: int, seed: int) -> torch.Tensor:
    """The indices of global batch `step`: epochs are seeded permutations, read in order.

    A pure function of (step, batch, n, seed), so a resumed run sees exactly the batches an
    uninterrupted run would have seen.
    """
    start = step * batch
    pos = torch.arange(start, start + batch)
    epochs = pos // n
    out = torch.empty(batch, dtype=torch.long)
    for e in torch.unique(epochs).tolist():
        g = torch.Generator().manual_seed(seed * 1_000_003 + e)
        perm = torch.randperm(n, generator=g)
        mask = epochs == e
        out[mask] = perm[pos[mask] % n]
    return out
