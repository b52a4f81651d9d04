"""Second pass with a full patch covariance per group: the NL-Bayes step 2, refined by EM.

Lebrun, Buades & Morel, "A nonlocal Bayesian image denoising algorithm", SIAM J. Imaging
Sciences 2013. Per group (K patches matched on the pilot) and per channel, the patches are
modelled as x ~ N(mu, C) with C the sample covariance of the pilot's patches, and each noisy
patch z = x + n, n ~ N(0, sigma^2 I), is replaced by its posterior mean

    x_hat = mu + C (C + sigma^2 I)^-1 (z - mu),        mu = mean of the K noisy patches.

With A the (K, d) centred pilot patches and C = A^T A / K, the map is computed in whichever of
two equal forms has the smaller matrix: for d <= K (7x7 patches, K = 64) through the d x d
inverse of M = A^T A + K sigma^2 I, as x_hat = z - K sigma^2 (z - mu) M^-1 (since
C (C + sigma^2 I)^-1 = I - K sigma^2 M^-1); for d > K through Woodbury's K x K system,
C (C + sigma^2 I)^-1 = A^T (A A^T + K sigma^2 I)^-1 A. Both are symmetric positive definite;
the d x d Cholesky form was 2.3x faster than a K x K LU solve at d = 49, K = 64 (one thread),
and since session 27 `linalg.spd_inverse` inverts the well-conditioned M by blocks, faster
still (the figures are in its docstring).

The pilot is a smoothed estimate, so its covariance is too small in the directions it
flattened. `em_covariance` refits C to the noisy patches themselves by EM, starting from the
pilot's (the settings `cov_em_iter_gray`, `cov_em_iter_color`): on a Train400 split, two
iterations gained 0.08 dB at sigma 15 and 0.09 dB at 25 on gray images (docs/denoise-log.md, session 8).

The K patches of a group are alike, so their signals are not independent either: a
matrix-normal group model X ~ MN(mu, R, C) adds a covariance R along the group axis, R^-1 =
(I + tau L) / a with L the Laplacian of an attention graph over the members (graph
diffusion's precision, as in the first pass) and a = 1 + tau tr L / (K - 1), so that the
proper modes' precision averages 1 as in the model above. Its posterior mean M solves
(sigma^2 / a)(M + tau L M) + M C = Z C. Started from the estimate above, M0 = Z C (C + sigma^2
I)^-1, and preconditioned by (C + sigma^2 I)^-1, one Richardson step is cheap:
M0 + `graph.diffusion_residual`(M0) sigma^2 (C + sigma^2 I)^-1, within 3% of the exact
solution on synthetic groups (two `eigh` per group; session 30). In the first covariance pass
(the setting `cov_graph_tau`) it gained 0.011-0.018 dB on two gray Train400 draws and
0.03-0.04 dB on the skimage colour crops, for about 1.15x the time (session 31,
docs/denoise-log.md).

The group mean mu carries noise of variance sigma^2 / K that the formula above passes on; in
flat groups `flat_group_means` denoises it too (session 30).
"""

from __future__ import annotations

import functools
import math

import torch

from libcem.denoiser.graph import diffusion_residual
from libcem.denoiser.linalg import spd_inverse
from libcem.denoiser.patches import dct_matrix

SHRINK_FLOOR = 1e-4  # noise variance at least this fraction of a group's mean patch variance
SPLIT_DEVICES = ("cpu",)  # where `_split_by_spread` takes the groups apart (elsewhere: both forms)


