"""The group-axis Wiener passes (linear combinations of patches, `--best`): exact answers on
toy groups, the pass schedule, and what they do to a noisy image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from libcem.denoiser import DenoiseConfig, combination, denoise
from libcem.denoiser.passes import PatchGroups, combination_pass, combination_passes
from libcem.denoiser.patches import to_opponent
from libcem.errors import LibcemError


def test_flat_pilot_gives_the_group_mean():
    """A pilot with no signal (all patches zero) makes every member's estimate the group mean."""
    theta = combination.group_filter(torch.zeros(3, 5, 4), torch.full((3,), 7.0))
    assert torch.allclose(theta, torch.full((3, 5, 5), 0.2), atol=1e-6)


@pytest.mark.parametrize("k, n", [(6, 4), (5, 12)])
def test_group_filter_is_the_best_affine_combination(k, n):
    """Row j of theta minimises the expected error of sum_i theta_ji z_i for member j, when
    z = x + noise of variance v, x the pilot: theta^T (G + n v I) theta - 2 theta^T G e_j with
    G = X X^T, subject to sum_i theta_ji = 1. Solved here as its KKT system in float64."""
    g = torch.Generator().manual_seed(0)
    pilot = torch.randn(2, k, n, generator=g, dtype=torch.float64) * 3
    var = torch.tensor([0.5, 4.0], dtype=torch.float64)
    theta = combination.group_filter(pilot, var)
    for b in range(2):
        gram = pilot[b] @ pilot[b].T
        kkt = torch.zeros(k + 1, k + 1, dtype=torch.float64)
        kkt[:k, :k] = gram + n * var[b] * torch.eye(k, dtype=torch.float64)
        kkt[:k, k] = kkt[k, :k] = 1.0
        for j in range(k):
            rhs = torch.cat([gram[:, j], torch.ones(1, dtype=torch.float64)])
            assert torch.allclose(theta[b, j], torch.linalg.solve(kkt, rhs)[:k], atol=1e-9)
    assert torch.allclose(theta.sum(2), torch.ones(2, k, dtype=torch.float64))


def test_member_weights_are_the_inverse_noise_gain():
    theta = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    assert torch.equal(combination.member_weights(theta), torch.tensor([[1.0, 2.0]]))


def test_noise_left_is_the_fraction_not_yet_removed():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(4, 8, 16, generator=g)
    noise = (noise - noise.mean((1, 2), keepdim=True)) / noise.std((1, 2), correction=0, keepdim=True)
    clean = torch.rand(4, 8, 16, generator=g)
    noisy = clean + 10 * noise
    left = combination.noise_left(noisy, clean + 3 * noise, 10.0, 0.01)
    assert torch.allclose(left, torch.full((4,), 0.3), atol=1e-5)
    assert torch.equal(combination.noise_left(noisy, noisy, 10.0, 0.01), torch.ones(4))
    assert torch.allclose(combination.noise_left(noisy, clean, 10.0, 0.05), torch.full((4,), 0.05))


def _noisy_camera(size=48, sigma=25.0, seed=0):
    clean = torch.from_numpy(data.camera()[100:100 + size, 100:100 + size].astype(np.float32))[None]
    g = torch.Generator().manual_seed(seed)
    return clean, clean + sigma * torch.randn(clean.shape, generator=g)


def test_a_pass_hands_on_the_estimate_with_tau_of_the_noise_left():
    """The next source is est + (tau / t)(z - est): tau = 0 gives the estimate itself, and on
    the noisy image (t = 1) it is the estimate mixed with tau of the noisy image."""
    cfg = DenoiseConfig(combination_radius=8, threads=1)
    clean, noisy = _noisy_camera()
    groups = PatchGroups(noisy, cfg.combination_patch, ())
    est, following, pos = combination_pass(groups, groups, clean, 25.0, 0.0, cfg)
    assert torch.equal(est, following) and pos.shape == (15 * 15, 64)
    est2, mixed, _ = combination_pass(groups, groups, clean, 25.0, 0.4, cfg, pos)
    assert torch.equal(est2, est)
    assert torch.allclose(mixed, 0.6 * est + 0.4 * noisy, atol=1e-3)


def test_passes_bring_the_error_down_and_do_not_depend_on_the_thread_count(torch_threads):
    torch.set_num_threads(1)  # as each chunk thread: float32 sums round the same way
    cfg = DenoiseConfig(combination_passes=3, combination_radius=8, chunk=16)
    clean, noisy = _noisy_camera()
    pilot = torch.from_numpy(denoise(noisy[0].numpy(), 25.0, config=DenoiseConfig(threads=1)))[None]
    one = combination_passes(noisy, pilot, 25.0, cfg.override(threads=1))
    three = combination_passes(noisy, pilot, 25.0, cfg.override(threads=3))
    assert torch.equal(one, three) and one.shape == noisy.shape

    def mse(x):
        return float(((x - clean) ** 2).mean())

    assert mse(one) < 0.95 * mse(pilot)


def test_best_speed_runs_the_passes_after_the_others_on_gray_and_the_colour_luminance(monkeypatch):
    from libcem.denoiser import passes

    seen = []
    real = passes.combination_passes

    def record(noisy, est, sigma, cfg):
        seen.append((noisy.shape[0], round(sigma, 3), cfg.combination_passes))
        return real(noisy, est, sigma, cfg)

    monkeypatch.setattr(passes, "combination_passes", record)
    best = DenoiseConfig.for_speed("best").override(combination_radius=6)
    rgb = data.astronaut()[100:140, 100:140].astype(np.float32) / 255.0
    noisy = rgb + np.random.default_rng(0).normal(0, 20 / 255.0, rgb.shape).astype(np.float32)
    out = denoise(noisy, 20 / 255.0, config=best)
    denoise(noisy[..., 0], 50 / 255.0, config=best)
    default = denoise(noisy, 20 / 255.0, config=DenoiseConfig())  # the default: none
    assert seen == [(3, 20.0, 9), (1, 20.0, 9), (1, 50.0, 11)]  # colour: the luminance only
    assert out.shape == rgb.shape
    chroma = [to_opponent(torch.from_numpy(x).permute(2, 0, 1))[1:] for x in (out, default)]
    assert torch.allclose(*chroma, atol=1e-6) and not np.allclose(out, default, atol=1e-3)


def test_combination_settings_are_checked():
    for bad in ({"combination_passes": -1}, {"combination_step": 7}, {"combination_tau": 1.0},
                {"combination_group_size": 200, "combination_radius": 6},
                {"combination_rematch": 0}, {"combination_noise_floor": 0.0}):
        with pytest.raises(LibcemError, match="combination_"):
            DenoiseConfig(**bad)


def test_an_image_smaller_than_the_combination_patch_skips_those_passes():
    noisy = np.random.default_rng(0).random((8, 30)).astype(np.float32)
    wide = DenoiseConfig.for_speed("best").override(combination_patch=10)
    assert np.array_equal(denoise(noisy, 0.1, config=wide), denoise(noisy, 0.1, config=DenoiseConfig()))
