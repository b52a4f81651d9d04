"""Evaluation pieces with exact answers: the Frechet distance, and the label choice per data source."""

import numpy as np
import pytest
import torch

from libcem.errors import LibcemError
from libcem.generative.data import ImageSet
from libcem.generative.evaluation import eval_labels, frechet_distance
from libcem.generative.evaluation.classifier import train_classifier


def test_frechet_distance_closed_forms():
    x = torch.randn(2000, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # same covariance: only the means differ
    assert frechet_distance(x, x + shift) == pytest.approx(float((shift**2).sum()), rel=1e-6)
    # scaling by 2: Tr(S + 4S - 2 * 2S) = Tr(S)
    trace = float(torch.cov(x.T).trace())
    assert frechet_distance(x, 2 * x) == pytest.approx(trace + float((x.mean(0) ** 2).sum()), rel=1e-6)
    with pytest.raises(LibcemError, match="at least 2"):
        frechet_distance(x[:1], x)


def test_eval_labels_defaults_and_errors():
    data = ImageSet(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), ["a", "b"], {"digit": np.array([0, 1])},
                    {"digit": ["zero", "one"]})
    assert eval_labels("digits", data) == ["digit"]
    assert eval_labels("folder:x", data) == ["digit"]
    with pytest.raises(LibcemError, match="no label 'family'"):
        eval_labels("digits", data, ["family"])


def test_classifier_learns_a_trivial_label():
    """Bright vs dark images: a few steps suffice to separate them."""
    g = torch.Generator().manual_seed(0)
    labels = np.arange(64) % 2
    images = (torch.rand(64, 1, 12, 12, generator=g) * 60 + torch.from_numpy(labels).view(-1, 1, 1, 1) * 180).to(torch.uint8)
    data = ImageSet(images, ["x"] * 64, {"bright": labels}, {"bright": ["dark", "bright"]})
    model = train_classifier(data, "bright", steps=40, batch=32, progress=False)
    pred, feats = model.apply_batched(data.floats())
    assert feats.shape == (64, 64)
    assert (pred.numpy() == labels).mean() == 1.0
