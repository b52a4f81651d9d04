"""Noise clipped at black and white (`clipping`): the censored-normal moments, their
inverse, and the denoiser on an 8-bit image, with white and with Poisson-Gaussian noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from libcem.denoiser import clipping, denoise
from libcem.denoiser.api import (
    denoise_float,
    estimate_before_clipping,
    estimate_noise,
    estimate_white,
)
from libcem.denoiser.settings import DenoiseConfig


@pytest.mark.parametrize("level, sigma", [(0.0, 50.0), (10.0, 25.0), (128.0, 50.0), (250.0, 15.0)])
def test_moments_match_sampled_clipped_noise(level, sigma):
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sample = (level + sigma * z).clamp(0, 255)
    mean, var = clipping.moments(torch.tensor([level]), sigma)
    assert abs(float(mean) - float(sample.mean())) < 0.2
    assert abs(float(var.sqrt()) - float(sample.std())) < 0.2


def test_moments_of_known_cases():
    mean, var = clipping.moments(torch.tensor([0.0, 127.5, 1000.0]), 50.0)
    assert float(mean[0]) == pytest.approx(50 / np.sqrt(2 * np.pi), rel=1e-6)  # sigma phi(0)
    assert float(var[0]) == pytest.approx(2500 * (0.5 - 1 / (2 * np.pi)), rel=1e-6)
    assert float(mean[1]) == pytest.approx(127.5, abs=1e-9)  # symmetric about the middle
    assert float(mean[2]) == pytest.approx(255.0) and float(var[2]) == pytest.approx(0.0, abs=1e-9)


def test_unclip_inverts_the_clipped_mean():
    x = torch.linspace(0, 255, 52, dtype=torch.float64)
    mean = clipping.moments(x, 40.0)[0]
    assert torch.allclose(clipping.unclip(mean, 40.0), x, atol=0.05)
    ends = clipping.unclip(torch.tensor([0.0, 5.0, 254.0, 255.0]), 40.0)
    assert ends.tolist() == [0.0, 0.0, 255.0, 255.0]  # beyond the means of 0 and 255
    big = torch.rand(3, 700, 800, generator=torch.Generator().manual_seed(0)) * 255  # in chunks
    assert clipping.unclip(big, 20.0).shape == big.shape


def test_effective_std_of_flat_images():
    assert clipping.effective_std(torch.full((1, 20, 20), 128.0), 10.0) == pytest.approx(10.0, rel=1e-6)
    black = clipping.effective_std(torch.zeros(3, 20, 20), 50.0)
    assert black == pytest.approx(50 * np.sqrt(0.5 - 1 / (2 * np.pi)), rel=1e-6)


def test_effective_std_counts_levels_as_each_pixel_would():
    """Levels counted on the 1/49 grid: an 8-bit image's std as from every pixel's own
    clipped variance (to rounding), any other image's within a half step of the grid."""
    import torch.nn.functional as F

    def per_pixel(img: torch.Tensor, sigma: float) -> float:
        level = F.avg_pool2d(F.pad(img[None].double(), (3,) * 4, mode="replicate"), 7, stride=1)
        return float(clipping.moments(level, sigma)[1].mean().sqrt())

    g = torch.Generator().manual_seed(0)
    eight_bit = torch.randint(0, 256, (3, 40, 50), generator=g).float()
    eight_bit[:, :10] = 0.0  # a black band, where clipping bites
    smooth = torch.rand(1, 40, 50, generator=g) * 255
    for sigma in (5.0, 25.0, 50.0):
        exact, near = per_pixel(eight_bit, sigma), per_pixel(smooth, sigma)
        assert clipping.effective_std(eight_bit, sigma) == pytest.approx(exact, rel=1e-9)
        assert clipping.effective_std(smooth, sigma) == pytest.approx(near, rel=1e-4)


@pytest.mark.parametrize("img, clipped", [
    (torch.tensor([[[0.0, 100.0], [200.0, 30.0]]]), True),
    (torch.tensor([[[3.0, 100.0], [255.0, 30.0]]]), True),
    (torch.tensor([[[3.0, 100.0], [200.0, 30.0]]]), False),  # touches neither end
    (torch.tensor([[[-4.0, 100.0], [200.0, 0.0]]]), False),  # unclipped noise: outside the range
])
def test_is_clipped(img, clipped):
    assert clipping.is_clipped(img) is clipped


