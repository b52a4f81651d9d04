"""The second pass's covariance model, the chain-graph ablation and the EM switches, exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data

from libcem.denoiser import DenoiseConfig, covariance
from libcem.denoiser.attention import attention_weights, chain_distances
from libcem.denoiser.graph import spectrum
from libcem.denoiser.passes import PatchGroups, fit_group_model
from libcem.denoiser.patches import pad_to_grid
from libcem.errors import LibcemError


@pytest.mark.parametrize("k, d", [(6, 10), (12, 5)])  # the K x K (Woodbury) and d x d forms
def test_covariance_posterior_mean_equals_the_direct_formula(k, d):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, k, d, generator=g, dtype=torch.float64)
    pilot = torch.randn(3, k, d, generator=g, dtype=torch.float64) * 2
    sigma2 = 0.7
    est, kept = covariance.posterior_mean(z, pilot, sigma2)
    for i in range(3):
        a = pilot[i] - pilot[i].mean(0)
        cov = a.T @ a / k  # (d, d)
        shrink = cov @ torch.linalg.inv(cov + sigma2 * torch.eye(d, dtype=torch.float64))
        mu = z[i].mean(0)
        assert torch.allclose(est[i], mu + (z[i] - mu) @ shrink.T, atol=1e-10)
        assert math.isclose(float(kept[i]), float(torch.trace(shrink)), rel_tol=1e-10)


@pytest.mark.parametrize("k, d", [(4, 6), (6, 4)])
def test_flat_pilot_gives_the_group_mean(k, d):
    z = torch.arange(24, dtype=torch.float64).reshape(1, k, d)
    est, kept = covariance.posterior_mean(z, torch.ones(1, k, d, dtype=torch.float64), 1.0)
    assert torch.allclose(est, z.mean(1, keepdim=True).expand_as(z), atol=1e-12)
    assert abs(float(kept)) < 1e-12


def test_chain_graph_is_a_dct_along_the_group():
    k = 5
    w = attention_weights(chain_distances(1, k)[None], torch.zeros(1), torch.zeros(1))
    lam, vec = spectrum(w)
    n = torch.arange(k, dtype=torch.float64)
    dct = torch.cos(math.pi * (n[:, None] + 0.5) * n[None, :] / k)  # DCT-II columns
    dct = dct / dct.norm(dim=0)
    assert torch.allclose(vec[0].abs(), dct.abs(), atol=1e-8)
    assert torch.allclose(lam[0], 2 - 2 * torch.cos(math.pi * n / k), atol=1e-8)


def _groups(cfg: DenoiseConfig):
    x = torch.tensor(data.camera()[100:164, 150:214], dtype=torch.float32)[None]
    y = x + 25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    groups = PatchGroups(pad_to_grid(y, cfg.patch, cfg.step), cfg.patch, cfg.heads_for(1))
    return groups, groups.match(cfg.step, cfg.search_radius, cfg.group_size)


@pytest.mark.parametrize("overrides,tau,iterations", [
    ({"em_fit": False}, 1.0, 0),
    ({"graph_diffusion": False, "em_fit": True, "em_max_iter": 3, "em_tol": 0.0}, 0.0, 3),
])
def test_ablation_switches(overrides, tau, iterations):
    cfg = DenoiseConfig(em_groups=32, **overrides)
    groups, positions = _groups(cfg)
    params, trace = fit_group_model(groups, positions, 25.0, cfg, torch.Generator().manual_seed(0))
    assert params.tau == tau and trace.iterations == iterations
    if iterations:
        assert np.all(np.diff(trace.objective) >= -1e-9)


def test_new_settings_are_checked():
    with pytest.raises(LibcemError, match="pass2"):
        DenoiseConfig(pass2="bm4d")
    with pytest.raises(LibcemError, match="graph"):
        DenoiseConfig(graph="star")
    assert DenoiseConfig(graph="chain").heads_for(3) == ("chain",)


def test_fit_tensor_fits_what_denoise_tensor_fits_without_the_passes():
    from libcem.denoiser.passes import denoise_tensor, fit_tensor

    clean = torch.from_numpy(data.camera()[:64, :72].astype(np.float32))[None]
    noisy = clean + 20 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    cfg = DenoiseConfig(em_fit=True, em_max_iter=3)
    _, full = denoise_tensor(noisy, None, cfg)
    fitted = fit_tensor(noisy, None, cfg)
    assert fitted.sigma == full.sigma and fitted.params.tau == full.params.tau
    assert torch.equal(fitted.params.log_beta, full.params.log_beta)
    assert fitted.trace.objective == full.trace.objective
