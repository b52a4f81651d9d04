"""The patch-graph denoiser end to end: quality, invariants, formats and tiling (CPU, small)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from libcem.denoiser import DenoiseConfig, denoise
from libcem.errors import LibcemError


def psnr(clean: np.ndarray, out: np.ndarray, peak: float = 255.0) -> float:
    err = np.mean((clean.astype(np.float64) - out.astype(np.float64)) ** 2)
    return float(10 * np.log10(peak**2 / err))


def noisy(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(clean.shape)
    return clean.astype(np.float64) + sigma * noise


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return data.camera()[96:352, 128:384]  # 256 x 256, the cameraman


def test_camera_sigma25_wide_margin(camera):
    y = noisy(camera, 25)
    out = denoise(np.clip(np.round(y), 0, 255).astype(np.uint8), 25)
    before, after = psnr(camera, np.clip(np.round(y), 0, 255)), psnr(camera, out)
    assert after - before > 8.0, (before, after)
    assert after > 28.5


def test_known_and_estimated_sigma_agree(camera):
    crop = camera[:128, :128]
    y = noisy(crop, 25) / 255.0
    known = denoise(y, 25 / 255)
    est, info = denoise(y, None, return_info=True)
    assert abs(info.sigma * 255 - 25) < 2.5
    assert abs(psnr(crop, known * 255) - psnr(crop, est * 255)) < 0.3


def test_constant_image_stays_constant():
    const = np.full((40, 48), 117, dtype=np.uint8)
    assert np.array_equal(denoise(const), const)
    assert np.array_equal(denoise(const, 25), const)
    flat = np.full((40, 48, 3), 0.25, dtype=np.float32)
    np.testing.assert_allclose(denoise(flat, 0.1), flat, atol=1e-5)


def test_noiseless_image_nearly_unchanged(camera):
    crop = camera[:128, :128]
    out, info = denoise(crop, return_info=True)
    assert info.sigma < 2.0
    assert psnr(crop, out) > 40.0


def test_color_uint8_keeps_format():
    clean = data.astronaut()[200:264, 180:260]
    y = np.clip(np.round(noisy(clean, 20)), 0, 255).astype(np.uint8)
    out = denoise(y, 20)
    assert out.dtype == np.uint8 and out.shape == clean.shape
    assert psnr(clean, out) > psnr(clean, y) + 4


def test_16bit_and_rgba_keep_format_and_range():
    clean = data.astronaut()[200:248, 180:240]
    y16 = np.clip(noisy(clean, 20) * 257, 0, 65535).round().astype(np.uint16)
    out16 = denoise(y16)
    assert out16.dtype == np.uint16 and out16.shape == y16.shape
    assert out16.max() > 255 * 60  # still on the 16-bit scale
    assert psnr(clean * 257.0, out16, 65535.0) > psnr(clean * 257.0, y16, 65535.0) + 4
    alpha = np.arange(48 * 60, dtype=np.uint32).reshape(48, 60, 1) % 256
    rgba = np.concatenate([y16[..., :3] // 257, alpha], axis=2).astype(np.uint8)
    out = denoise(rgba, 20)
    assert out.dtype == np.uint8 and out.shape == rgba.shape
    assert np.array_equal(out[..., 3], rgba[..., 3])


def test_12bit_data_in_a_16bit_file_is_denoised_on_its_own_range(camera):
    """Camera or microscope data of 12 bits in a uint16 image: the denoiser's levels (no noise
    below a tenth of a grey level, clipping at white) are those of the 12-bit range, so noise
    of std 20 (0.08 on the 16-bit range's 0..255 scale) is removed; before session 26 the
    image came back as it was. Full-range 16-bit images keep the 16-bit scale."""
    from libcem.denoiser.api import content_peak

    u16 = np.dtype(np.uint16)
    for top, peak in [(4095, 4095), (4096, 8191), (65535, 65535), (100, 255), (0, 255)]:
        assert content_peak(np.full((2, 2, 1), top, np.uint16), u16) == peak
    assert content_peak(np.zeros((2, 2, 1), np.uint8), np.dtype(np.uint8)) == 255.0
    assert content_peak(torch.full((2, 2, 1), 0.25), np.dtype(np.float32)) == 1.0
    clean = camera.astype(np.float64) * 4095 / 255
    y = np.clip(noisy(clean, 20), 0, 4095).round().astype(np.uint16)
    out, info = denoise(y, return_info=True)
    assert out.dtype == np.uint16 and out.max() <= 4095
    assert info.sigma == pytest.approx(20, rel=0.2) and info.white == 4095  # in the image's units
    assert psnr(clean, out, 4095.0) > psnr(clean, y, 4095.0) + 1  # 46.24 -> 47.73 dB


def test_float_and_tensor_inputs_keep_type():
    clean = data.camera()[:64, :64] / 255.0
    y = noisy(clean, 0.1).astype(np.float32)
    out = denoise(y, 0.1)
    assert out.dtype == np.float32 and out.shape == y.shape
    import libcem

    assert np.array_equal(libcem.denoise(y, 0.1), out)  # the package-level entry point
    t = torch.from_numpy(y[..., None].repeat(3, axis=2))
    out_t = denoise(t, 0.1)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    assert out_t.shape == t.shape


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(LibcemError, match="shape"):
        denoise(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(LibcemError, match=r"goes in as HxWxC: image.permute\(1, 2, 0\)"):
        denoise(torch.zeros(3, 16, 20))  # torch's (C, H, W)
    with pytest.raises(LibcemError, match=r"image.transpose\(1, 2, 0\)"):
        denoise(np.zeros((3, 16, 20), np.float32))
    with pytest.raises(LibcemError, match="sigma"):
        denoise(np.zeros((16, 16), np.uint8), -1.0)
    with pytest.raises(LibcemError, match="smaller than"):
        denoise(np.zeros((4, 30), np.uint8), 5.0)
    tiny = np.random.default_rng(0).integers(0, 256, (5, 5, 3)).astype(np.uint8)  # an IndexError before
    for noise in ("gaussian", "poisson-gaussian", "correlated", "camera", "auto"):
        with pytest.raises(LibcemError, match="smaller than"):
            denoise(tiny, noise=noise)
    with pytest.raises(LibcemError, match="dtype"):
        denoise(np.zeros((16, 16), bool))


def test_tiled_matches_untiled_away_from_seams(camera):
    crop = camera[:160, :176]
    y = noisy(crop, 20).astype(np.float32) / 255.0
    whole = denoise(y, 20 / 255, config=DenoiseConfig(tile=512))
    tiled = denoise(y, 20 / 255, config=DenoiseConfig(tile=96, overlap=24))
    diff = np.abs(whole - tiled) * 255
    # tiles of 92 x 75 pixels, rows start at 0 / 68, columns at 0 / 50 / 101: the top-left
    # 40 x 40 pixels are covered by the first tile only, more than the search radius + patch
    # from its edges
    far = diff[:40, :40]
    assert far.mean() < 0.2, far.mean()
    assert diff.mean() < 0.6, diff.mean()  # tiles only 75 px wide: seams are a large share
    assert psnr(crop, tiled * 255) > psnr(crop, whole * 255) - 0.2


def test_tile_workers_give_the_same_image_and_report_progress(camera):
    y = noisy(camera[:160, :176], 20).astype(np.float32) / 255.0
    cfg = DenoiseConfig(tile=96, overlap=24)
    seen = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: float32 sums then round the same way
    try:
        inline = denoise(y, 20 / 255, config=cfg.override(workers=1))
    finally:
        torch.set_num_threads(threads)
    pooled = denoise(y, 20 / 255, config=cfg.override(workers=2),
                     progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 6) for i in range(1, 7)]  # 2 rows x 3 columns of tiles, in order
    assert np.abs(inline - pooled).max() < 1e-5


@pytest.mark.parametrize("size, tile, overlap", [(4000, 768, 48), (3000, 768, 48), (160, 96, 24),
                                                 (176, 96, 24), (97, 96, 24), (96, 96, 24)])
def test_tiles_cover_the_image_evenly_with_the_overlap(size, tile, overlap):
    from libcem.denoiser.tiling import tile_layout

    starts, length = tile_layout(size, tile, overlap)
    assert length <= tile and starts[0] == 0 and starts[-1] + length == size
    assert all(b - a <= length - overlap for a, b in zip(starts, starts[1:]))  # overlap kept
    fewer = len(starts) - 1  # one tile fewer could not cover the image with that overlap
    assert fewer == 0 or fewer * tile - (fewer - 1) * overlap < size


def test_fast_settings_are_faster_settings_and_names_are_checked():
    fast = DenoiseConfig.for_speed("fast")
    assert (fast.step, fast.step_wiener, fast.pass2_repeats_color) == (6, 6, 2)
    # colour: two second passes without the covariance EM (session 24); gray keeps its EM
    assert (fast.cov_em_iter(3, later=False), fast.cov_em_iter(1, later=False)) == (0, 2)
    assert DenoiseConfig.for_speed("default") == DenoiseConfig()
    with pytest.raises(LibcemError, match="speed"):
        DenoiseConfig.for_speed("fastest")
    with pytest.raises(LibcemError, match="workers"):
        DenoiseConfig(workers=-1)


def test_tile_workers_run_from_a_script_without_a_main_guard(tmp_path):
    """Forked, not spawned, for every photo of the script: tiles travel to the workers and back
    as numpy arrays, since torch's sharing of tensors through file descriptors starts a thread
    in this process that made the next photo's pool spawn (and re-run the script)."""
    import subprocess
    import sys

    script = tmp_path / "plain.py"  # no `if __name__ == "__main__"`: spawned workers would re-run it
    script.write_text(
        "import numpy as np\n"
        "from libcem.denoiser import DenoiseConfig, denoise\n"
        "y = np.random.default_rng(0).integers(0, 256, (120, 130), dtype=np.uint8)\n"
        "for _ in range(2):  # a second photo too: the first must leave no thread behind\n"
        "    out = denoise(y, 20, config=DenoiseConfig(tile=64, overlap=16, workers=2))\n"
        "print('ok', out.shape)\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "ok (120, 130)" in run.stdout, run.stderr[-2000:]
    assert "Warning" not in run.stderr, run.stderr[-2000:]


def test_default_tile_workers_follow_cores_and_free_memory():
    import sys

    from libcem.denoiser.tiling import default_workers

    assert 1 <= default_workers(768) <= 8
    if sys.platform == "linux":  # 100,000-pixel tiles need terabytes per worker: one worker
        assert default_workers(100_000) == 1
