"""The second pass's covariance model, the chain-graph ablation and the EM switches, exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data

from libcem.denoiser import DenoiseConfig, covariance, linalg
from libcem.denoiser.attention import attention_weights, chain_distances
from libcem.denoiser.graph import spectrum
from libcem.denoiser.passes import PatchGroups, fit_group_model
from libcem.denoiser.patches import pad_to_grid
from libcem.denoiser.settings import SPEEDS
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


def _dct2(side: int) -> torch.Tensor:
    n = torch.arange(side, dtype=torch.float64)
    d1 = torch.cos(math.pi * (n[None, :] + 0.5) * n[:, None] / side)  # rows: DCT-II basis
    d1 = d1 / d1.norm(dim=1, keepdim=True)
    return torch.kron(d1, d1)


def test_toward_dct_diagonal_keeps_each_coefficients_variance_and_drops_the_rest():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(2, 5, 9, generator=g, dtype=torch.float64)
    cov = a.transpose(1, 2) @ a / 5  # rank 4 of 9
    assert covariance.toward_dct_diagonal(cov, 0.0) is cov
    dct = _dct2(3)
    full = dct @ covariance.toward_dct_diagonal(cov, 1.0) @ dct.T  # in DCT coordinates
    assert torch.allclose(full, torch.diag_embed((dct @ cov @ dct.T).diagonal(dim1=1, dim2=2)), atol=1e-12)
    half = covariance.toward_dct_diagonal(cov, 0.5)
    assert torch.allclose(half, (cov + covariance.toward_dct_diagonal(cov, 1.0)) / 2, atol=1e-12)
    assert torch.linalg.matrix_rank(half[0]) == 9  # shrunk, full rank


@pytest.mark.parametrize("k", [12, 6])  # more patches than pixels, and fewer
def test_covariance_shrunk_to_the_dct_diagonal_is_a_wiener_filter_per_coefficient(k):
    """Shrunk all the way, the group's covariance is diagonal in the patch DCT, and the
    posterior mean is the Wiener filter of each DCT coefficient, v / (v + sigma^2), v the
    pilot's variance of that coefficient in the group."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, k, 9, generator=g, dtype=torch.float64) * 2
    pilot = torch.randn(3, k, 9, generator=g, dtype=torch.float64) * 3
    sigma2 = 0.8
    est, kept = covariance.posterior_mean(z, pilot, sigma2, to_diagonal=1.0)
    dct = _dct2(3)
    mu = z.mean(1, keepdim=True)
    v = (((pilot - pilot.mean(1, keepdim=True)) @ dct.T) ** 2).mean(1, keepdim=True)  # (3, 1, 9)
    gain = v / (v + sigma2)
    assert torch.allclose(est, mu + (((z - mu) @ dct.T) * gain) @ dct, atol=1e-10)
    assert torch.allclose(kept, gain.sum((1, 2)), atol=1e-10)
    half, _ = covariance.posterior_mean(z, pilot, sigma2, em_iter=1, to_diagonal=0.5)
    a = pilot - pilot.mean(1, keepdim=True)
    cov = covariance.em_covariance(z - mu, covariance.toward_dct_diagonal(a.transpose(1, 2) @ a / k, 0.5),
                                   sigma2, 1, 0.0)
    assert torch.allclose(half, mu + (z - mu) @ covariance.shrinkage(cov, sigma2), atol=1e-10)


def test_the_dct_diagonal_form_with_a_group_graph_is_the_d_by_d_form():
    """Shrunk all the way, the posterior mean takes no inverse (`_dct_diagonal_mean`); with a
    graph along the group axis it is still the d x d form's step, M = D^T diag(K v) D + ridge I
    inverted explicitly."""
    from libcem.denoiser.graph import diffusion_residual

    g = torch.Generator().manual_seed(4)
    k, sigma2, tau = 12, 0.8, 1.0
    z = torch.randn(3, k, 9, generator=g, dtype=torch.float64) * 2
    pilot = torch.randn(3, k, 9, generator=g, dtype=torch.float64) * 3
    w = torch.rand(3, k, k, generator=g, dtype=torch.float64)
    w = (w + w.transpose(1, 2)) / 2
    est, kept = covariance.posterior_mean(z, pilot, sigma2, to_diagonal=1.0, graph=w, tau=tau)
    a = pilot - pilot.mean(1, keepdim=True)
    m = covariance.toward_dct_diagonal(a.transpose(1, 2) @ a, 1.0)
    ridge = m.diagonal(dim1=1, dim2=2).mean(1).mul(covariance.SHRINK_FLOOR).clamp(min=k * sigma2)
    m_inv = torch.linalg.inv(m + ridge[:, None, None] * torch.eye(9, dtype=torch.float64))
    mu = z.mean(1, keepdim=True)
    plain = z - k * sigma2 * (z - mu) @ m_inv
    expected = plain + k * sigma2 * diffusion_residual(plain - mu, w, tau) @ m_inv
    assert torch.allclose(est, expected, atol=1e-10)
    assert torch.allclose(kept, 9 - k * sigma2 * m_inv.diagonal(dim1=1, dim2=2).sum(1), atol=1e-10)


