"""Poisson-Gaussian noise: its two parameters recovered, the variance-stabilised denoising
beats the Gaussian model on the same input, and the strength control blends exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from libcem.denoiser import denoise
from libcem.denoiser import poisson_gaussian as pg
from libcem.errors import LibcemError


def _signal_dependent(clean: np.ndarray, a: float, b: float) -> np.ndarray:
    noise = np.random.default_rng(0).standard_normal(clean.shape)
    return clean.astype(np.float64) + np.sqrt(a * clean + b) * noise


def psnr(clean, out) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((clean.astype(float) - out) ** 2)))


@pytest.mark.parametrize("image", ["camera", "astronaut"])
@pytest.mark.parametrize("a,b", [(0.5, 25.0), (0.2, 50.0)])
def test_parameters_recovered_within_ten_percent(image, a, b):
    clean = data.camera() if image == "camera" else data.astronaut()[..., 1]
    y = torch.tensor(_signal_dependent(clean, a, b), dtype=torch.float32)[None]
    est_a, est_b = pg.estimate(y, generator=torch.Generator().manual_seed(0))
    assert abs(est_a / a - 1) < 0.10 and abs(est_b / b - 1) < 0.10, (est_a, est_b)


def test_excess_kurtosis_tells_gaussian_noise_from_texture():
    """Gaussian noise reads about 0 in its weakest directions, natural texture well above
    (sparse, heavy-tailed); texture under strong noise (std 40 on grass) reads as the noise."""
    from libcem.denoiser.noise import excess_kurtosis, sample_patches

    gen = torch.Generator().manual_seed(0)
    assert abs(excess_kurtosis(5 * torch.randn(4000, 49, generator=gen, dtype=torch.float64))) < 0.05
    grass = torch.from_numpy(data.grass().astype(np.float64))[None]
    assert excess_kurtosis(sample_patches(grass, 7, 4000, gen)) > 1.0
    noisy = grass + 40 * torch.randn(grass.shape, generator=gen, dtype=torch.float64)
    assert excess_kurtosis(sample_patches(noisy, 7, 4000, gen)) < 0.05
    assert np.isnan(excess_kurtosis(torch.zeros(1, 49)))


def test_the_line_goes_through_the_bins_whose_noise_reads_gaussian():
    levels = torch.linspace(10, 200, 16, dtype=torch.float64)
    variances = 0.5 * levels + 25
    gaussian = torch.ones(16, dtype=torch.bool)
    gaussian[10:] = False  # texture: these bins' variances are upper bounds only
    variances[10:] = 40 * variances[10:]
    a, b = pg.fit_levels(levels, variances, gaussian)
    assert abs(a - 0.5) < 1e-4 and abs(b - 25) < 1e-2
    # Gaussian bins bunched at a few levels show no slope: flat, at their median variance
    bunched = torch.zeros(16, dtype=torch.bool)
    bunched[5:8] = True
    assert pg.fit_levels(levels, variances, bunched) == (0.0, float(variances[6]))
    # none reads Gaussian (texture everywhere): flat, at the least variance, an upper bound
    none = torch.zeros(16, dtype=torch.bool)
    assert pg.fit_levels(levels, variances, none) == (0.0, float(variances[0]))
    # noiseless bins: no noise, not a failed solve
    assert pg.fit_line(levels, torch.zeros(16, dtype=torch.float64)) == (0.0, 0.0)


def test_l1_line_ignores_a_textured_bin():
    levels = torch.linspace(10, 200, 16, dtype=torch.float64)
    variances = 0.5 * levels + 25
    variances[9] *= 2.0  # a bin whose weak-texture patches were not flat
    a, b = pg.fit_line(levels, variances)
    assert abs(a - 0.5) < 1e-4 and abs(b - 25) < 1e-2


@pytest.mark.parametrize("x", [3.0, 20.0])
def test_inverse_anscombe_is_unbiased_for_poisson(x):
    y = torch.tensor(np.random.default_rng(0).poisson(x, 400_000), dtype=torch.float64)
    d = pg.anscombe(y, 1.0, 0.0)
    assert abs(float(d.var()) - 1) < 0.05
    back = float(pg.inverse_anscombe(d.mean()[None], 1.0, 0.0))
    assert abs(back / x - 1) < 0.01, back
    assert abs(float((d.mean() / 2) ** 2 - 0.375) / x - 1) > abs(back / x - 1)  # algebraic


def test_poisson_gaussian_beats_the_gaussian_model():
    clean = data.camera()[64:192, 96:224]
    y = _signal_dependent(clean, 1.0, 4.0) / 255
    gauss = denoise(y) * 255
    out, info = denoise(y, noise="poisson-gaussian", return_info=True)
    assert psnr(clean, out * 255) > psnr(clean, gauss) + 3.0
    assert abs(info.noise_params[0] * 255 - 1.0) < 0.1
    assert info.noise_map.shape == (1, 128, 128)
    auto = denoise(y, noise="auto")
    assert np.array_equal(auto, out)  # clearly signal-dependent: auto takes the same route


def test_strength_blends_noisy_and_denoised():
    y = _signal_dependent(data.camera()[:64, :64], 0.0, 100.0).astype(np.float32) / 255
    full = denoise(y, 10 / 255)
    np.testing.assert_allclose(denoise(y, 10 / 255, strength=0.0), y, atol=1e-6)
    np.testing.assert_allclose(denoise(y, 10 / 255, strength=0.25), y + 0.25 * (full - y),
                               atol=1e-6)
    with pytest.raises(LibcemError, match="strength"):
        denoise(y, 10 / 255, strength=1.5)
    with pytest.raises(LibcemError, match="noise"):
        denoise(y, noise="speckle")
    with pytest.raises(LibcemError, match="noise_params"):
        denoise(y, 10 / 255, noise="poisson-gaussian")


def test_inverse_anscombe_stays_bounded_below_zero_counts():
    # a denoised value below the transform of zero counts used to come back huge (7.6e8 counts
    # at 1e-3): white pixels in black shadows
    d = torch.linspace(0.0, 3.0, 301, dtype=torch.float64)
    back = pg.inverse_anscombe(d, 2.0, 9.0)
    assert torch.isfinite(back).all()
    assert float(back.min()) == pytest.approx(-9.0 / 2.0)  # zero counts: a * 0 - b / a
    assert bool((back[1:] >= back[:-1]).all())  # monotone, as the transform is
