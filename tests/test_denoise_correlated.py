"""Spatially correlated noise (`noise="correlated"`): the autocovariance fit, the whitening
and DCT scaling it gives the passes, and the denoiser with it against the white-noise model."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.signal import fftconvolve
from skimage import data

from libcem.cli import main
from libcem.denoiser import DenoiseConfig, denoise
from libcem.denoiser.correlated import (
    FLOOR,
    NoiseCorrelation,
    _truncation_factor,
    estimate_correlation,
)
from libcem.denoiser.passes import denoise_tensor
from libcem.denoiser.patches import dct_matrix, to_opponent
from libcem.errors import LibcemError

BINOMIAL = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 6.0  # unit energy: 36 / 36
HORIZONTAL = np.array([[1.0, 1.0]]) / np.sqrt(2.0)


def autocov_of(k: np.ndarray, sigma: float, lag: int = 3) -> torch.Tensor:
    """The exact autocovariance of white noise filtered by k, times sigma^2."""
    full = fftconvolve(k, k[::-1, ::-1]) * sigma**2
    out = np.zeros((2 * lag + 1, 2 * lag + 1))
    cy, cx = full.shape[0] // 2, full.shape[1] // 2
    for dy in range(-lag, lag + 1):
        for dx in range(-lag, lag + 1):
            if abs(dy) <= cy and abs(dx) <= cx:
                out[lag + dy, lag + dx] = full[cy + dy, cx + dx]
    return torch.tensor(out)


def noisy_camera(k: np.ndarray, sigma: float, size: int = 128,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    clean = data.camera()[:size, 64:64 + size].astype(np.float64)
    w = np.random.default_rng(seed).standard_normal((size + k.shape[0] - 1, size + k.shape[1] - 1))
    return clean, clean + fftconvolve(w, k, mode="valid") * sigma


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a - np.clip(b, 0, 255)) ** 2)))


@pytest.mark.parametrize("k, sigma", [(BINOMIAL, 20.0), (HORIZONTAL, 15.0), (np.ones((1, 1)), 20.0)])
def test_autocovariance_fitted_within_a_tenth_of_the_variance(k, sigma):
    _, noisy = noisy_camera(k, sigma, size=192)
    fit = estimate_correlation(torch.tensor(noisy, dtype=torch.float32)[None],
                               generator=torch.Generator().manual_seed(0))
    truth = autocov_of(k, sigma)
    assert torch.allclose(fit.autocov, truth, atol=0.1 * sigma**2)
    assert fit.variance == pytest.approx(sigma**2, rel=0.1)


def test_truncation_factor_matches_sampling():
    dof, limit = 61, 60.3
    u = torch.randn(400000, dof, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kept = u[(u * u).sum(1) < limit]
    assert float((kept * kept).mean()) == pytest.approx(_truncation_factor(limit, dof), rel=0.01)


def test_patch_covariance_whitening_and_dct_scale():
    noise = NoiseCorrelation(autocov_of(BINOMIAL, 10.0))
    cov = noise.patch_covariance(7)
    assert cov[0, 1] == pytest.approx(100.0 * 24 / 36, rel=1e-3)  # r(0, 1); the floor moves it a little
    assert cov[0, 8] == pytest.approx(100.0 * 16 / 36, rel=1e-3)  # r(1, 1)
    assert torch.linalg.eigvalsh(cov).min() >= 0.01 * 100.0 - 1e-9  # raised to the floor
    w, w_inv = noise.whitening(7)
    eye = torch.eye(49, dtype=torch.float64)
    assert torch.allclose(w.double() @ cov @ w.double(), 100.0 * eye, atol=1e-2)
    assert torch.allclose(w @ w_inv, torch.eye(49), atol=1e-4)
    d = dct_matrix(7)
    var = ((d.double() @ cov) * d.double()).sum(1)
    scaled = noise.dct_scale(d).double() ** 2 * var
    assert torch.allclose(scaled, torch.full((49,), 100.0, dtype=torch.float64), rtol=1e-4)
    assert noise.neighbour_correlation() == pytest.approx((24 / 36, 24 / 36))


def test_white_autocovariance_gives_the_white_noise_result():
    clean = torch.tensor(data.camera()[:96, :96], dtype=torch.float32)[None]
    noisy = clean + 20 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    white = torch.zeros(7, 7, dtype=torch.float64)
    white[3, 3] = 400.0
    cfg = DenoiseConfig(skip_covered=0.0)  # gray under correlated noise keeps every group
    a, _ = denoise_tensor(noisy, 20.0, cfg)
    b, info = denoise_tensor(noisy, None, cfg, noise=NoiseCorrelation(white))
    assert info.sigma == pytest.approx(20.0)
    # the same passes up to float rounding (W and the DCT scales are I and 1 to 1e-7), which
    # can flip a near tie in block matching and move a few pixels
    assert float((a - b).abs().mean()) < 0.05 and float((a - b).abs().max()) < 1.0
    err_a, err_b = float(((a - clean) ** 2).mean()), float(((b - clean) ** 2).mean())
    assert err_b == pytest.approx(err_a, rel=0.005)


def test_correlated_model_beats_the_white_model_on_correlated_noise():
    clean, noisy = noisy_camera(BINOMIAL, 20.0)
    white = denoise(noisy.astype(np.float32))
    corr, info = denoise(noisy.astype(np.float32), noise="correlated", return_info=True)
    assert psnr(clean, corr) > psnr(clean, white) + 4.0  # the white model sees sigma ~4
    assert info.sigma == pytest.approx(20.0, rel=0.1)
    right, down = info.noise_correlation.neighbour_correlation()
    assert right == pytest.approx(2 / 3, abs=0.1) and down == pytest.approx(2 / 3, abs=0.1)


def test_correlated_noise_in_units_tiles_and_given_sigma():
    clean, noisy = noisy_camera(BINOMIAL, 20.0, size=160)
    whole = denoise(noisy.astype(np.float32), noise="correlated")
    tiled = denoise(noisy.astype(np.float32), noise="correlated",
                    config=DenoiseConfig().override(tile=128, overlap=16, workers=1))
    assert abs(psnr(clean, tiled) - psnr(clean, whole)) < 0.3
    out, info = denoise((noisy / 255).astype(np.float32), 20 / 255, noise="correlated", return_info=True)
    assert info.sigma == pytest.approx(20 / 255)
    assert info.noise_correlation.variance == pytest.approx((20 / 255) ** 2)
    assert psnr(clean, out * 255) > psnr(clean, noisy) + 5.0


def test_correlated_noise_errors():
    img = np.zeros((32, 32), np.float32)
    with pytest.raises(LibcemError, match="noise_params"):
        denoise(img, noise="correlated", noise_params=(1.0, 0.0))
    with pytest.raises(LibcemError, match="smaller than"):
        denoise(img[:5, :5], noise="correlated")
    flat, info = denoise(img, 0.0, noise="correlated", return_info=True)  # sigma 0: nothing to do
    assert np.array_equal(flat, img) and info.sigma == 0.0


def test_flat_and_tiny_images():
    """A flat image has no noise to fit: it comes back as it is (with a sigma given, the white
    noise of that sigma is assumed and the image stays flat); an image too small for the fit
    falls back to white noise of the white estimate's std."""
    flat = np.full((64, 64), 100, np.uint8)
    out, info = denoise(flat, noise="correlated", return_info=True)
    assert np.array_equal(out, flat) and info.sigma == 0.0
    out, info = denoise(flat, 10.0, noise="correlated", return_info=True)
    assert np.array_equal(out, flat) and info.sigma == pytest.approx(10.0)
    _, noisy = noisy_camera(np.ones((1, 1)), 20.0, size=24)
    out, info = denoise(noisy.astype(np.float32), noise="correlated", return_info=True)
    assert estimate_correlation(torch.tensor(noisy, dtype=torch.float32)[None]).variance == 0.0
    assert info.sigma == pytest.approx(20.0, rel=0.25)
    assert info.noise_correlation.neighbour_correlation() == (0.0, 0.0)