@pytest.mark.parametrize("split", [True, False])  # groups taken apart (CPU), or both forms
def test_groups_whose_pilot_hardly_varies_take_the_dct_diagonal(monkeypatch, split):
    """With diagonal_below, the groups whose pilot's members vary by less than that many
    sigma^2 per pixel get the posterior mean of the covariance at its DCT diagonal, the
    others that of the full covariance, with a graph along the group axis too."""
    if not split:
        monkeypatch.setattr(covariance, "SPLIT_DEVICES", ())
    g = torch.Generator().manual_seed(6)
    k, sigma2, tau = 12, 0.8, 1.0
    z = torch.randn(2 * 5, k, 9, generator=g, dtype=torch.float64) * 2  # two channels of 5 groups
    spread = torch.tensor([0.2, 3.0, 0.5, 2.0, 0.1, 1.5, 0.3, 4.0, 0.2, 2.5], dtype=torch.float64)
    pilot = torch.randn(2 * 5, k, 9, generator=g, dtype=torch.float64) * spread[:, None, None]
    w = torch.rand(5, k, k, generator=g, dtype=torch.float64)
    w = (w + w.transpose(1, 2)) / 2
    est, kept = covariance.posterior_mean(z, pilot, sigma2, graph=w, tau=tau, diagonal_below=1.0)
    diag = covariance.posterior_mean(z, pilot, sigma2, to_diagonal=1.0, graph=w, tau=tau)
    full = covariance.posterior_mean(z, pilot, sigma2, graph=w, tau=tau)
    weak = (pilot - pilot.mean(1, keepdim=True)).square().mean((1, 2)) < sigma2
    assert 0 < int(weak.sum()) < 10
    for part, form in ((weak, diag), (~weak, full)):
        assert torch.allclose(est[part], form[0][part], atol=1e-10)
        assert torch.allclose(kept[part], form[1][part], atol=1e-10)
    same = covariance.posterior_mean(z, pilot, sigma2, em_iter=1, graph=w, tau=tau, diagonal_below=1.0)
    assert torch.equal(same[0], covariance.posterior_mean(z, pilot, sigma2, em_iter=1, graph=w, tau=tau)[0])


def _small_colour_pass() -> tuple[DenoiseConfig, torch.Tensor, PatchGroups, torch.Generator]:
    """Small covariance-pass settings, a random 24x24 colour pilot and its noisy version (std 20)."""
    cfg = DenoiseConfig(patch=4, step_wiener=4, group_size_wiener=8, search_radius=4,
                        search_radius_color=4, chroma_to_diagonal=0.5)
    g = torch.Generator().manual_seed(0)
    pilot = torch.rand(3, 24, 24, generator=g) * 255
    return cfg, pilot, PatchGroups(pilot + 20 * torch.randn(3, 24, 24, generator=g), cfg.patch, ()), g


def test_the_chroma_covariances_take_no_em_under_white_noise_only(monkeypatch):
    """In the first colour covariance pass the luminance's covariances are refit by EM
    (`cov_em_iter_color`) and the chroma's at most `cov_em_iter_chroma` times (0) under white
    noise; under correlated noise the chroma's as the luminance's; the later passes as before."""
    from libcem.denoiser import passes
    from libcem.denoiser.correlated import white

    cfg, pilot, noisy, _ = _small_colour_pass()
    cfg = cfg.override(chroma_to_diagonal=0.0)
    calls = []
    plain = covariance.posterior_mean

    def record(z, pil, sigma2, em_iter=0, *args, **kw):
        calls.append((z.shape[0], em_iter))
        return plain(z, pil, sigma2, em_iter, *args, **kw)

    monkeypatch.setattr(covariance, "posterior_mean", record)
    _, positions = passes.covariance_pass(noisy, pilot, 400.0, cfg)
    g = positions.shape[0]
    assert calls == [(g, 1), (2 * g, 0)]
    calls.clear()
    passes.covariance_pass(noisy, pilot, 400.0, cfg.override(cov_em_iter_chroma=1))
    assert calls == [(3 * g, 1)]
    calls.clear()
    correlated = PatchGroups(noisy.image, cfg.patch, (), white(20.0))
    passes.covariance_pass(correlated, pilot, 400.0, cfg)
    assert calls == [(3 * g, 1)]
    calls.clear()
    passes.covariance_pass(noisy, pilot, 400.0, cfg.override(chroma_diagonal_below=0.0), later=True)
    assert calls == [(3 * g, 0)]
    assert DenoiseConfig().cov_em_iter(3, False, chroma=True) == 0
    assert DenoiseConfig().cov_em_iter(1, False, chroma=True) == 2  # gray: no chroma


