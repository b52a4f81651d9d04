"""Graph Laplacian of a patch group and its spectrum (graph Fourier transform), batched."""

from __future__ import annotations

import torch


def laplacian(weights: torch.Tensor) -> torch.Tensor:
    """Combinatorial Laplacian L = D - W of symmetric weights (G, K, K)."""
    return torch.diag_embed(weights.sum(-1)) - weights


def diffusion_residual(x: torch.Tensor, weights: torch.Tensor, tau: float) -> torch.Tensor:
    """(tau / a)(lbar X - L X) for each group's X (K, n): x (C * G, K, n), channel by channel
    over the G groups of weights (G, K, K); lbar = tr L / (K - 1), the mean of L's proper
    eigenvalues, and a = 1 + tau lbar.

    It is the graph-diffusion part of one step toward the posterior mean of a matrix-normal
    group model whose group-axis precision is (I + tau L) / a, its proper modes' precision
    averaging 1 (`covariance.posterior_mean`): zero on a complete graph and on the group mean,
    it moves each member toward its neighbours (lbar X - L X = (lbar - D) X + W X)."""
    g, k = weights.shape[0], weights.shape[-1]
    deg = weights.sum(-1)  # (G, K)
    lbar = deg.sum(-1) / (k - 1)  # tr L / (K - 1)
    scale = (tau / (1.0 + tau * lbar))[:, None, None]
    xs = x.unflatten(0, (-1, g))  # (C, G, K, n)
    out = torch.empty_like(xs)
    for c in range(xs.shape[0]):  # channel by channel: `matmul` would copy the weights C times
        torch.bmm(weights, xs[c], out=out[c])
    out.addcmul_((lbar[:, None] - deg)[..., None], xs)
    return out.mul_(scale).flatten(0, 1)


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
