"""`noise="auto"`: the choice of the noise model (white, Poisson-Gaussian or camera), the
CLI's default, and a noise level too small to remove."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.signal import fftconvolve
from skimage import data

from libcem.cli import main
from libcem.denoiser import DenoiseConfig, denoise
from libcem.denoiser.api import read_noise
from libcem.denoiser.noise_choice import (
    CORRELATED_RATIO,
    MIN_CORRELATED_STD,
    NoiseReading,
)

BINOMIAL = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 6.0  # unit energy: the noise std stays sigma


def noisy(kind: str, sigma: float, size: int = 128) -> np.ndarray:
    """The camera image's crop with white or binomial-smoothed noise of std sigma, 8-bit."""
    clean = data.camera()[:size, 64:64 + size].astype(np.float64)
    rng = np.random.default_rng(0)
    if kind == "white":
        n = rng.standard_normal(clean.shape)
    else:
        n = fftconvolve(rng.standard_normal((size + 2, size + 2)), BINOMIAL, mode="valid")
    return np.clip(np.round(clean + sigma * n), 0, 255).astype(np.uint8)


def test_reading_thresholds_are_exact():
    assert not NoiseReading(1.0, CORRELATED_RATIO * 1.0).correlated  # at the ratio: not above
    assert NoiseReading(1.0, CORRELATED_RATIO * 1.0 + 1e-6).correlated
    assert not NoiseReading(0.1, MIN_CORRELATED_STD - 1e-6).correlated  # too weak to matter
    assert NoiseReading(0.1, MIN_CORRELATED_STD).correlated
    assert not NoiseReading(10.0, 12.0).correlated  # white noise: both fits agree


# stationary correlated noise: the camera model finds no slope and is the correlated one
@pytest.mark.parametrize("kind, model", [("white", "gaussian"), ("binomial", "correlated")])
def test_auto_reads_white_and_correlated_noise(kind, model):
    y = noisy(kind, 15.0)
    reading = read_noise(torch.tensor(y, dtype=torch.float32)[None], DenoiseConfig())
    assert reading.correlated_std == pytest.approx(15.0, rel=0.15)  # the correlated fit: the std
    if kind == "white":
        assert reading.white_std == pytest.approx(15.0, rel=0.1)
    else:  # the white estimate sees the direction smoothing nearly emptied
        assert reading.white_std < 15.0 / CORRELATED_RATIO
    out, info = denoise(y, noise="auto", return_info=True)
    assert info.noise_model == model
    route = "camera" if kind == "binomial" else model
    assert np.array_equal(out, denoise(y, noise=route))  # the same route, the same output