def test_only_the_chroma_covariances_are_shrunk(monkeypatch):
    """The first colour covariance pass shrinks the chroma channels' covariances by
    `chroma_to_diagonal` and leaves the luminance's; the setting is 0.5 above sigma 37.5 only
    (session 29). The later passes shrink them by `chroma_to_diagonal_later`, 1 above sigma
    37.5 only (session 36), and take those of the groups whose chroma hardly varies
    (`chroma_diagonal_below`) at their diagonal. A gray image's output depends on none."""
    from libcem.denoiser import passes

    cfg, pilot, noisy, g = _small_colour_pass()
    calls = []
    plain = covariance.posterior_mean

    def record(z, pil, sigma2, em_iter=0, prior=0.0, to_diagonal=0.0, flat=0.0, **kw):
        calls.append((z.shape[0], to_diagonal))
        below.append(kw.get("diagonal_below", 0.0))
        return plain(z, pil, sigma2, em_iter, prior, to_diagonal, flat, **kw)

    below = []
    cfg = cfg.override(chroma_diagonal_below=0.0)
    monkeypatch.setattr(covariance, "posterior_mean", record)
    est, positions = passes.covariance_pass(noisy, pilot, 400.0, cfg)
    groups = math.ceil(positions.shape[0] / cfg.chunk)
    assert calls[:2] == [(positions.shape[0], 0.0), (2 * positions.shape[0], 0.5)] and len(calls) == 2 * groups
    calls.clear()
    same, _ = passes.covariance_pass(noisy, pilot, 400.0,
                                     cfg.override(chroma_to_diagonal=0.0, cov_em_iter_chroma=1))
    assert len(calls) == groups and not torch.allclose(est, same)
    calls.clear()
    passes.covariance_pass(noisy, pilot, 400.0, cfg, later=True)  # the later passes: their own
    assert calls == [(3 * positions.shape[0], 0.0)] * groups
    calls.clear()
    passes.covariance_pass(noisy, pilot, 400.0, cfg.override(chroma_to_diagonal_later=1.0), later=True)
    assert calls == [(positions.shape[0], 0.0), (2 * positions.shape[0], 1.0)] * groups
    calls.clear(), below.clear()  # the weak chroma groups at their diagonal: the later passes only
    passes.covariance_pass(noisy, pilot, 400.0, cfg.override(chroma_diagonal_below=0.5))
    assert below == [0.0, 0.0] * groups
    calls.clear(), below.clear()
    passes.covariance_pass(noisy, pilot, 400.0, cfg.override(chroma_diagonal_below=0.5), later=True)
    assert calls == [(positions.shape[0], 0.0), (2 * positions.shape[0], 0.0)] * groups
    assert below == [0.0, 0.5] * groups
    assert [DenoiseConfig().at_sigma(s, 256).chroma_to_diagonal for s in (25.0, 50.0)] == [0.0, 0.5]
    assert [DenoiseConfig().at_sigma(s, 256).chroma_to_diagonal_later for s in (25.0, 50.0)] == [0.0, 1.0]
    monkeypatch.setattr(covariance, "posterior_mean", plain)
    gray = torch.from_numpy(data.camera()[:48, :48].astype(np.float32))[None]
    gray = gray + 50 * torch.randn(gray.shape, generator=g)
    out = [passes.denoise_tensor(gray, 50.0, DenoiseConfig(chroma_to_diagonal_high=w,
                                                           chroma_to_diagonal_later_high=w))[0]
           for w in (0.0, 0.5)]
    assert torch.equal(*out)


@pytest.mark.parametrize("em_iter", [0, 1])
def test_flat_groups_get_their_mean_patch_wiener_filtered(em_iter):
    """In a group whose pilot varies by less than flat x sigma^2, the mean patch is replaced by
    its Wiener estimate in the patch DCT, c^2 / (c^2 + sigma^2 / K) per AC coefficient, c the
    pilot mean's coefficient, its brightness (DC) kept, and the rest of the posterior is kept;
    other groups are left as they were."""
    g = torch.Generator().manual_seed(5)
    k, sigma2 = 10, 4.0
    pilot = 50 + torch.randn(2, k, 9, generator=g, dtype=torch.float64) * 0.1  # variance 0.01
    pilot[1] += torch.randn(k, 9, generator=g, dtype=torch.float64) * 3  # a textured group
    z = pilot + 2 * torch.randn(2, k, 9, generator=g, dtype=torch.float64)
    plain, kept = covariance.posterior_mean(z, pilot, sigma2, em_iter)
    est, kept_flat = covariance.posterior_mean(z, pilot, sigma2, em_iter, flat=0.01)
    dct = _dct2(3)
    mean, oracle = z.mean(1) @ dct.T, (pilot.mean(1) @ dct.T) ** 2
    gain = oracle / (oracle + sigma2 / k)
    gain[:, 0] = 1.0  # the DC coefficient is kept
    wiener = (mean * gain) @ dct  # (2, 9)
    assert torch.allclose(est[0], plain[0] + (wiener[0] - z[0].mean(0)), atol=1e-10)
    assert torch.equal(est[1], plain[1]) and torch.equal(kept, kept_flat)
    assert torch.allclose(wiener[0].mean(), z[0].mean(), rtol=1e-12)  # the brightness is kept
    assert float((wiener[0] - wiener[0].mean()).abs().max()) < 0.05 * float(z[0].mean(0).std())


def test_flat_means_take_the_blotches_out_of_a_smooth_image(monkeypatch):
    """Only the first covariance pass denoises flat groups' mean patches; on a smooth ramp
    with white noise of std 25 that takes out more than 5% of the squared error."""
    from libcem.denoiser import passes

    flats = []
    plain = covariance.posterior_mean

    def record(z, pil, sigma2, em_iter=0, prior=0.0, to_diagonal=0.0, flat=0.0, **kw):
        flats.append(flat)
        return plain(z, pil, sigma2, em_iter, prior, to_diagonal, flat, **kw)

    monkeypatch.setattr(covariance, "posterior_mean", record)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    clean = (100 + 0.5 * xx + 0.3 * yy)[None]
    noisy = clean + 25 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    err = []
    for threshold in (0.0, 0.01):
        flats.clear()
        out = passes.denoise_tensor(noisy, 25.0, DenoiseConfig(flat_threshold=threshold))[0]
        err.append(float(((out - clean) ** 2).mean()))
        assert set(flats) == {threshold, 0.0}
        assert flats[0] == threshold and flats[-1] == 0.0  # the first pass, not the later one
    assert err[1] < 0.95 * err[0]


