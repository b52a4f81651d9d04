"""Camera noise (`noise="camera"`): variance a x + b that is also correlated between neighbouring
pixels, as demosaicing leaves a sensor's noise. The (a, b) fit under correlation, and the
denoiser with it against the models that assume only one of the two."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.signal import fftconvolve
from skimage import data

from libcem.cli import main
from libcem.denoiser import denoise
from libcem.denoiser import poisson_gaussian as pg
from libcem.errors import LibcemError

BINOMIAL = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 6.0  # unit energy: 36 / 36


def camera_noise(clean: np.ndarray, a: float, b: float, seed: int = 0) -> np.ndarray:
    """clean + sqrt(a clean + b) n, n unit-variance white noise smoothed by BINOMIAL."""
    h, w = clean.shape
    n = fftconvolve(np.random.default_rng(seed).standard_normal((h + 2, w + 2)), BINOMIAL,
                    mode="valid")
    return clean + np.sqrt(a * clean + b) * n


def psnr(clean: np.ndarray, out: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((clean - out.astype(np.float64)) ** 2)))


@pytest.mark.parametrize("a, b", [(1.0, 16.0), (2.0, 4.0)])
def test_signal_dependent_variance_fitted_under_correlation(a, b):
    yy, xx = np.mgrid[0:192, 0:192]
    ramp = 20 + 210 * (xx + yy) / 382.0  # every level flat: pure noise in each level bin
    noisy = torch.tensor(camera_noise(ramp, a, b), dtype=torch.float32)[None]
    fa, fb = pg.estimate_correlated(noisy, generator=torch.Generator().manual_seed(0))
    for level in (64.0, 192.0):
        assert fa * level + fb == pytest.approx(a * level + b, rel=0.1)
    # the white-noise fit sees only the weakest direction, nearly empty after smoothing
    wa, wb = pg.estimate(noisy, generator=torch.Generator().manual_seed(0))
    assert wa * 192 + wb < 0.2 * (a * 192 + b)


def test_camera_beats_the_models_that_assume_one_of_the_two():
    clean = data.camera()[:128, 64:192].astype(np.float64)
    noisy = np.clip(np.round(camera_noise(clean, 1.0, 16.0)), 0, 255).astype(np.uint8)
    scores = {model: psnr(clean, denoise(noisy, noise=model))
              for model in ("correlated", "poisson-gaussian", "camera")}
    assert scores["camera"] > scores["correlated"] + 2.0  # measured 33.6 against 28.5
    assert scores["camera"] > scores["poisson-gaussian"] + 2.0  # and 25.1
    _, info = denoise(noisy, noise="camera", return_info=True)
    a, b = info.noise_params
    assert a * 128 + b == pytest.approx(1.0 * 128 + 16.0, rel=0.25)
    assert info.noise_map.shape == (1, 128, 128)
    assert info.noise_correlation.neighbour_correlation()[0] == pytest.approx(0.67, abs=0.1)


def test_camera_with_given_parameters():
    clean = data.camera()[:96, 64:160].astype(np.float64)
    noisy = camera_noise(clean, 1.0, 16.0).astype(np.float32) / 255
    out, info = denoise(noisy, noise="camera", noise_params=(1.0 / 255, 16.0 / 255**2),
                        return_info=True)
    assert info.noise_params == pytest.approx((1.0 / 255, 16.0 / 255**2))  # kept as given
    assert psnr(clean, np.clip(out, 0, 1) * 255) > psnr(clean, np.clip(noisy, 0, 1) * 255) + 5
    # a = 0 is the stationary model: the same output as `correlated` with that std
    flat, _ = denoise(noisy, noise="camera", noise_params=(0.0, (20 / 255) ** 2), return_info=True)
    np.testing.assert_array_equal(flat, denoise(noisy, 20 / 255, noise="correlated"))
    with pytest.raises(LibcemError, match="noise_params"):
        denoise(noisy, 20 / 255, noise="camera")


def test_cli_camera(tmp_path, capsys):
    clean = data.camera()[:96, 64:160].astype(np.float64)
    noisy = np.clip(np.round(camera_noise(clean, 1.0, 16.0)), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "in.png")
    args = ["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--noise", "camera"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "neighbour correlation" in printed
    # (a, b) when the fit found a slope; else the stationary model, said so
    assert ("camera noise" in printed and "Poisson-Gaussian a" in printed) or (
        "correlated noise (camera: its fit found no growth with brightness)" in printed
        and "Poisson-Gaussian" not in printed)
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (96, 96)
    assert main(args + ["--sigma", "10"]) != 0  # a one-line error, no traceback
    assert "--sigma sets Gaussian noise" in capsys.readouterr().err


def test_cli_camera_on_a_colour_jpeg(tmp_path, capsys):
    """A phone's JPEG (4:2:0 chroma): the line printed gives the noise per luminance/chroma
    channel, the chroma's weaker, and EXIF survives."""
    clean = data.astronaut()[100:196, 180:276].astype(np.float64)
    noisy = np.stack([camera_noise(clean[..., c], 1.0, 4.0, seed=c) for c in range(3)], 2)
    exif = Image.Exif()
    exif[0x010F] = "libcem test camera"  # Make
    Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8)).save(
        tmp_path / "in.jpg", quality=95, subsampling="4:2:0", exif=exif)
    args = ["denoise", str(tmp_path / "in.jpg"), "-o", str(tmp_path / "out.jpg"), "--noise", "camera"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    stds = [float(v) for v in re.search(r"chroma / chroma ([\d.]+) / ([\d.]+) / ([\d.]+)", printed).groups()]
    assert stds[1] < stds[0] and stds[2] < stds[0]
    out = Image.open(tmp_path / "out.jpg")
    assert out.size == (96, 96) and out.getexif()[0x010F] == "libcem test camera"


def test_camera_in_tiles():
    from libcem.denoiser import DenoiseConfig

    clean = data.camera()[:128, 64:192].astype(np.float64)
    noisy = np.clip(np.round(camera_noise(clean, 1.0, 16.0)), 0, 255).astype(np.uint8)
    cfg = DenoiseConfig(tile=64, overlap=8, workers=1)
    tiled, info = denoise(noisy, noise="camera", config=cfg, return_info=True)
    whole = denoise(noisy, noise="camera")
    assert tiled.shape == noisy.shape and info.noise_params[0] > 0
    assert psnr(clean, tiled) > psnr(clean, noisy) + 5
    assert abs(psnr(clean, tiled) - psnr(clean, whole)) < 1.0  # the tiles share one model
