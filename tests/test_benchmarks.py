"""The benchmarks: the shared picture (panels in a row), the denoising benchmark's --picture and
the ablation table."""

from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks.common import side_by_side
from benchmarks.denoise import run_set


def test_side_by_side_lays_panels_in_a_row_with_white_gaps(tmp_path):
    a = np.zeros((6, 10, 3))
    b = np.full((6, 10, 3), 300.0)  # clipped to 255
    side_by_side(tmp_path / "row.png", [a, b, a], crop=4, gap=2)
    row = np.asarray(Image.open(tmp_path / "row.png"))
    assert row.shape == (4, 3 * 4 + 2 * 2, 3)
    assert (row[:, :4] == 0).all() and (row[:, 4:6] == 255).all() and (row[:, 6:10] == 255).all()
    assert (row[:, 12:] == 0).all()


def test_denoise_benchmark_picture_is_noisy_then_each_method(tmp_path):
    clean = (np.add.outer(np.arange(32), np.arange(32)) * 4).astype(np.uint8)
    picture = tmp_path / "pic.png"
    results = run_set([("ramp", clean)], [20.0], False, False, only=["skimage TV"],
                      picture=picture)
    assert set(results) == {(20.0, "skimage TV")}
    row = np.asarray(Image.open(picture))
    assert row.shape == (32, 2 * 32 + 8)
    noisy, tv = row[:, :32].astype(float), row[:, 40:].astype(float)
    assert np.abs(tv - clean).mean() < np.abs(noisy - clean).mean()  # the second panel denoised


def test_ablation_table_counts_the_images_each_variant_wins():
    from benchmarks.denoise_ablation import markdown

    result = {"psnr": {(25, "as shipped"): [30.0, 31.0, 32.0], (25, "tau = 0"): [30.5, 30.0, 32.0]},
              "seconds": {"as shipped": 2.0, "tau = 0": 1.0}}
    table = markdown(result, [25], ["as shipped", "tau = 0"], "t")
    assert "| as shipped | 31.00 | 1.00 |" in table
    assert "| tau = 0 | 30.83 (-0.17, 1 of 3) | 0.50 |" in table  # a tie is not a win


def test_train_draw_is_seeded_and_distinct(tmp_path):
    from benchmarks.denoise import train_images

    folder = tmp_path / "train400"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(folder / f"test_{i:03d}.png")
    a, b = train_images(tmp_path, 3, 7), train_images(tmp_path, 3, 7)
    assert [n for n, _ in a] == [n for n, _ in b] and len({n for n, _ in a}) == 3
    assert all(img.shape == (4, 4) and img[0, 0] == 40 * int(n[-3:]) for n, img in a)


def test_ablation_picture_shows_noisy_then_each_variant(tmp_path):
    from benchmarks.denoise_ablation import run

    x = np.tile(np.linspace(40, 200, 48), (48, 1))
    variants = {"as shipped": {}, "pass 1 only": {"second_pass": False}}
    result = run([("ramp", x)], [25], variants, tmp_path / "a.png", crop=32)
    row = np.asarray(Image.open(tmp_path / "a.png"))
    assert row.shape == (32, 3 * 32 + 2 * 8)
    noisy, first = row[:, :32].astype(float), row[:, 40:72].astype(float)
    crop = x[8:40, 8:40]
    assert np.abs(first - crop).mean() < np.abs(noisy - crop).mean() / 2  # denoised, not noisy
    assert set(result["psnr"]) == {(25, "as shipped"), (25, "pass 1 only")}


def test_speed_photo_with_smoothed_noise_is_correlated(tmp_path):
    from benchmarks.denoise_speed import synthetic_photo

    (tmp_path / "mcmaster").mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "mcmaster" / "1.tif")
    for smoothed, low, high in [(False, -0.05, 0.05), (True, 0.6, 0.72)]:
        photo = synthetic_photo(tmp_path, 96, 64, 10.0, smoothed).astype(float) - 128
        assert photo.shape == (64, 96, 3) and 9.0 < photo.std() < 11.0
        across = np.corrcoef(photo[:, :-1].ravel(), photo[:, 1:].ravel())[0, 1]
        assert low < across < high  # 2/3 for the 3x3 binomial kernel, 0 for white noise


def test_every_ablation_variant_is_a_valid_setting():
    """A misspelt setting or a value out of range in an ablation row fails here, not an hour
    into a benchmark run."""
    from benchmarks.denoise_ablation import VARIANTS
    from libcem.denoiser import DenoiseConfig

    for name, overrides in VARIANTS.items():
        cfg = DenoiseConfig().override(**overrides)
        assert all(getattr(cfg, key) == value for key, value in overrides.items()), name