def _synthetic_groups(seed: int, g: int, k: int, d: int, sigma: float):
    """Synthetic groups (float64): pilots whose members share structure, and noisy patches."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(g, 3, d, generator=gen, dtype=torch.float64) * 10
    pilot = torch.randn(g, k, 3, generator=gen, dtype=torch.float64).cumsum(1) @ basis / 3
    z = pilot + sigma * torch.randn(g, k, d, generator=gen, dtype=torch.float64)
    return z, pilot


def test_texture_graph_takes_each_groups_mean_distance_as_its_bandwidth():
    """exp(-dist / beta), beta the group's mean distance between members, so -log w averages
    exactly 1 over each group's edges, whatever the patches' scale; equal patches give a
    complete graph, and the patch's own brightness (DC) does not count."""
    from libcem.denoiser.attention import texture_graph

    _, pilot = _synthetic_groups(0, 3, 8, 9, 1.0)
    w = texture_graph(pilot)
    off = ~torch.eye(8, dtype=torch.bool)
    assert torch.allclose((-w.log())[:, off].mean(1), torch.ones(3, dtype=torch.float64))
    assert torch.all(w.diagonal(dim1=1, dim2=2) == 0) and torch.allclose(w, w.transpose(1, 2))
    assert torch.allclose(texture_graph(pilot * 7 + torch.randn(3, 8, 1, dtype=torch.float64)), w)
    same = torch.ones(1, 8, 9, dtype=torch.float64) * torch.arange(8.0, dtype=torch.float64)[:, None]
    assert torch.equal(texture_graph(same)[0], off.double())


@pytest.mark.parametrize("em_iter, k, d", [(2, 12, 9), (0, 12, 9), (0, 6, 9)])  # EM, d <= K, d > K
def test_group_graph_adds_one_diffusion_step_through_the_noise_part(em_iter, k, d):
    """With a graph, the estimate is M0 + R sigma^2 (C + sigma^2 I)^-1, R =
    `diffusion_residual`(M0), M0 the estimate without it (each form of the posterior mean);
    channels stacked on the group axis share their group's graph; tau = 0 changes nothing."""
    from libcem.denoiser.attention import texture_graph
    from libcem.denoiser.graph import diffusion_residual

    sigma2 = 4.0
    z, pilot = _synthetic_groups(1, 6, k, d, 2.0)  # 6 = 2 channels x 3 groups
    graph = texture_graph(pilot[:3])
    plain, kept = covariance.posterior_mean(z, pilot, sigma2, em_iter)
    est, kept_graph = covariance.posterior_mean(z, pilot, sigma2, em_iter, graph=graph, tau=1.0)
    mu = z.mean(1, keepdim=True)
    a = pilot - pilot.mean(1, keepdim=True)
    cov = a.transpose(1, 2) @ a / k
    if em_iter:
        cov = covariance.em_covariance(z - mu, cov, sigma2, em_iter, 0.0)
    noise_part = sigma2 * torch.linalg.inv(cov + sigma2 * torch.eye(d, dtype=torch.float64))
    step = diffusion_residual(plain - mu, graph, 1.0)
    assert torch.allclose(est, plain + step @ noise_part, atol=1e-8) and torch.equal(kept, kept_graph)
    per_channel = [diffusion_residual((plain - mu)[3 * c:3 * c + 3], graph, 1.0) for c in (0, 1)]
    assert torch.allclose(step, torch.cat(per_channel))
    assert torch.equal(covariance.posterior_mean(z, pilot, sigma2, em_iter, graph=graph, tau=0.0)[0], plain)


def test_group_graph_step_approaches_the_matrix_normal_posterior():
    """Under the matrix-normal model (group-axis precision (I + tau L) / a, a = 1 + tau tr L /
    (K - 1)), the exact posterior mean M solves (sigma^2 / a)(M + tau L M) + M C = Z C
    (solved here in the eigenbases of L and C). One step from the independent-patch estimate
    M0 takes most of the way: within a third of M0's distance to M; a complete graph adds
    nothing (its proper modes all have the same precision)."""
    from libcem.denoiser.attention import texture_graph
    from libcem.denoiser.graph import laplacian

    k, d, sigma2, tau = 16, 9, 25.0, 1.0
    z, pilot = _synthetic_groups(2, 4, k, d, 5.0)
    graph = texture_graph(pilot)
    plain, _ = covariance.posterior_mean(z, pilot, sigma2)
    est, _ = covariance.posterior_mean(z, pilot, sigma2, graph=graph, tau=tau)
    mu = z.mean(1, keepdim=True)
    a = pilot - pilot.mean(1, keepdim=True)
    lam, u = torch.linalg.eigh(laplacian(graph))
    cv, cu = torch.linalg.eigh(a.transpose(1, 2) @ a / k)
    scale = 1 + tau * lam.sum(1, keepdim=True) / (k - 1)  # a, per group
    prec = (1 + tau * lam.clamp_min(0)) / scale  # (G, K)
    coef = u.transpose(1, 2) @ (z - mu) @ cu
    exact = mu + u @ (coef * cv[:, None] / (cv[:, None] + sigma2 * prec[..., None])) @ cu.transpose(1, 2)
    for i in range(4):
        assert float((est[i] - exact[i]).norm()) < float((plain[i] - exact[i]).norm()) / 3
    complete = torch.ones(4, k, k, dtype=torch.float64) - torch.eye(k, dtype=torch.float64)
    assert torch.allclose(covariance.posterior_mean(z, pilot, sigma2, graph=complete, tau=tau)[0], plain)


