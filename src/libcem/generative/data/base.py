"""An in-memory labelled image set, its train/held-out splits, and a resumable batch order."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W), one caption per image, and named integer labels.

    `labels["family"][i]` indexes `label_names["family"]`; sources without labels leave both empty.
    """

    images: torch.Tensor  # (N, C, H, W) uint8
    captions: list[str]
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    label_names: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.ndim == 4, self.images.shape
        assert len(self.captions) == len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    def subset(self, idx: np.ndarray) -> "ImageSet":
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(
            self.images[torch.from_numpy(idx)],
            [self.captions[i] for i in idx],
            {k: v[idx] for k, v in self.labels.items()},
            self.label_names,
        )

    def floats(self, idx: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] as float32, (B, C, H, W)."""
        x = self.images if idx is None else self.images[torch.as_tensor(idx, dtype=torch.long)]
        return x.float() / 255.0


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
