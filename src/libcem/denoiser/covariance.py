"""Second pass with a full patch covariance per group: the NL-Bayes step 2.

Lebrun, Buades & Morel, "A nonlocal Bayesian image denoising algorithm", SIAM J. Imaging
Sciences 2013. Per group (K patches matched on the pilot) and per channel, the patches are
modelled as x ~ N(mu, C) with C the sample covariance of the pilot's patches, and each noisy
patch z = x + n, n ~ N(0, sigma^2 I), is replaced by its posterior mean

    x_hat = mu + C (C + sigma^2 I)^-1 (z - mu),        mu = mean of the K noisy patches.

With A the (K, d) centred pilot patches and C = A^T A / K, Woodbury gives the same map as a
K x K solve, C (C + sigma^2 I)^-1 = A^T (A A^T + K sigma^2 I)^-1 A, so the cost does not grow
with the patch dimension d = p * p.
"""

from __future__ import annotations

import torch


def posterior_mean(z: torch.Tensor, pilot: torch.Tensor,
                   sigma2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayes estimate of the patches z (G, K, d) under N(mean z, cov of pilot (G, K, d)).

    Returns the estimate (G, K, d) and tr C (C + sigma^2 I)^-1 per group (G,), the number of
    directions kept (the aggregation weight is its inverse, as BM3D weights by its count).
    """
    k = z.shape[1]
    mu = z.mean(1, keepdim=True)
    a = pilot - pilot.mean(1, keepdim=True)  # (G, K, d)
    gram = a @ a.transpose(1, 2)  # (G, K, K)
    eye = torch.eye(k, dtype=z.dtype, device=z.device)
    inner = torch.linalg.solve(gram + k * sigma2 * eye, a)  # (G, K, d)
    kept = (a * inner).sum((1, 2))  # tr (A A^T + K s2 I)^-1 A A^T
    return mu + ((z - mu) @ a.transpose(1, 2)) @ inner, kept