def test_only_the_first_covariance_pass_diffuses_along_its_groups(monkeypatch):
    """The first covariance pass gets the pilot luminance's texture graph (the chain with
    graph="chain") at tau = cov_graph_tau_color (a colour image's), for every channel, also
    with pass 1's graph diffusion off (graph_diffusion=False, as under correlated noise);
    later passes get none, and `--fast` none on gray images."""
    from libcem.denoiser import passes
    from libcem.denoiser.attention import texture_graph

    cfg, pilot, noisy, _ = _small_colour_pass()
    calls = []
    plain = covariance.posterior_mean

    def record(z, pil, sigma2, em_iter=0, prior=0.0, to_diagonal=0.0, flat=0.0, graph=None, tau=0.0, **kw):
        calls.append((tau, graph, pil))
        return plain(z, pil, sigma2, em_iter, prior, to_diagonal, flat, graph, tau, **kw)

    monkeypatch.setattr(covariance, "posterior_mean", record)
    passes.covariance_pass(noisy, pilot, 400.0, cfg)
    (tau, lum_graph, lum), (_, chroma_graph, _) = calls[:2]
    assert tau == 1.0 and lum_graph is chroma_graph and torch.equal(lum_graph, texture_graph(lum))
    calls.clear()
    passes.covariance_pass(noisy, pilot, 400.0, cfg.override(graph="chain"))
    chain = calls[0][1]
    assert torch.equal(chain[0], torch.diag(torch.ones(7), 1) + torch.diag(torch.ones(7), -1))
    # a colour image takes `cov_graph_tau_color`, on with `--fast` too; a gray one `cov_graph_tau`
    for changed, later, expected in (({}, True, 0.0), ({"graph_diffusion": False}, False, 1.0),
                                     ({"cov_graph_tau": SPEEDS["fast"]["cov_graph_tau"]}, False, 1.0),
                                     ({"cov_graph_tau_color": 0.0}, False, 0.0)):
        calls.clear()
        passes.covariance_pass(noisy, pilot, 400.0, cfg.override(**changed), later=later)
        assert {tau for tau, _, _ in calls} == {expected}
    fast = DenoiseConfig.for_speed("fast")
    assert (fast.graph_tau(1), fast.graph_tau(3), cfg.graph_tau(1)) == (0.0, 1.0, 1.0)


@pytest.mark.parametrize("d", [5, 25, 26, 49, 81, 147])  # LAPACK alone, one split, several
def test_spd_inverse_is_the_inverse(d):
    g = torch.Generator().manual_seed(d)
    a = torch.randn(4, d + 3, d, generator=g, dtype=torch.float64)
    ridge = torch.tensor([0.1, 1.0, 10.0, 1e4], dtype=torch.float64) * d  # ill- to well-conditioned
    m = a.transpose(1, 2) @ a + ridge[:, None, None] * torch.eye(d, dtype=torch.float64)
    inv = linalg.spd_inverse(m, ridge)
    assert torch.allclose(inv @ m, torch.eye(d, dtype=torch.float64).expand(4, d, d), atol=1e-9)
    assert torch.allclose(inv, inv.transpose(1, 2), atol=1e-12)


def test_spd_inverse_sends_ill_conditioned_matrices_to_cholesky(monkeypatch):
    """By blocks, float32 rounding grows with the condition number squared: a matrix whose
    bound tr M / ridge exceeds SPD_BLOCK_COND is inverted again through Cholesky, and a batch
    of mostly such matrices goes through Cholesky alone."""
    calls = []
    real = linalg._block_inverse
    monkeypatch.setattr(linalg, "_block_inverse", lambda m, failed: calls.append(m.shape[0]) or real(m, failed))
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 64, 49, generator=g)
    ridge = torch.tensor([100.0, 1e-3, 100.0, 100.0])  # bounds about 80, 3e6, 80, 80
    m = a.transpose(1, 2) @ a + ridge[:, None, None] * torch.eye(49)
    inv = linalg.spd_inverse(m, ridge)
    assert calls and calls[0] == 4  # the batch by blocks
    assert torch.equal(inv[1], torch.cholesky_inverse(torch.linalg.cholesky(m[1:2]))[0])
    assert torch.allclose(inv @ m, torch.eye(49).expand(4, 49, 49), atol=1e-4)
    calls.clear()
    ridge = torch.tensor([1e-3, 1e-3, 1e-3, 100.0])
    m = a.transpose(1, 2) @ a + ridge[:, None, None] * torch.eye(49)
    assert torch.equal(linalg.spd_inverse(m, ridge), torch.cholesky_inverse(torch.linalg.cholesky(m)))
    assert not calls


def test_spd_inverse_refuses_a_matrix_that_is_not_positive_definite():
    m = torch.eye(49).repeat(2, 1, 1)
    m[1, 40, 40] = -1.0  # lands in a Schur complement, past the first block
    with pytest.raises(torch.linalg.LinAlgError):
        linalg.spd_inverse(m, 1.0)


def test_block_inverse_flags_a_failed_factor_instead_of_raising_for_the_batch():
    """A block whose Cholesky factor fails with an exact zero on its diagonal (as float32
    rounding gave one ill-conditioned covariance among 384 on a camera-noise image) is flagged
    in `failed`; the other matrices of the batch are still inverted."""
    m = torch.eye(49).repeat(3, 1, 1) * 2.0
    m[1, 3, 3] = 0.0  # singular: the factor's fourth diagonal element is zero
    failed = torch.zeros(3, dtype=torch.bool)
    out = linalg._block_inverse(m, failed)
    assert failed.tolist() == [False, True, False]
    assert torch.allclose(out[[0, 2]], torch.eye(49).repeat(2, 1, 1) / 2.0)


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


