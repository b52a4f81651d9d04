"""Bad inputs end in one clear line, a bad file in a folder is skipped, outputs are atomic."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from libcem.cli import main
from libcem.denoiser import denoise
from libcem.denoiser import io as dio
from libcem.denoiser.io import read_image, write_image
from libcem.errors import LibcemError


def _gray() -> np.ndarray:
    return data.camera()[150:190, 200:248]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_pixels_raise_one_line(bad, tmp_path, capsys):
    img = _gray().astype(np.float32) / 255
    img[3, 5] = bad
    with pytest.raises(LibcemError, match="NaN or infinite") as err:
        denoise(img, 0.1)
    assert "\n" not in str(err.value)
    write_image(tmp_path / "nan.tif", img)
    assert main(["denoise", str(tmp_path / "nan.tif"), "-o", str(tmp_path / "o.tif")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "NaN or infinite" in lines[0]
    assert not (tmp_path / "o.tif").exists()


def test_folder_skips_bad_file_and_reports(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", _gray())
    (src / "b.png").write_text("not an image")
    write_image(src / "c.png", _gray()[::-1].copy())
    assert main(["denoise", str(src), "-o", str(tmp_path / "out"), "--sigma", "10"]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("libcem:")]
    assert len(err) == 2 and err[0].startswith("libcem: skipped") and "b.png: not a PNG" in err[0]
    assert err[1] == "libcem: 1 of 3 images failed"


@pytest.mark.parametrize("sigma", [1e6, 1e4, 256.0, -1.0, float("nan")])
def test_meaningless_sigma_is_rejected(sigma):
    with pytest.raises(LibcemError, match="sigma") as err:
        denoise(_gray(), sigma)
    assert "\n" not in str(err.value)


def test_sigma_limit_follows_the_image_range():
    y = _gray() / 255.0
    assert denoise(y, 0.5).shape == y.shape  # half the [0, 1] range: allowed
    with pytest.raises(LibcemError, match="range"):
        denoise(y, 1.5)
    assert denoise(y * 255.0, 25.0).shape == y.shape  # a float image on 0..255 is allowed


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "photo.png"
    write_image(target, _gray())
    before = target.read_bytes()

    def crash(path, img, suffix, meta):  # a writer killed after half a file
        path.write_bytes(before[: len(before) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(dio, "_write_by_suffix", crash)
    with pytest.raises(KeyboardInterrupt):
        write_image(target, _gray()[::-1].copy())
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["photo.png"]
    monkeypatch.undo()
    write_image(target, _gray()[::-1].copy())
    assert np.array_equal(read_image(target), _gray()[::-1])
