"""Initial noise level: PCA of patches (Chen, Zhu & Heng, ICCV 2015), refined later by EM."""

from __future__ import annotations

import torch


def sample_patches(img: torch.Tensor, patch: int, count: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Up to `count` patches (n, p*p) of a (C, H, W) image, all channels pooled.

    Every patch when there are few; otherwise positions drawn with `generator`, gathered by
    index so that memory stays bounded on large images.
    """
    c, h, w = img.shape
    hn, wn = h - patch + 1, w - patch + 1
    total = c * hn * wn
    if total <= count:
        flat = torch.arange(total)
    else:
        flat = torch.randint(total, (count,), generator=generator)
    flat = flat.to(img.device)
    ch, rem = flat // (hn * wn), flat % (hn * wn)
    off = torch.arange(patch, device=img.device)
    rows = (rem // wn)[:, None, None] + off[None, :, None]
    cols = (rem % wn)[:, None, None] + off[None, None, :]
    return img[ch[:, None, None], rows, cols].reshape(-1, patch * patch)


def pca_sigma(samples: torch.Tensor) -> float:
    """Noise std from patches (n, d): the eigenvalues of the patch covariance that belong to
    noise have mean equal to their median; the largest such tail gives sigma^2 as its mean
    (Chen, Zhu & Heng 2015). This is also the maximum-likelihood noise variance of
    probabilistic PCA with that many components (Tipping & Bishop 1999).
    """
    centred = samples - samples.mean(0)
    cov = centred.T @ centred / max(samples.shape[0] - 1, 1)
    eig = torch.linalg.eigvalsh(cov).flip(0).clamp_min(0)  # descending
    for start in range(eig.numel()):  # at most p*p eigenvalues
        tail = eig[start:]
        if tail.mean() <= tail.median():
            return float(tail.mean().sqrt())
    return float(eig[-1].sqrt())


def _gradient_energy_law(patch: int) -> tuple[float, float]:
    """For unit white noise, the gradient energy n^T Q n of a patch matches c chi2(dof) in its
    first two moments (mean tr Q, variance 2 tr Q^2): returns (c, dof)."""
    d = torch.eye(patch, dtype=torch.float64)
    diff = d[1:] - d[:-1]
    q = torch.kron(diff.T @ diff, d) + torch.kron(d, diff.T @ diff)
    tr, tr2 = float(torch.trace(q)), float(torch.trace(q @ q))
    return tr2 / tr, tr * tr / tr2


def _chi2_quantile(p: float, dof: float) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (accurate for dof >= 10)."""
    z = {0.99: 2.3263478740, 0.999: 3.0902323062}[p]
    a = 2.0 / (9.0 * dof)
    return dof * (1.0 - a + z * a**0.5) ** 3


def estimate_sigma(img: torch.Tensor, patch: int = 7, max_patches: int = 60000,
                   iterations: int = 3, generator: torch.Generator | None = None) -> float:
    """Noise std from weak-texture patches of a (C, H, W) image, in its units."""
    samples = sample_patches(img, patch, max_patches, generator).double()
    return weak_texture_sigma(samples, patch, iterations)


def weak_texture_sigma(flat: torch.Tensor, patch: int, iterations: int = 3) -> float:
    """Noise std from patches (n, p*p) (Liu, Tanaka & Okutomi, TIP 2013): see
    `weak_texture_patches`."""
    return weak_texture_patches(flat, patch, iterations)[0]


def weak_texture_patches(flat: torch.Tensor, patch: int,
                         iterations: int = 3) -> tuple[float, torch.Tensor]:
    """Noise std from patches (n, p*p), and which patches it was measured on ((n,) bool).

    Start from the PCA estimate of all patches; keep the patches whose gradient energy is
    below the 99% quantile it would have for pure noise at the current sigma; re-estimate
    sigma by PCA (Chen et al. 2015) on the kept patches; repeat.
    """
    energy = gradient_energy(flat, patch)
    sigma = pca_sigma(flat)
    kept = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device)
    for _ in range(iterations):
        weak = energy < sigma**2 * weak_limit(patch)
        if int(weak.sum()) < 4 * patch * patch:
            break
        kept = weak
        sigma = pca_sigma(flat[kept])
    return sigma, kept


def excess_kurtosis(flat: torch.Tensor) -> float:
    """How far patches (n, d) are from Gaussian where they are weakest: the excess kurtosis of
    their projections on the smaller half of their principal directions, each scaled to unit
    variance, pooled. About 0 when noise fills those directions (Gaussian noise: -0.1 to 0.03
    on Train400 level bins whose noise variance the weak-texture estimate got right); above
    when texture does, natural texture being sparse and heavy-tailed (median 0.2-0.9 on the
    bins whose estimate texture inflated over 2x). NaN for fewer than two patches."""
    if flat.shape[0] < 2:
        return float("nan")
    centred = flat - flat.mean(0)
    vec = torch.linalg.eigh(centred.T @ centred / (flat.shape[0] - 1))[1]  # ascending
    proj = centred @ vec[:, : flat.shape[1] // 2]
    proj = proj / proj.std(0).clamp_min(1e-12)
    return float((proj**4).mean() - 3.0)


def gradient_energy(flat: torch.Tensor, patch: int) -> torch.Tensor:
    """The sum of squared differences between neighbouring pixels of each patch (n, p*p): (n,)."""
    samples = flat.reshape(-1, patch, patch)
    gy = samples[:, 1:, :] - samples[:, :-1, :]
    gx = samples[:, :, 1:] - samples[:, :, :-1]
    return (gy * gy).sum((1, 2)) + (gx * gx).sum((1, 2))


def weak_limit(patch: int) -> float:
    """The 99% quantile of the gradient energy of a patch of white noise of unit variance: a
    patch whose energy is below variance * this is weak-texture (its energy is noise)."""
    scale, dof = _gradient_energy_law(patch)
    return scale * _chi2_quantile(0.99, dof)
