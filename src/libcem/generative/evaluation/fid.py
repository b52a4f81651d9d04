"""The Frechet distance between two feature sets (Heusel et al. 2017, "GANs trained by a two time-scale ...")."""

from __future__ import annotations

import numpy as np
import torch

from libcem.errors import LibcemError


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) for features a (N, F) and b (M, F).

    Tr (S_a S_b)^(1/2) is the sum of the square roots of the eigenvalues of S_a S_b, which are those
    of the symmetric R S_b R with R = S_a^(1/2): two symmetric eigendecompositions, exact also when
    fewer images than features make the covariances singular (where a general matrix square root
    warns and loses accuracy)."""
    if min(len(a), len(b)) < 2:
        raise LibcemError("a Frechet distance needs at least 2 images on each side")
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    trace_root = np.sqrt(np.clip(cross, 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_root)
