"""EM for the Gaussian patch-group model with a graph-diffusion (GMRF) group model.

Model, per patch group i (K patches found by block matching) and per patch-transform
coefficient f (2-D DCT of each channel), z_if in R^K holding the K patches' coefficient f:

    z_if = x_if + n_if,             n_if ~ N(0, sigma^2 I)              (white Gaussian noise)
    x_if ~ N(0, s_if (I + tau L_i)^-1)                                 (graph-diffusion group model)

L_i = D - W is the Laplacian of the head-mixed attention weights
w_jk = sum_h pi_h exp(-d_h(j, k) / beta_h) (see `attention`). The group mean of the DC
coefficients (f = 0 of each channel, mode 0 of the graph) has a flat (improper) density and is left out of
the likelihood. In the graph Fourier basis L_i = U diag(lambda) U^T the coefficients
c = U^T z are independent: c_ikf ~ N(0, v_ikf + sigma^2), v_ikf = s_if / (1 + tau lambda_ik).

Objective: the mean log-likelihood of the coefficients (groups treated as independent, a
composite likelihood since groups overlap). E-step: the Gaussian posterior of x,
m = g c, var = g sigma^2, g = v / (v + sigma^2). M-step (each block maximises the expected
complete log-likelihood Q in turn, so the objective never decreases -- an ECM/GEM):
sigma^2 = mean[(c - m)^2 + var];  s_if = mean_k (1 + tau lambda_ik) E[x_ikf^2];
tau: root of the concave 1-D stationarity condition (bisection);  (beta, pi): a gradient
step on Q with backtracking that accepts only an increase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from libcem.denoiser.attention import attention_weights
from libcem.denoiser.graph import graph_diffusion_gain, laplacian, spectrum


@dataclass(frozen=True)
class GroupModelParams:
    """Global parameters fitted per image: noise variance, graph-diffusion strength, affinity heads."""

    sigma2: float
    tau: float
    log_beta: torch.Tensor  # (H,) log bandwidth per head
    logit_pi: torch.Tensor  # (H,) mixing logits, pi = softmax(logit_pi)

    @property
    def pi(self) -> torch.Tensor:
        return torch.softmax(self.logit_pi, 0)


@dataclass
class EMTrace:
    """Objective per iteration (non-decreasing), iterations run and whether tol was reached."""

    objective: list[float] = field(default_factory=list)
    converged: bool = False

    @property
    def iterations(self) -> int:
        return max(len(self.objective) - 1, 0)


def initial_params(dists: torch.Tensor, sigma2: float) -> GroupModelParams:
    """Bandwidths at the median head distance, equal mixing weights, unit graph-diffusion strength."""
    h = dists.shape[0]
    off = ~torch.eye(dists.shape[-1], dtype=torch.bool, device=dists.device)
    med = torch.stack([d[:, off].median() for d in dists]).clamp_min(1e-12)
    return GroupModelParams(sigma2, 1.0, med.log().double().cpu(), torch.zeros(h, dtype=torch.float64))


def free_mask(k: int, f: int, channels: int, device=None) -> torch.Tensor:
    """(K, F) True where the group model is flat: graph mode 0 of each channel's DC coefficient."""
    mask = torch.zeros(k, f, dtype=torch.bool, device=device)
    mask[0, torch.arange(channels, device=device) * (f // channels)] = True
    return mask


def model_variance(lam: torch.Tensor, scale: torch.Tensor, tau: float) -> torch.Tensor:
    """v_ikf = s_if / (1 + tau lambda_ik): (G, K, F)."""
    return scale[:, None, :] * graph_diffusion_gain(lam, tau)[:, :, None]


def posterior(c: torch.Tensor, v: torch.Tensor, sigma2: float,
              free: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E-step: posterior mean and variance of x given c, both (G, K, F); free entries pass.
    `free` (K, F) may be set on graph mode 0 only, as `free_mask` sets it."""
    gain = v + sigma2
    torch.div(v, gain, out=gain)  # in place: this runs on every chunk of pass 1's groups
    gain[:, 0].masked_fill_(free[0], 1.0)
    var = gain * sigma2
    var[:, 0].masked_fill_(free[0], 0.0)
    return gain * c, var


def log_likelihood(c: torch.Tensor, v: torch.Tensor, sigma2: float, free: torch.Tensor) -> float:
    """Mean log N(c; 0, v + sigma^2) over the coefficients that have a proper group model."""
    var = v + sigma2
    ll = (torch.log(2 * math.pi * var) + c * c / var) * (~free)
    return float(-0.5 * ll.sum() / ((~free).sum() * c.shape[0]))


def initial_scale(c: torch.Tensor, lam: torch.Tensor, tau: float, sigma2: float,
                  free: torch.Tensor) -> torch.Tensor:
    """Moment estimate of s_if: mean_k (1 + tau lambda) (c^2 - sigma^2), floored at 1e-3 sigma^2."""
    excess = (c * c).sub_(sigma2).mul_((1.0 + tau * lam)[:, :, None])
    excess[:, 0].masked_fill_(free[0], 0.0)  # free on mode 0 only (`free_mask`)
    return (excess.sum(1) / (~free).sum(0)).clamp_min(1e-3 * sigma2)


def update_scale(e2: torch.Tensor, lam: torch.Tensor, tau: float,
                 free: torch.Tensor) -> torch.Tensor:
    """M-step for s_if: mean over the proper modes k of (1 + tau lambda_ik) E[x_ikf^2]."""
    weighted = e2 * (1.0 + tau * lam)[:, :, None]
    weighted[:, 0].masked_fill_(free[0], 0.0)  # free on mode 0 only (`free_mask`)
    return (weighted.sum(1) / (~free).sum(0)).clamp_min(1e-12)


def update_tau(e2: torch.Tensor, lam: torch.Tensor, scale: torch.Tensor,
               free: torch.Tensor) -> float:
    """M-step for tau: the root of sum n_k lam/(1 + tau lam) = sum lam E[x^2]/s (concave Q)."""
    counts = (~free).sum(1).to(lam.dtype)  # (K,) proper coefficients per mode
    b = (e2 * ~free / scale[:, None, :]).sum(-1)  # (G, K)
    target = float((lam * b).sum())

    def slope(tau: float) -> float:
        return float((counts * lam / (1.0 + tau * lam)).sum()) - target

    if slope(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while slope(hi) > 0 and hi < 1e12:
        lo, hi = hi, hi * 4.0
    for _ in range(60):  # bisection on a monotone function
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _q_graph(theta: torch.Tensor, dists: torch.Tensor, second: torch.Tensor, tau: float,
             nfreq: int) -> torch.Tensor:
    """Part of Q that depends on the heads: sum_i (F/2) log det(I + tau L_i) - tau/2 tr(L_i M_i)."""
    h = dists.shape[0]
    lap = laplacian(attention_weights(dists, theta[:h], theta[h:]))
    eye = torch.eye(lap.shape[-1], dtype=lap.dtype, device=lap.device)
    chol = torch.linalg.cholesky(eye + tau * lap)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum()
    return 0.5 * nfreq * logdet - 0.5 * tau * (lap * second).sum()


def update_heads(params: GroupModelParams, dists: torch.Tensor, second: torch.Tensor, nfreq: int,
                 step: float) -> tuple[GroupModelParams, float]:
    """M-step for (beta, pi): one gradient step on Q, halved until Q increases (else unchanged).

    second: (G, K, K) sum_f E[z z^T] / s_if in node coordinates. Returns params and next step.
    """
    theta = torch.cat([params.log_beta, params.logit_pi]).to(dists).requires_grad_(True)
    q0 = _q_graph(theta, dists, second, params.tau, nfreq)
    (grad,) = torch.autograd.grad(q0, theta)
    direction = grad / grad.norm().clamp_min(1e-30)
    h = dists.shape[0]
    with torch.no_grad():
        for _ in range(6):
            trial = theta + step * direction
            if _q_graph(trial, dists, second, params.tau, nfreq) > q0:
                new = GroupModelParams(params.sigma2, params.tau, trial[:h].detach().cpu(),
                                  trial[h:].detach().cpu())
                return new, step * 2.0
            step *= 0.5
    return params, step


def node_second_moment(m: torch.Tensor, var: torch.Tensor, vec: torch.Tensor,
                       scale: torch.Tensor) -> torch.Tensor:
    """sum_f E[z_f z_f^T] / s_f in node coordinates, (G, K, K), from GFT-domain moments."""
    a = m / scale[:, None, :].sqrt()
    inner = a @ a.transpose(1, 2) + torch.diag_embed((var / scale[:, None, :]).sum(-1))
    return vec @ inner @ vec.transpose(1, 2)


def fit(z: torch.Tensor, dists: torch.Tensor, params: GroupModelParams, free: torch.Tensor,
        fit_sigma: bool, max_iter: int, tol: float,
        fit_tau: bool = True) -> tuple[GroupModelParams, EMTrace]:
    """Run EM on groups z (G, K, F) with head distances (H, G, K, K), in float64.

    fit_tau=False keeps tau at its starting value (tau = 0: no graph diffusion, an ablation).
    Returns the fitted global parameters and the objective trace.
    """
    trace, step, scale = EMTrace(), 0.5, None
    for _ in range(max_iter + 1):
        lam, vec = spectrum(attention_weights(dists, params.log_beta.to(z), params.logit_pi.to(z)))
        c = vec.transpose(1, 2) @ z  # (G, K, F) graph Fourier coefficients
        if scale is None:
            scale = initial_scale(c, lam, params.tau, params.sigma2, free)
        v = model_variance(lam, scale, params.tau)
        trace.objective.append(log_likelihood(c, v, params.sigma2, free))
        if len(trace.objective) > 1:
            gain = trace.objective[-1] - trace.objective[-2]
            if gain <= tol:
                trace.converged = True
                break
        if len(trace.objective) > max_iter:
            break
        m, var = posterior(c, v, params.sigma2, free)  # E-step
        sigma2 = params.sigma2
        if fit_sigma:
            resid = ((c - m) ** 2 + var) * ~free
            sigma2 = float(resid.sum() / ((~free).sum() * c.shape[0]))
        e2 = m * m + var
        scale = update_scale(e2, lam, params.tau, free)
        tau = update_tau(e2, lam, scale, free) if fit_tau else params.tau
        params = GroupModelParams(sigma2, tau, params.log_beta, params.logit_pi)
        second = node_second_moment(m, var, vec, scale)
        params, step = update_heads(params, dists, second, z.shape[-1], step)
    return params, trace
