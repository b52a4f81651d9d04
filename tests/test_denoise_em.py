"""EM, noise estimation, block matching and graph pieces of the denoiser, on small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from libcem.denoiser import em
from libcem.denoiser.attention import attention_weights
from libcem.denoiser.graph import laplacian, spectrum
from libcem.denoiser.noise import estimate_sigma
from libcem.denoiser.passes import PatchGroups, fit_group_model
from libcem.denoiser.patches import (
    all_patches,
    block_match,
    dct_matrix,
    pad_to_grid,
    to_opponent,
)
from libcem.denoiser.settings import AFFINITY_HEADS, DenoiseConfig
from libcem.errors import LibcemError


def _groups(img: np.ndarray, sigma: float, cfg: DenoiseConfig):
    x = torch.tensor(img, dtype=torch.float64)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    y = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    opp = pad_to_grid(to_opponent(y.float()), cfg.patch, cfg.step)
    groups = PatchGroups(opp, cfg.patch, cfg.heads_for(opp.shape[0]))
    return groups, groups.match(cfg.step, cfg.search_radius, cfg.group_size)


def _assert_non_decreasing(objective: list[float]) -> None:
    steps = np.diff(objective)
    assert len(objective) >= 10
    assert (steps >= -1e-9 * np.abs(objective[1:])).all(), steps.min()
    assert objective[-1] > objective[0]


@pytest.mark.parametrize("em_sigma", [False, True])
def test_em_objective_non_decreasing_gray(em_sigma):
    cfg = DenoiseConfig(em_max_iter=15, em_tol=0.0, em_groups=64, em_sigma=em_sigma, em_fit=True,
                        affinity_heads=AFFINITY_HEADS)
    groups, positions = _groups(data.camera()[100:196, 150:246], 25.0, cfg)
    params, trace = fit_group_model(groups, positions, 25.0, cfg, torch.Generator().manual_seed(0))
    _assert_non_decreasing(trace.objective)
    assert trace.iterations == 15
    assert params.tau > 0 and torch.isclose(params.pi.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert (params.sigma2 == 625.0) != em_sigma


def test_em_objective_non_decreasing_color_four_heads():
    cfg = DenoiseConfig(em_max_iter=12, em_tol=0.0, em_groups=48, em_fit=True,
                        affinity_heads=AFFINITY_HEADS)
    groups, positions = _groups(data.astronaut()[180:244, 160:224], 20.0, cfg)
    assert groups.affinity_heads == ("texture", "structure", "color", "spatial")
    params, trace = fit_group_model(groups, positions, 20.0, cfg, torch.Generator().manual_seed(0))
    _assert_non_decreasing(trace.objective)
    assert params.log_beta.shape == (4,)


def test_tau_update_is_the_maximiser():
    g = torch.Generator().manual_seed(1)
    lam = torch.rand(6, 5, generator=g, dtype=torch.float64) * 3
    lam[:, 0] = 0
    e2 = torch.rand(6, 5, 4, generator=g, dtype=torch.float64) + 0.1
    scale = torch.rand(6, 4, generator=g, dtype=torch.float64) + 0.5
    free = em.free_mask(5, 4, 1)

    def q(tau):
        return float((0.5 * torch.log1p(tau * lam)[:, :, None] * ~free
                      - 0.5 * (1 + tau * lam)[:, :, None] * e2 * ~free / scale[:, None]).sum())

    tau = em.update_tau(e2, lam, scale, free)
    assert q(tau) >= max(q(tau * 0.9), q(tau * 1.1), q(0.0))


@pytest.mark.parametrize("sigma", [5, 10, 15, 25, 50])
def test_estimated_sigma_within_ten_percent(sigma):
    clean = torch.tensor(data.camera(), dtype=torch.float64)
    y = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0),
                                    dtype=torch.float64)
    est = estimate_sigma(y[None].float(), generator=torch.Generator().manual_seed(0))
    assert abs(est / sigma - 1) < 0.10, est


@pytest.mark.parametrize("tile", [1, 3, 4, 8])
def test_block_match_equals_brute_force(tile):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(37, 41, generator=g) * 255
    patch, step, radius, k = 5, 2, 4, 6
    img = pad_to_grid(img[None], patch, step)[0]
    feats = all_patches(img[None], patch)[0]
    hn, wn = img.shape[0] - patch + 1, img.shape[1] - patch + 1
    got = block_match(feats.T.reshape(-1, hn, wn), step, radius, k, tile)
    rows, cols = torch.arange(0, hn, step), torch.arange(0, wn, step)
    assert got.shape == (rows.numel() * cols.numel(), k)
    for n, (r, c) in enumerate((r, c) for r in rows.tolist() for c in cols.tolist()):
        rr, cc = torch.meshgrid(torch.arange(max(r - radius, 0), min(r + radius + 1, hn)),
                                torch.arange(max(c - radius, 0), min(c + radius + 1, wn)),
                                indexing="ij")
        cand = (rr * wn + cc).reshape(-1)
        dist = ((feats[cand] - feats[r * wn + c]) ** 2).sum(1)
        best = cand[torch.topk(dist, k, largest=False).indices]
        assert got[n, 0] == r * wn + c
        assert set(got[n].tolist()) == set(best.tolist())


def test_dct_table_is_each_patch_times_the_dct_across_bands(monkeypatch):
    import libcem.denoiser.passes as passes

    monkeypatch.setattr(passes, "COEF_BAND_ROWS", 40)  # bands of 2 position rows, the last 1
    img = torch.rand(3, 11, 26, generator=torch.Generator().manual_seed(0)) * 255
    groups = PatchGroups(img, 5, ())
    patches = all_patches(img, 5)  # (C, positions, 25)
    want = (patches @ dct_matrix(5).T).permute(1, 0, 2)
    assert groups.coef.shape == (7 * 22, 3, 25)
    assert torch.allclose(groups.coef, want, atol=1e-3)


def test_group_scale_em_steps_leave_the_free_coefficients_out():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(4, 6, 10, generator=g, dtype=torch.float64)
    lam = torch.rand(4, 6, generator=g, dtype=torch.float64)
    scale = torch.rand(4, 10, generator=g, dtype=torch.float64) + 0.1
    free = em.free_mask(6, 10, 2)
    v = em.model_variance(lam, scale, 0.7)
    m, var = em.posterior(c, v, 0.3, free)
    gain = torch.where(free, 1.0, v / (v + 0.3))  # the free coefficients pass as they are
    assert torch.allclose(m, gain * c) and torch.allclose(var, torch.where(free, 0.0, 0.3 * gain))
    proper = (~free).double()
    weight = (1 + 0.7 * lam)[:, :, None]
    want = ((c * c - 0.3) * weight * proper).sum(1) / proper.sum(0)
    assert torch.allclose(em.initial_scale(c, lam, 0.7, 0.3, free), want.clamp_min(1e-3 * 0.3))
    e2 = m * m + var
    want = (e2 * weight * proper).sum(1) / proper.sum(0)
    assert torch.allclose(em.update_scale(e2, lam, 0.7, free), want)


def test_spectrum_puts_the_group_mean_first():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(3, 6, 6, generator=g, dtype=torch.float64)
    w = (w + w.transpose(1, 2)) / 2 * (1 - torch.eye(6, dtype=torch.float64))
    w[0] = 0  # a disconnected graph still gets the mean as mode 0
    lam, vec = spectrum(w)
    assert torch.allclose(vec[:, :, 0].abs(), torch.full((3, 6), 6**-0.5, dtype=torch.float64))
    assert torch.all(lam[:, 0] == 0) and torch.all(lam[:, 1:] >= 0)
    lap = laplacian(w)
    recon = vec @ torch.diag_embed(lam) @ vec.transpose(1, 2)
    assert torch.allclose(recon, lap, atol=1e-10)


def test_attention_weights_mix_heads():
    d = torch.rand(2, 4, 5, 5, dtype=torch.float64)
    w = attention_weights(d, torch.zeros(2), torch.tensor([0.0, -1e9]))
    expected = torch.exp(-d[0]) * (1 - torch.eye(5, dtype=torch.float64))
    assert torch.allclose(w, expected)


def test_dct_is_orthonormal():
    d = dct_matrix(7).double()
    assert torch.allclose(d @ d.T, torch.eye(49, dtype=torch.float64), atol=1e-6)


def test_config_checks():
    with pytest.raises(LibcemError, match="patch"):
        DenoiseConfig(patch=1)
    with pytest.raises(LibcemError, match="heads"):
        DenoiseConfig(affinity_heads=("texture", "smell"))
    with pytest.raises(LibcemError, match="unknown"):
        DenoiseConfig().override(tiles=3)
    every = DenoiseConfig(affinity_heads=AFFINITY_HEADS)
    assert every.heads_for(1) == ("texture", "structure", "spatial")
    assert every.heads_for(3) == ("texture", "structure", "color", "spatial")
    assert DenoiseConfig().heads_for(3) == ("texture",)
