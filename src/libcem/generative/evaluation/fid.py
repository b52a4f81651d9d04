"""The Frechet distance between two feature sets (Heusel et al. 2017, "GANs trained by a two time-scale ...")."""

from __future__ import annotations

import numpy as np
import torch

from libcem.errors import LibcemError


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) for features a (N, F) and b (M, F)."""
    from scipy import linalg

    if min(len(a), len(b)) < 2:
        raise LibcemError("a Frechet distance needs at least 2 images on each side")
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    covmean = covmean.real  # sqrtm of a product of PSD matrices: imaginary parts are round-off
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))