def test_cli_correlated(tmp_path, capsys):
    _, noisy = noisy_camera(BINOMIAL, 20.0, size=96)
    Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8)).save(tmp_path / "in.png")
    args = ["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--noise", "correlated"]
    assert main(args) == 0
    assert "neighbour correlation" in capsys.readouterr().out
    assert main(args + ["--sigma", "20", "--best"]) == 0
    assert "skipped" in capsys.readouterr().err
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (96, 96)


@pytest.mark.parametrize("name", ["horse", "sky and waves"])
def test_clean_images_are_left_alone(name):
    # a clean 8-bit image has exactly flat patches; the fit used to shrink its variance to 0
    # on them, then test nothing and refit on half of all patches: texture taken for noise of
    # std 28 on the binary horse, 2 on the second image (both now 0)
    if name == "horse":
        clean = data.horse()[:192, :192].astype(np.uint8) * 255
    else:
        v, u = np.mgrid[0:192, 0:192]
        waves = np.round(128 + 60 * np.sin(u / 9.0) * np.cos(v / 13.0))
        clean = np.where(v < 96, 200.0, waves).astype(np.uint8)
    img = torch.tensor(clean, dtype=torch.float32)[None]
    assert estimate_correlation(img, generator=torch.Generator().manual_seed(0)).variance == 0.0
    for model in ("correlated", "camera"):
        out = denoise(clean, noise=model)
        assert np.abs(out.astype(np.int64) - clean).max() <= 1


