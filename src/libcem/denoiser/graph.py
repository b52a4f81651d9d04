"""Graph Laplacian of a patch group and its spectrum (graph Fourier transform), batched."""

from __future__ import annotations

import torch


def laplacian(weights: torch.Tensor) -> torch.Tensor:
    """Combinatorial Laplacian L = D - W of symmetric weights (G, K, K)."""
    return torch.diag_embed(weights.sum(-1)) - weights


def spectrum(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (G, K) ascending and eigenvectors (G, K, K) of L, graph-DC mode first.

    L 1 = 0 always; shifting the constant direction to -1 before `eigh` makes mode 0 exactly the
    group mean even when the graph is disconnected, then its eigenvalue is set back to 0.
    """
    k = weights.shape[-1]
    lap = laplacian(weights) - torch.full_like(weights, 1.0 / k)
    lam, vec = torch.linalg.eigh(lap)
    lam = lam.clamp_min(0.0)
    lam[:, 0] = 0.0
    return lam, vec


def graph_diffusion_gain(lam: torch.Tensor, tau: float) -> torch.Tensor:
    """Spectral response 1 / (1 + tau lambda) of the implicit graph-diffusion step (I + tau L)^-1."""
    return 1.0 / (1.0 + tau * lam)