@pytest.mark.parametrize("channels", [1, 3])
def test_first_pass_without_diffusion_skips_the_graph_and_gives_the_same_estimate(channels, monkeypatch):
    from libcem.denoiser import passes

    cfg = DenoiseConfig(graph_diffusion=False)
    x = torch.tensor(data.astronaut()[100:164, 150:214], dtype=torch.float32).permute(2, 0, 1)
    x = x[:channels] if channels == 3 else x.mean(0, keepdim=True)
    y = x + 25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    groups = PatchGroups(pad_to_grid(y, cfg.patch, cfg.step), cfg.patch, cfg.heads_for(channels))
    positions = groups.match(cfg.step, cfg.search_radius, cfg.pass1_group_size(channels))
    params, _ = fit_group_model(groups, positions, 25.0, cfg, torch.Generator().manual_seed(0))
    assert params.tau == 0.0
    fast = passes.graph_diffusion_pass(groups, positions, params, cfg)  # the DCT along the group
    built, graph = [], passes._graph
    monkeypatch.setattr(passes, "_group_dct", lambda k, device: None)
    monkeypatch.setattr(passes, "_graph", lambda *a: built.append(1) or graph(*a))
    slow = passes.graph_diffusion_pass(groups, positions, params, cfg)  # each group's eigenbasis
    assert built and torch.allclose(fast, slow, atol=1e-3)  # grey levels, float32 rounding
    assert (fast[:, :64, :64] - y).abs().mean() > 5  # it did denoise


def test_new_settings_are_checked():
    with pytest.raises(LibcemError, match="pass2"):
        DenoiseConfig(pass2="bm4d")
    with pytest.raises(LibcemError, match="graph"):
        DenoiseConfig(graph="star")
    assert DenoiseConfig(graph="chain").heads_for(3) == ("chain",)
    with pytest.raises(LibcemError, match="group_size_wiener_high"):
        DenoiseConfig(search_radius_high=4, group_size_wiener_high=82)  # more than the window


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


def _covariance_toy(k: int = 40, d: int = 6):
    """Groups of k noisy patches (noise variance 0.49) from a known covariance, and a pilot
    covariance 0.3 times too small (as a smoothed first estimate's)."""
    g = torch.Generator().manual_seed(0)
    b = torch.randn(5, d, d, generator=g, dtype=torch.float64)
    cov = b @ b.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)
    x = torch.randn(5, k, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).transpose(1, 2)
    z = x + 0.7 * torch.randn(5, k, d, generator=g, dtype=torch.float64)
    return z - z.mean(1, keepdim=True), cov, 0.3 * cov


@pytest.mark.parametrize("prior", [0.0, 0.5])  # maximum likelihood and MAP
def test_covariance_em_never_lowers_its_objective(prior):
    zc, _, cov0 = _covariance_toy()
    previous = covariance.em_objective(zc, cov0, cov0, 0.49, prior)
    for iters in range(1, 25):
        now = covariance.em_objective(zc, covariance.em_covariance(zc, cov0, 0.49, iters, prior),
                                      cov0, 0.49, prior)
        assert bool((now >= previous - 1e-9).all())
        previous = now


def test_covariance_em_restores_what_the_pilot_flattened():
    zc, truth, cov0 = _covariance_toy(k=400)
    fitted = covariance.em_covariance(zc, cov0, 0.49, 50, 0.0)
    before = (cov0 - truth).norm(dim=(1, 2)) / truth.norm(dim=(1, 2))  # 0.7 by construction
    after = (fitted - truth).norm(dim=(1, 2)) / truth.norm(dim=(1, 2))
    assert bool((after < 0.25).all()) and torch.allclose(before, torch.full_like(before, 0.7))


def test_covariance_em_step_is_the_closed_form_m_step():
    zc, _, cov0 = _covariance_toy()
    k, d = zc.shape[1], zc.shape[2]
    one = covariance.em_covariance(zc, cov0, 0.49, 1, 0.5)
    for i in range(zc.shape[0]):
        gain = torch.linalg.solve(cov0[i] + 0.49 * torch.eye(d, dtype=torch.float64), cov0[i])
        post_mean = zc[i] @ gain  # rows: E[x_k]
        second = post_mean.T @ post_mean + k * 0.49 * gain  # sum_k E[x_k x_k^T]
        assert torch.allclose(one[i], (0.5 * k * cov0[i] + second) / (1.5 * k), atol=1e-10)


def test_posterior_mean_with_em_uses_the_fitted_covariance():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 12, 5, generator=g, dtype=torch.float64)
    pilot = torch.randn(2, 12, 5, generator=g, dtype=torch.float64)
    est, kept = covariance.posterior_mean(z, pilot, 0.5, em_iter=2)
    mu = z.mean(1, keepdim=True)
    a = pilot - pilot.mean(1, keepdim=True)
    cov = covariance.em_covariance(z - mu, a.transpose(1, 2) @ a / 12, 0.5, 2, 0.0)
    gain = covariance.shrinkage(cov, 0.5)
    assert torch.allclose(est, mu + (z - mu) @ gain, atol=1e-12)
    assert torch.allclose(kept, gain.diagonal(dim1=1, dim2=2).sum(1), atol=1e-12)
    plain, _ = covariance.posterior_mean(z, pilot, 0.5)
    assert not torch.allclose(est, plain, atol=1e-3)


def test_feedback_returns_part_of_the_residual_at_the_noise_left():
    from libcem.denoiser.passes import feedback

    noisy = torch.zeros(1, 16, 16)
    est = noisy - 3.0  # residual 3 everywhere: mean square 9
    cfg = DenoiseConfig(feedback=0.1, feedback_gamma=0.6, patch=4)
    source, sigma2 = feedback(noisy, est, 25.0, cfg, (16, 16), ())
    assert sigma2 == pytest.approx(0.36 * (25.0 - 9.0))
    assert torch.allclose(source.coef[:, 0, 0], torch.full((13 * 13,), -2.7 * 4))  # DC = mean * p