def test_per_channel_fit_recovers_each_channels_noise():
    """Different noise in luminance and chroma (as a JPEG's chroma subsampling leaves it): one
    autocovariance per channel, each within a tenth of its own variance; the shared fit is one
    level for all three."""
    clean = torch.tensor(data.camera()[:192, 64:256], dtype=torch.float32)
    stds = (20.0, 10.0, 5.0)
    channels = [clean * (1.0 if c == 0 else 0.2) + torch.tensor(
        noisy_camera(BINOMIAL, 1.0, size=192, seed=c)[1] - noisy_camera(BINOMIAL, 0.0, size=192)[1],
        dtype=torch.float32) * s for c, s in enumerate(stds)]
    img = torch.stack(channels)
    fit = estimate_correlation(img, generator=torch.Generator().manual_seed(0), per_channel=True)
    assert fit.per_channel and fit.autocov.shape == (3, 7, 7)
    for c, s in enumerate(stds):
        assert torch.allclose(fit.autocov[c], autocov_of(BINOMIAL, s), atol=0.1 * s**2)
    assert fit.variance == pytest.approx(np.mean(np.square(stds)), rel=0.1)
    assert fit.neighbour_correlation() == pytest.approx((2 / 3, 2 / 3), abs=0.1)  # the luminance's
    shared = estimate_correlation(img, generator=torch.Generator().manual_seed(0))
    assert not shared.per_channel and shared.autocov.shape == (7, 7)


def test_clipped_patches_are_left_out_of_the_per_channel_fit():
    """A saturated highlight flattens the noise; its patches would pull the fit down."""
    clean = np.full((192, 192, 3), 250.0)
    clean[96:] = np.stack([data.camera()[:96, 64:256].astype(np.float64) * 0.5 + 40] * 3, 2)
    noise = np.stack([noisy_camera(BINOMIAL, 1.0, size=192, seed=c)[1]
                      - noisy_camera(BINOMIAL, 0.0, size=192)[1] for c in range(3)], 2) * 12.0
    rgb = torch.tensor(np.clip(clean + noise, 0, 255), dtype=torch.float32).permute(2, 0, 1)
    clipped = ((rgb <= rgb.min()) | (rgb >= rgb.max())).any(0)
    opp = to_opponent(rgb)
    fits = {mask is not None: estimate_correlation(opp, generator=torch.Generator().manual_seed(0),
                                                   per_channel=True, clipped=mask)
            for mask in (None, clipped)}
    assert fits[True].variance == pytest.approx(144.0, rel=0.15)
    assert fits[False].variance < 0.8 * 144.0


def test_per_channel_tables_equal_the_shared_ones_when_the_channels_agree():
    r = autocov_of(BINOMIAL, 10.0)
    shared, per = NoiseCorrelation(r), NoiseCorrelation(torch.stack([r, r, r]))
    assert per.variance == pytest.approx(shared.variance)
    d = dct_matrix(7)
    for a, b in zip(shared.tables(d), per.tables(d)):
        assert a.shape[0] == 1 and b.shape[0] == 3
        assert torch.allclose(a.expand_as(b), b)
    img = torch.tensor(data.astronaut()[100:164, 180:244], dtype=torch.float32).permute(2, 0, 1)
    noisy = img + 10 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))
    a, _ = denoise_tensor(noisy, None, DenoiseConfig(), noise=shared)
    b, _ = denoise_tensor(noisy, None, DenoiseConfig(), noise=per)
    assert torch.allclose(a, b, atol=1e-3)


def test_per_channel_noise_fit_helps_on_a_jpeg_with_subsampled_chroma():
    """Camera-like noise saved as a JPEG with 4:2:0 chroma (as phones save photos): the chroma
    noise is then weaker and smoother than the luminance's, which one shared fit cannot
    follow. PSNR against the clean image saved the same way."""
    def jpeg(x: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(np.clip(np.round(x), 0, 255).astype(np.uint8)).save(
            buf, "JPEG", quality=95, subsampling="4:2:0")
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())))

    clean = data.astronaut()[100:228, 180:308].astype(np.float64)
    rng = np.random.default_rng(0)
    n = np.stack([fftconvolve(rng.standard_normal((130, 130)), BINOMIAL, mode="valid")
                  for _ in range(3)], 2)
    noisy, target = jpeg(clean + np.sqrt(clean + 4) * n), jpeg(clean).astype(np.float64)
    scores = {per: psnr(target, denoise(noisy, noise="camera",
                                        config=DenoiseConfig(noise_per_channel=per)))
              for per in (False, True)}
    assert scores[True] > scores[False] + 1.5  # measured 33.99 against 30.88 (noisy 28.77)


def test_a_channel_with_almost_no_noise_is_not_amplified_past_the_floor():
    """A JPEG at quality 75 keeps almost no chroma noise (McMaster: chroma variance down to
    1/1,800 of the luminance's). Whitening such a channel to the common level amplified its
    signal hundreds of times, and a float32 Cholesky factorisation of the covariance pass
    failed; the noise floor is now a fraction of the common level, so at most 10x."""
    r = autocov_of(BINOMIAL, 10.0)
    per = NoiseCorrelation(torch.stack([r, r * 1e-4, r * 1e-4]))
    scale, w, _ = per.tables(dct_matrix(7))
    assert float(scale.max()) <= FLOOR**-0.5 * 1.001
    assert float(torch.linalg.eigvalsh(w[1].double()).max()) <= FLOOR**-0.5 * 1.001
    img = torch.tensor(data.astronaut()[100:164, 180:244], dtype=torch.float32).permute(2, 0, 1)
    noisy = img + 10 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))
    out, _ = denoise_tensor(noisy, None, DenoiseConfig(), noise=per)
    assert torch.isfinite(out).all()
    assert float((out - img).square().mean()) < float((noisy - img).square().mean())