def _noisy_uint8(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    clean = data.camera()[160:256, 200:296].astype(np.float64)
    clean[:, :24] = 0  # a black band: its noise is clipped at 0
    rng = np.random.default_rng(0)
    noisy = np.clip(np.round(clean + sigma * rng.standard_normal(clean.shape)), 0, 255)
    return clean, noisy.astype(np.uint8)


def test_given_sigma_on_an_8bit_image_assumes_clipped_noise():
    clean, noisy = _noisy_uint8(50.0)
    out, info = denoise(noisy, sigma=50, return_info=True)
    assert info.sigma == pytest.approx(50.0) and info.clipped_sigma < 50.0 and info.clipping_modelled
    work = torch.from_numpy(noisy.astype(np.float32))[None]
    plain = denoise_float(work, 50.0, DenoiseConfig())[0][0].numpy()  # sigma taken as it is
    assert float(out[:, :24].mean()) < 5.0 < float(plain[:, :24].mean())  # the bias is gone
    psnr = lambda o: 10 * np.log10(255**2 / np.mean((o.astype(np.float64) - clean) ** 2))
    assert psnr(out) > psnr(np.clip(np.round(plain), 0, 255)) + 0.5


def test_estimated_sigma_on_an_8bit_image_is_the_std_before_clipping():
    clean, noisy = _noisy_uint8(50.0)
    work = torch.from_numpy(noisy.astype(np.float32))[None]
    out, info = denoise(noisy, return_info=True)
    assert info.sigma == pytest.approx(50.0, rel=0.08) and info.clipped_sigma < info.sigma
    assert info.sigma == pytest.approx(estimate_white(work, DenoiseConfig()))
    plain = denoise_float(work, None, DenoiseConfig())[0][0].numpy()  # the clipped noise's std
    assert float(out[:, :24].mean()) < 5.0 < float(plain[:, :24].mean())  # the bias is gone
    psnr = lambda o: 10 * np.log10(255**2 / np.mean((o.astype(np.float64) - clean) ** 2))
    assert psnr(out) > psnr(np.clip(np.round(plain), 0, 255)) + 0.5


def test_clean_or_unclipped_images_are_denoised_as_before():
    clean = data.camera()[160:256, 200:296]  # clean, and touching white: estimated std < 5
    work = torch.from_numpy(clean.astype(np.float32))[None]
    assert clipping.is_clipped(work) and estimate_before_clipping(work, DenoiseConfig()) is None
    out, info = denoise(clean, return_info=True)
    plain, _ = denoise_float(work, None, DenoiseConfig())
    assert info.clipped_sigma is None and not info.clipping_modelled
    assert np.array_equal(out, plain[0].round().clamp(0, 255).numpy().astype(np.uint8))
    assert estimate_white(work, DenoiseConfig()) == estimate_noise(work, DenoiseConfig())
    _, noisy = _noisy_uint8(25.0)
    shifted = (noisy / 255 - 0.2).astype(np.float32)  # below 0: not clipped
    for sigma in (25 / 255, None):
        _, info = denoise(shifted, sigma=sigma, return_info=True)
        assert info.clipped_sigma is None


def test_std_before_inverts_the_clipped_variance_on_toy_patches():
    sigma, n = 30.0, 100
    mean, var = clipping.moments(torch.zeros(1, dtype=torch.float64), sigma)  # a black level
    black = mean.expand(n)[:, None]
    ones = torch.ones(n, 1, dtype=torch.float64)
    assert clipping.std_before(float(var.sqrt()), black, ones) == pytest.approx(sigma, rel=1e-3)
    grey = torch.full((n, 1), 128.0, dtype=torch.float64)  # half the patches unclipped
    both = float(((var + sigma**2) / 2).sqrt())
    assert clipping.std_before(both, torch.cat([black, grey]), torch.cat([ones, ones])) \
        == pytest.approx(sigma, rel=1e-3)
    rgb = torch.full((n, 3), 1 / 3, dtype=torch.float64)  # nothing clipped: as measured
    assert clipping.std_before(20.0, torch.full((n, 3), 128.0, dtype=torch.float64), rgb) \
        == pytest.approx(20.0, rel=1e-3)
    white = torch.full((n, 1), 255.0, dtype=torch.float64)  # saturated: no noise left
    assert float(clipping.clipped_variance(white, ones, sigma).max()) < 1e-6 * sigma**2


def test_estimate_std_reads_the_std_before_clipping():
    cfg = DenoiseConfig()
    for sigma in (10.0, 50.0):
        _, noisy = _noisy_uint8(sigma)  # a black band: the weak-texture patches lie in it
        work = torch.from_numpy(noisy.astype(np.float32))[None]
        measured, before = clipping.estimate_std(work, generator=torch.Generator().manual_seed(cfg.seed))
        assert measured == estimate_noise(work, cfg)  # the same patches
        assert measured < 0.75 * sigma and before == pytest.approx(sigma, rel=0.08)
    grey = np.full((96, 96), 128.0) + 20 * np.random.default_rng(0).standard_normal((96, 96))
    measured, before = clipping.estimate_std(torch.from_numpy(grey).float()[None])
    assert before == pytest.approx(measured, rel=1e-3)  # unclipped: the std as measured


def test_unclip_with_a_std_that_grows_with_the_level():
    x = torch.linspace(0, 255, 52, dtype=torch.float64)
    std = lambda level: (2 * level + 9).sqrt()  # Poisson-Gaussian noise, variance 2 x + 9
    mean = clipping.moments(x, std(x))[0]
    assert torch.allclose(clipping.unclip(mean, std), x, atol=0.05)
    assert float(clipping.unclip(mean, 20.0)[-2]) < float(x[-2]) - 1  # a constant std: short


def test_fit_clipped_recovers_poisson_gaussian_parameters_from_clipped_levels():
    """Bins of an 8-bit image: clipped means and variances of noise of variance 2 x + 9. The
    plain line fit reads the weaker noise near white as a flatter line; `fit_clipped` undoes
    the clipping and recovers (2, 9)."""
    from libcem.denoiser import poisson_gaussian

    x = torch.linspace(5, 255, 16, dtype=torch.float64)
    mean, var = clipping.moments(x, (2 * x + 9).sqrt())
    a, b = poisson_gaussian.fit_line(mean, var)
    assert a < 1.97 and b > 11
    a, b = poisson_gaussian.fit_clipped(mean, var)
    assert (a, b) == (pytest.approx(2.0, rel=1e-4), pytest.approx(9.0, rel=1e-3))
    unclipped = torch.linspace(20, 200, 16, dtype=torch.float64)  # nothing clipped: the same line
    var = 2 * unclipped + 9
    assert poisson_gaussian.fit_clipped(unclipped, var) == pytest.approx((2.0, 9.0), rel=1e-4)


def test_poisson_gaussian_noise_on_an_8bit_image_takes_out_the_clipping(monkeypatch):
    """Noise of variance 4 x + 16 clipped at white on a band of level 250 (std 32 there): the
    band came out 9 levels dark before; modelled, it is 250 again and the crop gains 2.7 dB
    (0.5 asserted)."""
    clean = data.camera()[:96, 200:296].astype(np.float64)
    clean[:, -24:] = 250
    rng = np.random.default_rng(0)
    noisy = np.clip(np.round(clean + np.sqrt(4 * clean + 16) * rng.standard_normal(clean.shape)), 0, 255)
    noisy = noisy.astype(np.uint8)
    psnr = lambda o: 10 * np.log10(255**2 / np.mean((o.astype(np.float64) - clean) ** 2))
    out, info = denoise(noisy, noise="poisson-gaussian", return_info=True)
    monkeypatch.setattr(clipping, "is_clipped", lambda img: False)  # as before session 23
    plain = denoise(noisy, noise="poisson-gaussian")
    assert abs(float(out[:, -24:].mean()) - 250) < 2 < 250 - float(plain[:, -24:].mean())
    assert psnr(out) > psnr(plain) + 0.5
    assert info.noise_params[0] == pytest.approx(4.0, rel=0.2) and info.clipping_modelled