def test_feedback_and_covariance_em_settings_are_checked():
    for bad in ({"feedback": 1.5}, {"feedback_gamma": 0.0}, {"cov_em_iter_gray": -1}, {"cov_em_iter_color": -1},
                {"cov_prior": -1.0}, {"feedback_gamma_high": 1.5}, {"cov_em_iter_high_gray": -1},
                {"cov_em_iter_high_color": -1}, {"cov_em_iter_later": -1}, {"pass2_repeats_color_high": 0},
                {"later_pass2": "wiener"}, {"group_size_gray": 1}, {"aggregation_window_gray": -1.0},
                {"chroma_to_diagonal": 1.5}, {"chroma_to_diagonal_high": -0.1}, {"flat_threshold": -0.01},
                {"cov_graph_tau": -1.0}):
        with pytest.raises(LibcemError, match=next(iter(bad))):
            DenoiseConfig(**bad)


def test_sigma_schedule_switches_the_high_noise_settings():
    cfg = DenoiseConfig()
    assert cfg.at_sigma(25.0, 256) is cfg
    high = cfg.at_sigma(50.0, 256)
    assert (high.patch, high.pass2, high.pass2_repeats_gray, high.feedback, high.feedback_gamma,
            high.search_radius) == (9, "covariance", 3, 0.1, 0.7, 20)
    assert (high.group_size_wiener, cfg.group_size_wiener) == (81, 64)  # K >= d = 81 at 9x9
    assert high.later_pass2 == "covariance"
    # above sigma 37.5 one covariance EM iteration in the first gray pass (session 23), none on colour
    assert [high.cov_em_iter(c, later) for c in (1, 3) for later in (False, True)] == [1, 0, 0, 0]
    assert [cfg.cov_em_iter(c, later) for c in (1, 3) for later in (False, True)] == [2, 0, 1, 0]
    assert DenoiseConfig(cov_em_iter_high_color=2).at_sigma(50.0, 256).cov_em_iter(3, later=False) == 2
    assert (high.pass2_repeats_color, cfg.pass2_repeats_color) == (3, 3)  # 3 at every sigma since session 23
    # the search window: 33x33 on gray images, 41x41 on colour ones (session 23) and above 37.5
    assert [c.radius(n) for c in (cfg, high) for n in (1, 3)] == [16, 20, 20, 20]
    with pytest.raises(LibcemError, match="search_radius_color"):
        DenoiseConfig(search_radius_color=2)  # no room for the groups
    fast = DenoiseConfig.for_speed("fast")
    assert (fast.at_sigma(50.0, 256).pass2_repeats_color, fast.at_sigma(25.0, 256).pass2_repeats_color) == (2, 2)
    assert cfg.at_sigma(50.0, 8) is cfg  # too small for 9x9 patches
    assert DenoiseConfig(sigma_schedule=False).at_sigma(50.0, 256).patch == 7


def test_graph_wiener_pass_keeps_the_image_when_the_pilot_is_clean_and_the_noise_vanishes():
    """The graph Wiener gain q^2 / (q^2 + sigma^2) is 1 when sigma^2 -> 0 and the pilot's
    coefficients are the image's, so the pass returns the image (an optional second pass since
    session 12)."""
    from libcem.denoiser.passes import wiener_pass

    cfg = DenoiseConfig(patch=4, step=4, step_wiener=4, group_size=8, group_size_wiener=8, search_radius=4,
                        em_groups=16)
    img = torch.from_numpy(data.camera()[100:124, 100:124].astype(np.float32))[None]
    groups = PatchGroups(img, cfg.patch, ("texture",))
    positions = groups.match(cfg.step, cfg.search_radius, cfg.group_size)
    params, _ = fit_group_model(groups, positions, 10.0, cfg, torch.Generator().manual_seed(0))
    out, matched = wiener_pass(groups, img, 1e-6, cfg, params)
    assert matched.shape == (36, 8)
    assert torch.allclose(out, img, atol=1e-2)


def test_second_pass_with_given_groups_equals_matching_them():
    from libcem.denoiser.passes import covariance_pass

    cfg = DenoiseConfig(patch=4, step_wiener=4, group_size_wiener=8, search_radius=4,
                        skip_covered=0.0)
    g = torch.Generator().manual_seed(0)
    pilot = torch.rand(1, 24, 24, generator=g) * 255
    noisy = PatchGroups(pilot + 20 * torch.randn(1, 24, 24, generator=g), cfg.patch, ())
    matched_out, matched = covariance_pass(noisy, pilot, 400.0, cfg)
    given_out, given = covariance_pass(noisy, pilot, 400.0, cfg, positions=matched)
    assert given is matched and torch.equal(given_out, matched_out)
    assert matched.shape == (36, 8)  # a 6 x 6 grid of references, 8 patches each


def test_a_later_covariance_pass_takes_its_own_em_iterations():
    from libcem.denoiser.passes import covariance_pass

    cfg = DenoiseConfig(patch=4, step_wiener=4, group_size_wiener=8, search_radius=4)
    g = torch.Generator().manual_seed(0)
    pilot = torch.rand(1, 24, 24, generator=g) * 255
    noisy = PatchGroups(pilot + 20 * torch.randn(1, 24, 24, generator=g), cfg.patch, ())
    later, _ = covariance_pass(noisy, pilot, 400.0, cfg, later=True)
    first, _ = covariance_pass(noisy, pilot, 400.0, cfg)
    no_em, _ = covariance_pass(noisy, pilot, 400.0, cfg.override(cov_em_iter_gray=0, cov_graph_tau=0.0))
    assert (cfg.cov_em_iter(1, later=False), cfg.cov_em_iter(1, later=True)) == (2, 0)
    assert torch.equal(later, no_em) and not torch.allclose(first, no_em)