def test_auto_on_a_colour_jpeg_uses_the_per_channel_camera_model():
    # white noise saved as a JPEG with 4:2:0 chroma: the chroma keeps little noise, so the
    # white estimate (about 0.5 on such images) falls far below the luminance's std
    import io

    clean = data.astronaut()[160:288, 160:288].astype(np.float64)
    y = np.clip(np.round(clean + 15 * np.random.default_rng(0).standard_normal(clean.shape)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(y.astype(np.uint8)).save(buf, "JPEG", quality=90, subsampling="4:2:0")
    jpeg = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    out, info = denoise(jpeg, noise="auto", return_info=True)
    assert info.noise_model in ("camera", "correlated") and info.noise_correlation.per_channel
    err = lambda z: float(np.mean((z.astype(np.float64) - clean) ** 2))
    assert 10 * np.log10(err(denoise(jpeg)) / err(out)) > 1.5  # dB over the white model (2.4 measured)


def test_a_noise_level_below_a_tenth_is_left_alone():
    y = noisy("white", 2.0, size=64)
    out, info = denoise(y, 0.05, return_info=True)
    assert np.array_equal(out, y) and info.sigma == pytest.approx(0.05) and info.params is None
    assert not np.array_equal(denoise(y, 2.0), y)


def test_cli_defaults_to_auto_and_to_gaussian_with_a_sigma(tmp_path, capsys):
    Image.fromarray(noisy("binomial", 15.0, size=96)).save(tmp_path / "in.png")
    args = ["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png")]
    assert main(args) == 0
    line = capsys.readouterr().out
    assert "correlated noise (auto)" in line
    # the stationary model: no (a, b) of noise growing with brightness, no global-EM count
    # (that EM runs with --all-heads only)
    assert "Poisson-Gaussian" not in line and "EM iterations" not in line
    assert main(args + ["--sigma", "15"]) == 0
    assert "gaussian noise, sigma 15.00 (0..255 scale)" in capsys.readouterr().out
    assert main(args + ["--sigma", "15", "--all-heads"]) == 0
    assert re.search(r"EM iterations [1-9]", capsys.readouterr().out)
    assert main(args + ["--best"]) == 0  # their group-axis passes assume white noise
    assert "correlated noise (auto), --best's extra passes skipped" in capsys.readouterr().out


@pytest.mark.parametrize("sigma", [0.12, 0.2])
def test_noise_far_below_a_binary_images_contrast_still_factorises(sigma):
    # float32 rounding left C + sigma^2 I not positive definite on 0/255 patches: the Cholesky
    # factorisation failed at sigma 0.1-0.2 until the variance floor (covariance.SHRINK_FLOOR)
    board = data.checkerboard()[:96, :96]
    out = denoise(board, sigma)
    assert np.abs(out.astype(np.int64) - board).max() <= 3  # a grey level or two at edges


@pytest.mark.parametrize("noise", ["gaussian", "auto"])
def test_a_gray_image_stored_as_rgb_is_denoised_as_gray(noise):
    # its chroma is exactly zero: every noise estimate read 0 and nothing was removed
    gray = noisy("white", 15.0, size=96)
    rgb = np.repeat(gray[..., None], 3, 2)
    out, info = denoise(rgb, noise=noise, return_info=True)
    assert out.shape == rgb.shape and info.sigma == pytest.approx(15.0, rel=0.1)
    assert all(np.array_equal(out[..., c], denoise(gray, noise=noise)) for c in range(3))


def test_auto_does_not_take_bright_texture_for_noise_that_grows():
    """A dark flat background beside bright grass, white noise of std 2, 8-bit: every bright
    level bin is texture, which the weak-texture estimate reads as noise, and until session 25
    the line through all bins grew steeply (a 0.70): auto went Poisson-Gaussian at std 9 and
    smoothed the grass, 9 dB below the noisy input. The bins whose noise reads as Gaussian
    (`noise.excess_kurtosis`) show no growth, and auto takes the white model."""
    grass = data.grass().astype(np.float64)[:96, :96]
    clean = np.full((96, 128), 20.0)
    clean[:, 32:] = 150 + 35 * (grass - grass.mean()) / grass.std()
    noisy = np.clip(np.round(clean + 2 * np.random.default_rng(0).standard_normal(clean.shape)), 0, 255)
    out, info = denoise(noisy.astype(np.uint8), noise="auto", return_info=True)
    assert info.noise_model == "gaussian" and info.sigma == pytest.approx(2.0, rel=0.15)
    psnr = lambda o: 10 * np.log10(255**2 / np.mean((o.astype(np.float64) - clean) ** 2))
    assert psnr(out) > psnr(noisy) + 1.0


def test_the_clipping_aware_fit_tells_clipped_white_noise_from_noise_that_grows():
    """auto decides on `fit_clipped` (session 24): white noise clipped near black shrinks
    there, and the plain line fit reads it as growing with brightness."""
    from libcem.denoiser import clipping, poisson_gaussian

    img = torch.linspace(0, 255, 256 * 256).reshape(1, 256, 256)  # levels spread evenly
    x = torch.linspace(8.0, 140.0, 16, dtype=torch.float64)  # a dark image's bins
    mean, var = clipping.moments(x, torch.full_like(x, 30.0))  # white noise of std 30, clipped
    assert poisson_gaussian.signal_dependent(img, *poisson_gaussian.fit_line(mean, var))
    a, b = poisson_gaussian.fit_clipped(mean, var)
    assert a < 0.01 and b == pytest.approx(900.0, rel=1e-3)
    assert not poisson_gaussian.signal_dependent(img, a, b)
    mean, var = clipping.moments(x, (2.0 * x + 9.0).sqrt())  # Poisson-Gaussian: 2x + 9, clipped
    assert poisson_gaussian.signal_dependent(img, *poisson_gaussian.fit_clipped(mean, var))


def test_auto_finds_noise_that_grows_under_a_clipped_bright_area():
    """Noise of variance 2 x + 9, 8-bit, on an image whose top quarter is a bright sky (245,
    std 22 there, clipped at white): the plain line fit reads the clipped sky as a flat line
    (a = 0, b = 287) and auto went the white way until session 24; the clipping-aware fit
    finds (1.8, 14) and the Poisson-Gaussian path gains 1.3 dB (0.5 asserted)."""
    clean = data.camera()[:128, 64:192].astype(np.float64) * 0.6 + 30
    clean[:32] = 245
    rng = np.random.default_rng(0)
    noisy = np.clip(np.round(clean + np.sqrt(2 * clean + 9) * rng.standard_normal(clean.shape)), 0, 255)
    noisy = noisy.astype(np.uint8)
    psnr = lambda o: 10 * np.log10(255**2 / np.mean((o.astype(np.float64) - clean) ** 2))
    out, info = denoise(noisy, noise="auto", return_info=True)
    assert info.noise_model == "poisson-gaussian"
    assert info.noise_params[0] == pytest.approx(2.0, rel=0.2)  # the image units of uint8: 0..255
    assert psnr(out) > psnr(denoise(noisy, noise="gaussian")) + 0.5


def test_a_small_image_gets_fewer_level_bins_and_its_noise_is_removed():
    """Each level bin of the (a, b) fit holds at least MIN_BIN_PATCHES patches: on an 8x130
    strip the 16 bins' few patches each read no noise at all, and `auto` had left it as it was."""
    from libcem.denoiser import poisson_gaussian as pg

    gen = torch.Generator().manual_seed(0)
    for side, bins in [(30, 1), (40, 2), (200, pg.LEVEL_BINS)]:  # 24^2, 34^2, 194^2 patches
        points = pg.level_variances(torch.rand(1, side, side, generator=gen) * 255, generator=gen)
        assert points[0].numel() == bins
    clean = data.astronaut()[100:108, 100:230].astype(np.float64)
    strip = np.clip(np.round(clean + 15 * np.random.default_rng(0).standard_normal(clean.shape)), 0, 255)
    out, info = denoise(strip.astype(np.uint8), noise="auto", return_info=True)
    assert info.noise_model == "gaussian" and 10 < info.sigma < 20
    gain = 10 * np.log10(np.mean((strip - clean) ** 2) / np.mean((out - clean) ** 2))
    assert gain > 4.0  # 6.6 dB
    assert not pg.signal_dependent(torch.full((1, 8, 8), 100.0), 1e-20, 0.0)  # noiseless bins' fit