def posterior_mean(z: torch.Tensor, pilot: torch.Tensor, sigma2: float, em_iter: int = 0,
                   prior: float = 0.0, to_diagonal: float = 0.0, flat: float = 0.0,
                   graph: torch.Tensor | None = None, tau: float = 0.0, diagonal_below: float = 0.0,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayes estimate of the patches z (G, K, d) under N(mean z, C), C from the pilot (G, K, d).

    em_iter = 0: C is the pilot's sample covariance C0 (NL-Bayes). em_iter > 0: C is then
    refined by that many EM iterations on the noisy patches themselves (`em_covariance`, with
    `prior` weighting C0). to_diagonal: C0 first shrunk by this fraction toward its diagonal
    in the patch DCT (`toward_dct_diagonal`; d must be a square). flat: in the groups whose
    pilot varies by less than flat x sigma^2, the mean patch is denoised too
    (`flat_group_means`). graph (G0, K, K), edge weights over the members of each of the G0
    groups of which z holds G / G0 channels, and tau > 0: the group axis gets a graph prior
    too, one step toward a matrix-normal model's posterior mean (module docstring). Returns
    the estimate (G, K, d) and tr C (C + sigma^2 I)^-1 per group (G,), the number of
    directions kept (the aggregation weight is its inverse, as BM3D weights by its count).
    diagonal_below (em_iter = 0 only): the groups whose pilot's members vary by less than
    diagonal_below x sigma^2 per pixel (tr C0 / d) take C0 all the way at its DCT diagonal
    (to_diagonal = 1), the others `to_diagonal`.
    """
    graph = graph if tau > 0 else None
    if diagonal_below > 0 and em_iter == 0 and to_diagonal < 1:
        est, kept = _split_by_spread(z, pilot, sigma2, prior, to_diagonal, graph, tau, diagonal_below)
    else:
        est, kept = _posterior_mean(z, pilot, sigma2, em_iter, prior, to_diagonal, graph, tau)
    if flat > 0:
        est = est + flat_group_means(z.mean(1), pilot, sigma2, flat)[:, None]
    return est, kept


def _split_by_spread(z: torch.Tensor, pilot: torch.Tensor, sigma2: float, prior: float,
                     to_diagonal: float, graph: torch.Tensor | None, tau: float, below: float,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """`_posterior_mean` without EM, the weak groups (`posterior_mean`'s diagonal_below) at
    their DCT diagonal and the others shrunk by to_diagonal. On the CPU each group takes one
    form; elsewhere every group takes both and each keeps its own, since picking the groups
    reads their number back from the device."""
    weak = (pilot - pilot.mean(1, keepdim=True)).square().mean((1, 2)) < below * sigma2  # (G,)
    if z.device.type not in SPLIT_DEVICES:
        diag = _posterior_mean(z, pilot, sigma2, 0, prior, 1.0, graph, tau)
        full = _posterior_mean(z, pilot, sigma2, 0, prior, to_diagonal, graph, tau)
        return torch.where(weak[:, None, None], diag[0], full[0]), torch.where(weak, diag[1], full[1])
    rows = graph.repeat(z.shape[0] // graph.shape[0], 1, 1) if graph is not None else None
    est, kept = torch.empty_like(z), z.new_empty(z.shape[0])
    for sel, weight in ((weak, 1.0), (~weak, to_diagonal)):
        part = rows[sel] if rows is not None else None
        est[sel], kept[sel] = _posterior_mean(z[sel], pilot[sel], sigma2, 0, prior, weight, part, tau)
    return est, kept


def _posterior_mean(z: torch.Tensor, pilot: torch.Tensor, sigma2: float, em_iter: int,
                    prior: float, to_diagonal: float, graph: torch.Tensor | None, tau: float,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    k, d = z.shape[1], z.shape[2]
    mu = z.mean(1, keepdim=True)
    a = pilot - pilot.mean(1, keepdim=True)  # (G, K, d)
    if em_iter > 0:
        zc = z - mu
        cov = toward_dct_diagonal(a.transpose(1, 2) @ a / k, to_diagonal)
        cov = em_covariance(zc, cov, sigma2, em_iter, prior)
        gain = shrinkage(cov, sigma2)
        est = zc @ gain
        if graph is not None:  # the step's sigma^2 (C + sigma^2 I)^-1 is I - gain
            step = diffusion_residual(est, graph, tau)
            est = torch.baddbmm(est.add_(step), step, gain, alpha=-1.0)
        return mu + est, gain.diagonal(dim1=1, dim2=2).sum(1)
    if to_diagonal == 1:  # C diagonal in the patch DCT: no inverse to take
        return _dct_diagonal_mean(z, mu, a, sigma2, graph, tau)
    if d <= k or to_diagonal > 0:  # shrunk, C0 has full rank: the d x d form
        m = toward_dct_diagonal(a.transpose(1, 2) @ a, to_diagonal)  # (G, d, d)
        diag = m.diagonal(dim1=1, dim2=2)
        ridge = _noise_floor(diag.mean(1), k * sigma2)
        diag.add_(ridge[:, None])
        m_inv = spd_inverse(m, ridge)
        kept = d - k * sigma2 * m_inv.diagonal(dim1=1, dim2=2).sum(1)  # tr I - K s2 M^-1
        est = torch.baddbmm(z, z - mu, m_inv, alpha=-k * sigma2)
        if graph is not None:  # sigma^2 (C + sigma^2 I)^-1 = K sigma^2 M^-1
            est = torch.baddbmm(est, diffusion_residual(est - mu, graph, tau), m_inv,
                                alpha=k * sigma2)
        return est, kept
    gram = a @ a.transpose(1, 2)  # (G, K, K)
    eye = torch.eye(k, dtype=z.dtype, device=z.device)
    inner = torch.linalg.solve(gram + k * sigma2 * eye, a)  # (G, K, d)
    kept = (a * inner).sum((1, 2))  # tr (A A^T + K s2 I)^-1 A A^T
    est = ((z - mu) @ a.transpose(1, 2)) @ inner
    if graph is not None:  # sigma^2 (C + sigma^2 I)^-1 = I - A^T (A A^T + K s2 I)^-1 A
        step = diffusion_residual(est, graph, tau)
        est = est + step - (step @ a.transpose(1, 2)) @ inner
    return mu + est, kept


def _dct_diagonal_mean(z: torch.Tensor, mu: torch.Tensor, a: torch.Tensor, sigma2: float,
                       graph: torch.Tensor | None, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`_posterior_mean`'s d x d form for C = D^T diag(v) D, the pilot's covariance fully shrunk
    toward its DCT diagonal (`toward_dct_diagonal` with weight 1): M = D^T diag(K v + ridge) D,
    so M^-1 is a gain per DCT coefficient and each group costs three products by the DCT."""
    k, d = z.shape[1], z.shape[2]
    dct = _dct_2d(math.isqrt(d), z.device, z.dtype)  # (d, d), rows: the basis
    var = (a @ dct.T).square_().sum(1)  # (G, d): K v, the diagonal of D A^T A D^T
    ridge = _noise_floor(var.mean(1), k * sigma2)
    inv = var.add_(ridge[:, None]).reciprocal_().mul_(k * sigma2)[:, None]  # (G, 1, d): K s2 / (K v + r)
    kept = d - inv[:, 0].sum(1)
    est = z - ((z - mu) @ dct.T).mul_(inv) @ dct
    if graph is not None:  # sigma^2 (C + sigma^2 I)^-1 = K sigma^2 M^-1
        est = est + (diffusion_residual(est - mu, graph, tau) @ dct.T).mul_(inv) @ dct
    return est, kept


def _noise_floor(mean_variance: torch.Tensor, noise: float) -> torch.Tensor:
    """The noise variance each group's system takes (G,): `noise`, raised to at least
    SHRINK_FLOOR x the group's mean patch variance (G,) (`shrinkage`)."""
    return mean_variance.mul(SHRINK_FLOOR).clamp(min=noise)


# the patch DCT made once per size, device and dtype: a copy from the host in every chunk
# would wait for a GPU
_dct_2d = functools.lru_cache(maxsize=8)(dct_matrix)


def flat_group_means(mean: torch.Tensor, pilot: torch.Tensor, sigma2: float,
                     threshold: float) -> torch.Tensor:
    """The change (G, d) that denoises the mean patch of each flat group.

    `posterior_mean` keeps the group's mean patch, the mean of its K noisy patches (G, d),
    as it is: it holds noise of variance sigma^2 / K per pixel, which the posterior leaves
    untouched. Where the image is smooth the covariance removes nearly everything else, and
    that noise, aggregated over overlapping groups, stays as faint low-frequency blotches
    (on skimage's clock at sigma 25, 0.9 dB below BM3D, its flat half holding most of the
    error). In the groups whose pilot (G, K, d) varies by less than `threshold` x sigma^2
    over all its pixels, the mean patch is replaced by its empirical Wiener estimate in the
    patch DCT, with the pilot's mean patch as oracle: gain c^2 / (c^2 + sigma^2 / K) per
    AC coefficient, c the pilot's (as BM3D's Wiener step treats the mean along a group); the
    DC coefficient is kept (shrinking it pulled flat areas toward black by sigma^2 / (K c^2)
    of their level; the PSNR was the same to 0.001 dB on Train400 images). Other
    groups get 0: there a pilot smoothed by the earlier passes is no safe oracle for the
    mean's weak detail (unrestricted, the filter lost up to 0.05 dB on textured images)."""
    k, d = pilot.shape[1], pilot.shape[2]
    pilot_mean = pilot.mean(1)  # (G, d)
    spread = (pilot - pilot_mean.mean(1)[:, None, None]).square().mean((1, 2))  # (G,)
    dct = _dct_2d(math.isqrt(d), mean.device, mean.dtype)  # (d, d), rows: the basis
    coef, oracle = mean @ dct.T, (pilot_mean @ dct.T).square()
    gain = oracle / (oracle + sigma2 / k)
    gain[:, 0] = 1.0  # the DC coefficient, the patch's brightness, is kept: no pull toward black
    change = (coef * (gain - 1.0)) @ dct
    return change * (spread < threshold * sigma2)[:, None]


def toward_dct_diagonal(cov: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - weight) C + weight D^T diag(D C D^T) D for each C of cov (G, d, d), D the
    orthonormal 2-D DCT of sqrt(d) x sqrt(d) patches: C shrunk toward the covariance that keeps
    its variance per DCT coefficient and drops the correlations between coefficients (that of
    a stationary signal, nearly). A sample covariance of K patches of d pixels has rank at most
    K - 1 and is noisy where the signal is weak; the shrunk one has full rank. weight 0: C."""
    if weight == 0:
        return cov
    dct = _dct_2d(math.isqrt(cov.shape[-1]), cov.device, cov.dtype)  # (d, d), rows: the basis
    var = ((dct @ cov) * dct).sum(-1)  # (G, d) the variance of each DCT coefficient
    target = (dct.T * var[:, None, :]) @ dct
    return torch.lerp(cov, target, weight)


def shrinkage(cov: torch.Tensor, sigma2: float) -> torch.Tensor:
    """The posterior-mean map H = (C + sigma^2 I)^-1 C = I - sigma^2 (C + sigma^2 I)^-1 (G, d, d),
    symmetric; a patch's posterior mean is mu + (z - mu) H and its posterior covariance sigma^2 H.

    sigma^2 is raised to at least SHRINK_FLOOR x the group's mean patch variance (8-bit
    images: at sigma below about 1.5 only; the cameraman crop's output moved by at most 0.08
    grey levels at sigma 1.5 and not at all at 5, 25, 50): with noise far below the
    patches' scale, float32 rounding left C + sigma^2 I not positive definite and the
    factorisation failed (a binary image at sigma 0.1-0.2, a clean JPEG's chroma)."""
    s2 = _noise_floor(cov.diagonal(dim1=1, dim2=2).mean(1), sigma2)[:, None, None]  # (G, 1, 1)
    m = cov + s2 * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    gain = spd_inverse(m, s2[:, 0, 0]).mul_(-s2)
    gain.diagonal(dim1=1, dim2=2).add_(1.0)
    return gain


def em_covariance(zc: torch.Tensor, cov0: torch.Tensor, sigma2: float, iters: int,
                  prior: float) -> torch.Tensor:
    """EM for each group's patch covariance C from its K centred noisy patches zc (G, K, d).

    Model: zc_k = x_k + n_k, x_k ~ N(0, C), n_k ~ N(0, sigma^2 I); prior
    p(C) ~ |C|^(-prior K / 2) exp(-prior K / 2 tr(C^-1 C0)) (an inverse-Wishart centred on the
    pilot's covariance C0 (G, d, d), worth prior * K patches; prior = 0: maximum likelihood).
    E-step: x_k | zc_k ~ N(zc_k H, sigma^2 H), H = (C + sigma^2 I)^-1 C. M-step:
    C = (prior K C0 + sum_k E[x_k x_k^T]) / ((prior + 1) K), with sum_k E[x_k x_k^T] =
    H S H + K sigma^2 H, S = zc^T zc -- only d x d matrices. Starting from C0, each iteration
    raises the (penalised) likelihood `em_objective`; the pilot covariance of a smoothed
    estimate is too small in the directions the pilot flattened, and the noisy patches restore
    them.
    """
    k = zc.shape[1]
    scatter = zc.transpose(1, 2) @ zc  # (G, d, d)
    cov = cov0
    for _ in range(iters):
        gain = shrinkage(cov, sigma2)
        cov = torch.baddbmm(gain, gain @ scatter, gain, beta=k * sigma2)  # H S H + K s2 H
        if prior > 0:
            cov.add_(cov0, alpha=prior * k)
        cov.div_((prior + 1) * k)
    return cov


def em_objective(zc: torch.Tensor, cov: torch.Tensor, cov0: torch.Tensor, sigma2: float,
                 prior: float) -> torch.Tensor:
    """Per group (G,): sum_k log N(zc_k; 0, C + sigma^2 I) + log p(C) (up to a constant), the
    quantity `em_covariance` raises at every iteration (cov0 must be positive definite when
    prior > 0)."""
    k, d = zc.shape[1], zc.shape[2]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    chol = torch.linalg.cholesky(cov + sigma2 * eye)
    sol = torch.cholesky_solve(zc.transpose(1, 2), chol)  # (G, d, K)
    logdet = 2 * torch.log(chol.diagonal(dim1=1, dim2=2)).sum(1)
    ll = -0.5 * (k * logdet + (zc.transpose(1, 2) * sol).sum((1, 2)) + k * d * math.log(2 * math.pi))
    if prior > 0:
        c_chol = torch.linalg.cholesky(cov)
        trace = torch.cholesky_solve(cov0, c_chol).diagonal(dim1=1, dim2=2).sum(1)
        ll = ll - 0.5 * prior * k * (2 * torch.log(c_chol.diagonal(dim1=1, dim2=2)).sum(1) + trace)
    return ll