@pytest.mark.parametrize("sigma, expected", [
    (20.0, [("covariance", 400.0, None, 2), ("covariance", "fed back", "reused", 0)]),
    (50.0, [("covariance", 2500.0, None, 1), ("covariance", "fed back", "reused", 0),
            ("covariance", "fed back", "reused", 0)]),
])
def test_second_passes_in_order(monkeypatch, sigma, expected):
    """Gray images: two second passes; the later one is the covariance pass on the previous
    groups with the feedback source and noise level and no covariance EM; above sigma 37.5
    two such later passes, and one covariance EM iteration in the first (session 23)."""
    from libcem.denoiser import passes

    calls = []

    def record(kind):
        def run(source, pilot, sigma2, cfg, *rest, later=False):
            positions = rest[-1] if len(rest) in (1, 2) and rest[-1] is not None else None
            fed = "fed back" if sigma2 != sigma**2 else sigma2
            calls.append((kind, fed, "reused" if positions is not None else None, cfg.cov_em_iter(1, later)))
            return pilot.clone(), torch.zeros(1, 1, dtype=torch.long)
        return run

    monkeypatch.setattr(passes, "covariance_pass", record("covariance"))
    monkeypatch.setattr(passes, "wiener_pass", record("graph_wiener"))
    noisy = torch.from_numpy(data.camera()[:48, :48].astype(np.float32))[None] + sigma
    passes.denoise_tensor(noisy, sigma, DenoiseConfig())
    assert calls == expected


def test_first_pass_group_size_by_channels(monkeypatch):
    from libcem.denoiser import passes

    sizes = []
    real = passes.PatchGroups.match
    monkeypatch.setattr(passes.PatchGroups, "match", lambda self, step, radius, k: sizes.append(k) or real(self, step, radius, k))
    assert (DenoiseConfig().pass1_group_size(1), DenoiseConfig().pass1_group_size(3)) == (16, 16)
    cfg = DenoiseConfig(pass2_repeats_gray=1, pass2_repeats_color=1, group_size=32)
    assert (cfg.pass1_group_size(1), cfg.pass1_group_size(3)) == (16, 32)
    assert (cfg.aggregation_window(1), cfg.aggregation_window(3)) == (1.0, 0.0)
    gray = torch.from_numpy(data.camera()[:40, :40].astype(np.float32))[None]
    passes.denoise_tensor(gray, 20.0, cfg)
    colour = torch.from_numpy(data.astronaut()[:40, :40].astype(np.float32)).permute(2, 0, 1).contiguous()
    passes.denoise_tensor(colour, 20.0, cfg)
    assert sizes == [16, cfg.group_size_wiener, 32, cfg.group_size_wiener]


@pytest.mark.parametrize("window", [0.0, 2.0])
@pytest.mark.parametrize("band_rows", [None, 1, 3])  # None: the whole table in one band
def test_aggregation_is_the_window_weighted_mean_of_the_covering_patches(window, band_rows, monkeypatch):
    from libcem.denoiser import patches
    from libcem.denoiser.patches import PatchAccumulator

    patch, h, w, channels = 3, 6, 6, 2
    hn, wn = h - patch + 1, w - patch + 1
    if band_rows is not None:  # fold in bands of this many position rows (the last one shorter)
        monkeypatch.setattr(patches, "FOLD_BAND_BYTES", 4 * wn * channels * patch**2 * band_rows)
    g = torch.Generator().manual_seed(0)
    estimates = torch.rand(hn * wn, 1, channels, patch * patch, generator=g)  # one patch per position
    weights = torch.rand(hn * wn, generator=g) + 0.5
    acc = PatchAccumulator((channels, h, w), patch, window=window)
    acc.add(estimates, torch.arange(hn * wn)[:, None], weights)
    side = torch.kaiser_window(patch, periodic=False, beta=window) if window else torch.ones(patch)
    want = torch.zeros(channels, h, w)
    for ch in range(channels):
        for y in range(h):
            for x in range(w):
                num = den = 0.0
                for r in range(max(0, y - patch + 1), min(hn, y + 1)):
                    for c in range(max(0, x - patch + 1), min(wn, x + 1)):
                        dy, dx = y - r, x - c
                        wt = float(weights[r * wn + c] * side[dy] * side[dx])
                        num += wt * float(estimates[r * wn + c, 0, ch, dy * patch + dx])
                        den += wt
                want[ch, y, x] = num / den
    assert torch.allclose(acc.image(), want, atol=1e-6)


def test_patches_are_gathered_channel_by_channel():
    """The covariance pass's batch: group i's K patches of channel c at row c * G + i."""
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 12, 11, generator=g) * 255
    patch = 4
    groups = PatchGroups(img, patch, ())
    hn, wn = groups.height, groups.width
    positions = torch.randint(0, hn * wn, (5, 6), generator=g)
    got = groups.patches(positions)  # (C * G, K, p * p)
    for c in range(3):
        for i in range(5):
            for j in range(6):
                y, x = divmod(int(positions[i, j]), wn)
                want = img[c, y:y + patch, x:x + patch].reshape(-1)
                assert torch.equal(got[c * 5 + i, j], want)


@pytest.mark.parametrize("shared", [True, False])
def test_patch_table_is_whitened_once_in_steps(shared, monkeypatch):
    from libcem.denoiser import passes

    g = torch.Generator().manual_seed(0)
    table = torch.randn(3, 10, 4, generator=g)
    matrix = torch.randn(1 if shared else 3, 4, 4, generator=g)
    expected = table @ matrix
    monkeypatch.setattr(passes, "WHITEN_ROWS", 3)  # 10 rows in steps of 3, the last one short
    passes._whiten_in_place(table, matrix)
    assert torch.allclose(table, expected, atol=1e-6)
