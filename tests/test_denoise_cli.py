"""Image files and the `libcem denoise` command: formats round-trip, errors are one line."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from skimage import data

from libcem.cli import main
from libcem.denoiser.io import read_image, write_image
from libcem.errors import LibcemError


def _noisy_rgb(h: int = 40, w: int = 48) -> np.ndarray:
    clean = data.astronaut()[200:200 + h, 180:180 + w].astype(np.float64)
    return np.clip(clean + 15 * np.random.default_rng(0).standard_normal(clean.shape), 0, 255)


@pytest.mark.parametrize("name,dtype,channels", [
    ("g8.png", np.uint8, 1), ("g16.png", np.uint16, 1), ("rgb8.png", np.uint8, 3),
    ("rgb16.png", np.uint16, 3), ("rgba16.png", np.uint16, 4), ("rgba8.png", np.uint8, 4),
    ("rgb.tif", np.uint16, 3), ("g.tiff", np.uint8, 1), ("rgb.webp", np.uint8, 3),
    ("rgba.webp", np.uint8, 4), ("rgb.heic", np.uint8, 3), ("g.heif", np.uint8, 1),
    ("rgba.heic", np.uint8, 4), ("g.bmp", np.uint8, 1), ("rgb.bmp", np.uint8, 3),
])
def test_formats_round_trip(tmp_path, name, dtype, channels):
    rng = np.random.default_rng(0)
    shape = (5, 7) if channels == 1 else (5, 7, channels)
    img = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    write_image(tmp_path / name, img)
    back = read_image(tmp_path / name)
    assert back.dtype == dtype and np.array_equal(back, img)


def test_jpeg_is_8bit_only(tmp_path):
    img = _noisy_rgb().astype(np.uint8)
    write_image(tmp_path / "a.jpg", img)
    back = read_image(tmp_path / "a.jpg")
    assert back.dtype == np.uint8 and back.shape == img.shape
    with pytest.raises(LibcemError, match="8-bit"):
        write_image(tmp_path / "b.jpg", img.astype(np.uint16))


def test_each_format_takes_the_bit_depths_it_holds(tmp_path):
    """Checked before any work (`check_writable`): JPEG and WebP 8-bit, PNG 8 and 16 bits, TIFF
    any. WebP keeps EXIF; a CMYK image is read as RGB (without its inks' profile), a 1-bit one
    as 8-bit."""
    from PIL import Image

    from libcem.denoiser.io import check_writable, read_metadata

    for name, dtype, fits in [("a.webp", np.uint16, "PNG or TIFF"), ("a.jpg", np.float32, "to TIFF"),
                              ("a.png", np.float32, "to TIFF"), ("a.png", np.uint32, "to TIFF")]:
        with pytest.raises(LibcemError, match=fits):
            check_writable(tmp_path / name, dtype)
    assert check_writable(tmp_path / "a.tif", np.float32) == ".tif"
    assert check_writable(tmp_path / "a.PNG", np.uint16) == ".png"
    img = _noisy_rgb().astype(np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # the camera's maker
    Image.fromarray(img).save(tmp_path / "m.jpg", exif=exif.tobytes())
    write_image(tmp_path / "m.webp", img, read_metadata(tmp_path / "m.jpg"))
    with Image.open(tmp_path / "m.webp") as back:  # EXIF kept in WebP, as in PNG and JPEG
        assert back.getexif()[0x010F] == "TestCam"
    rgb = Image.fromarray(img)
    for name in ("cmyk.jpg", "cmyk.tif"):  # read as RGB, as Pillow converts it (not RGBA)
        rgb.convert("CMYK").save(tmp_path / name, icc_profile=b"a CMYK profile")
        with Image.open(tmp_path / name) as im:
            assert np.array_equal(read_image(tmp_path / name), np.asarray(im.convert("RGB")))
        assert "icc_profile" not in read_metadata(tmp_path / name)  # the inks', not for RGB
    bits = np.random.default_rng(0).random((9, 11)) > 0.5
    Image.fromarray(bits).save(tmp_path / "bits.png")  # mode "1"
    back = read_image(tmp_path / "bits.png")
    assert back.dtype == np.uint8 and np.array_equal(back, bits.astype(np.uint8) * 255)


def test_jpeg_and_bmp_outputs_leave_alpha_out_with_a_note(tmp_path, capsys):
    """JPEG and BMP hold no alpha channel: an RGBA image is written as its RGB, a gray + alpha
    one as its gray, and the CLI says so; PNG keeps the alpha."""
    from libcem.denoiser.io import drops_alpha

    rgb = _noisy_rgb().astype(np.uint8)
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    rgba, gray_alpha = np.concatenate([rgb, alpha], 2), np.concatenate([rgb[:, :, :1], alpha], 2)
    for name, img, kept in [("a.bmp", rgba, rgb), ("b.bmp", gray_alpha, rgb[:, :, 0])]:
        write_image(tmp_path / name, img)
        assert np.array_equal(read_image(tmp_path / name), kept)
    write_image(tmp_path / "c.jpg", rgba)
    assert read_image(tmp_path / "c.jpg").shape == rgb.shape
    assert drops_alpha(tmp_path / "x.JPG", rgba) and drops_alpha(tmp_path / "x.bmp", gray_alpha)
    assert not drops_alpha(tmp_path / "x.png", rgba) and not drops_alpha(tmp_path / "x.jpg", rgb)
    write_image(tmp_path / "p.png", rgba)
    assert main(["denoise", str(tmp_path / "p.png"), "-o", str(tmp_path / "p.jpg"), "--fast"]) == 0
    err = capsys.readouterr().err
    assert "note: p.png: JPG holds no alpha channel: the output is written without it" in err
    assert read_image(tmp_path / "p.jpg").shape == rgb.shape


def test_cli_refuses_an_output_format_before_denoising(tmp_path, capsys, monkeypatch):
    import libcem.denoiser

    write_image(tmp_path / "f.tif", (_noisy_rgb() / 255).astype(np.float32))
    monkeypatch.setattr(libcem.denoiser, "denoise", lambda *a, **k: pytest.fail("denoised first"))
    assert main(["denoise", str(tmp_path / "f.tif"), "-o", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err
    assert "PNG holds 8- and 16-bit images only; write float32 to TIFF" in err
    assert not (tmp_path / "f.png").exists()


def test_non_image_file_gives_clear_error(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(LibcemError, match="not a PNG"):
        read_image(bad)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(LibcemError, match="unsupported file type"):
        read_image(text)
    fake_tif = tmp_path / "x.tif"
    fake_tif.write_bytes(b"\x00" * 64)
    with pytest.raises(LibcemError, match="cannot read as an image"):
        read_image(fake_tif)
    assert main(["denoise", str(bad), "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("libcem: error:") and "notes.png" in err[0]


def test_cli_file_and_folder(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rgb = _noisy_rgb()
    write_image(src / "a.png", rgb.astype(np.uint8))
    write_image(src / "b.png", (rgb * 257).astype(np.uint16))
    (src / "readme.txt").write_text("skipped: not an image")
    args = ["denoise", str(src / "a.png"), "-o", str(tmp_path / "a_out.png"), "--sigma", "15"]
    assert main(args) == 0
    out = read_image(tmp_path / "a_out.png")
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert "sigma 15.00" in capsys.readouterr().out
    assert main(["denoise", str(src), "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    out16 = read_image(tmp_path / "out" / "b.png")
    assert out16.dtype == np.uint16 and out16.max() > 255
    printed = capsys.readouterr().out
    assert printed.count("sigma") == 2
    # several inputs (as a shell's *.png gives them) into one folder; a file given twice once
    many = ["denoise", str(src / "a.png"), str(src / "b.png"), str(src / "a.png"), "-o", str(tmp_path / "many")]
    assert main([*many, "--fast"]) == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["a.png", "b.png"]
    assert capsys.readouterr().out.count("sigma") == 2
    other = tmp_path / "other"
    other.mkdir()
    write_image(other / "a.png", rgb.astype(np.uint8))
    (tmp_path / "nest" / "sub").mkdir(parents=True)  # a folder whose images sit in a sub-folder
    write_image(tmp_path / "nest" / "sub" / "a.png", rgb.astype(np.uint8))
    for argv, message in [([str(src / "a.png"), str(other / "a.png"), "-o", str(tmp_path / "x")],
                           "would both be written to"),
                          ([str(src / "a.png"), str(src / "b.png"), "-o", str(tmp_path / "a_out.png")],
                           "the inputs are several, so the output must be a folder"),
                          ([str(tmp_path / "nest"), "-o", str(tmp_path / "y")], "1 sub-folder(s) are read with -r")]:
        assert main(["denoise", *argv]) == 2
        assert message in capsys.readouterr().err
    # -r: sub-folders too, their tree kept under the output
    write_image(tmp_path / "nest" / "top.png", rgb.astype(np.uint8))
    assert main(["denoise", str(tmp_path / "nest"), "-o", str(tmp_path / "tree"), "-r", "--fast"]) == 0
    assert sorted(str(p.relative_to(tmp_path / "tree")) for p in (tmp_path / "tree").rglob("*.png")) == [
        "sub/a.png", "top.png"]
    inside = tmp_path / "nest" / "clean"  # an output folder inside the input: its files are not inputs
    for _ in range(2):
        assert main(["denoise", str(tmp_path / "nest"), "-o", str(inside), "-r", "--fast"]) == 0
    assert sorted(str(p.relative_to(inside)) for p in inside.rglob("*.png")) == ["sub/a.png", "top.png"]


def test_cli_says_when_a_given_sigma_met_clipped_noise(tmp_path, capsys):
    clean = data.camera()[:48, :48].astype(np.float64)
    clean[:, :12] = 0  # black: the noise is clipped there
    noisy = np.clip(np.round(clean + 40 * np.random.default_rng(0).standard_normal(clean.shape)), 0, 255)
    write_image(tmp_path / "a.png", noisy.astype(np.uint8))
    assert main(["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--sigma", "40"]) == 0
    line = capsys.readouterr().out
    assert "sigma 40.00" in line and "clipped at black and white: std " in line
    assert read_image(tmp_path / "o.png")[:, :12].mean() < 5  # black again, not dark grey
    # estimated (on a larger crop, which the noise fits need): the std before clipping, and
    # the same model; auto reads the noise as white, not as growing with brightness
    clean = data.camera()[160:256, 200:296].astype(np.float64)
    clean[:, :24] = 0
    noisy = np.clip(np.round(clean + 40 * np.random.default_rng(0).standard_normal(clean.shape)), 0, 255)
    write_image(tmp_path / "b.png", noisy.astype(np.uint8))
    assert main(["denoise", str(tmp_path / "b.png"), "-o", str(tmp_path / "e.png")]) == 0
    line = capsys.readouterr().out
    assert "gaussian noise (auto)" in line and "clipped at black and white: std " in line
    assert float(line.split(", sigma ")[1].split()[0]) == pytest.approx(40, rel=0.1)
    assert read_image(tmp_path / "e.png")[:, :24].mean() < 5
    # noise growing with brightness, clipped at white (session 23): the white band comes back
    clean = data.camera()[:96, 200:296].astype(np.float64)
    clean[:, -24:] = 250
    noisy = np.clip(np.round(clean + np.sqrt(4 * clean + 16) * np.random.default_rng(0).standard_normal(clean.shape)),
                    0, 255)
    write_image(tmp_path / "c.png", noisy.astype(np.uint8))
    assert main(["denoise", str(tmp_path / "c.png"), "-o", str(tmp_path / "p.png"), "--noise", "poisson-gaussian"]) == 0
    line = capsys.readouterr().out
    assert "Poisson-Gaussian a " in line and "clipped at black and white: its bias taken out" in line
    assert abs(read_image(tmp_path / "p.png")[:, -24:].mean() - 250) < 2


def test_cli_rejects_bad_sigma(tmp_path, capsys):
    write_image(tmp_path / "a.png", _noisy_rgb().astype(np.uint8))
    assert main(["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"),
                 "--sigma", "300"]) == 2
    assert "0..255" in capsys.readouterr().err


def test_cli_noise_model_strength_and_metadata(tmp_path, capsys):
    from PIL import Image, ImageCms

    clean = data.camera()[64:128, 96:160].astype(np.float64)
    y = np.clip(clean + np.sqrt(clean + 4) * np.random.default_rng(0).standard_normal(clean.shape),
                0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(y).save(tmp_path / "in.png", exif=exif.tobytes(), icc_profile=icc)
    args = ["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"),
            "--noise", "poisson-gaussian", "--strength", "0.5"]
    assert main(args) == 0
    assert "Poisson-Gaussian a" in capsys.readouterr().out
    with Image.open(tmp_path / "out.png") as out:
        assert out.info["icc_profile"] == icc and out.getexif()[0x010F] == "PhoneMaker"
        half = np.asarray(out, dtype=np.float64)
    assert main(args[:-2]) == 0
    full = read_image(tmp_path / "out.png").astype(np.float64)
    assert np.abs(half - (y + 0.5 * (full - y))).max() <= 1.0  # rounding only
    assert main(args[:4] + ["--sigma", "5", "--noise", "auto"]) == 2


def test_fast_tiled_run_with_workers_and_a_tile_progress_bar(tmp_path, capsys):
    write_image(tmp_path / "in.png", _noisy_rgb(64, 72).astype(np.uint8))
    assert main(["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--fast",
                 "--tile", "48", "--workers", "2", "--sigma", "15"]) == 0
    out = read_image(tmp_path / "out.png")
    assert out.shape == (64, 72, 3) and out.dtype == np.uint8
    assert "0/4 [" in capsys.readouterr().err  # a bar over 2 x 2 tiles
    assert main(["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"),
                 "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_threads_option_gives_the_same_image_up_to_rounding(tmp_path, capsys):
    write_image(tmp_path / "in.png", _noisy_rgb(40, 44).astype(np.uint8))
    base = ["denoise", str(tmp_path / "in.png"), "--sigma", "20"]
    assert main(base + ["-o", str(tmp_path / "one.png"), "--threads", "1"]) == 0
    assert main(base + ["-o", str(tmp_path / "two.png"), "--threads", "2"]) == 0
    one, two = (read_image(tmp_path / f).astype(int) for f in ("one.png", "two.png"))
    assert np.abs(one - two).max() <= 1  # torch's own threads may round the last bit apart
    assert main(base + ["-o", str(tmp_path / "o.png"), "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_best_runs_the_group_axis_passes_and_excludes_fast(tmp_path, capsys):
    clean = data.camera()[100:148, 100:148].astype(np.float64)
    noisy = np.clip(clean + 25 * np.random.default_rng(0).standard_normal(clean.shape), 0, 255)
    write_image(tmp_path / "in.png", np.round(noisy).astype(np.uint8))
    base = ["denoise", str(tmp_path / "in.png"), "--sigma", "25"]
    assert main(base + ["-o", str(tmp_path / "best.png"), "--best"]) == 0
    assert main(base + ["-o", str(tmp_path / "default.png")]) == 0
    best, default = (read_image(tmp_path / f).astype(np.float64) for f in ("best.png", "default.png"))
    assert best.shape == clean.shape
    assert ((best - clean) ** 2).mean() < 0.97 * ((default - clean) ** 2).mean()
    assert main(base + ["-o", str(tmp_path / "o.png"), "--best", "--fast"]) == 2
    assert "--fast and --best exclude each other" in capsys.readouterr().err


def test_cli_names_the_bits_that_12bit_data_fill(tmp_path, capsys):
    """12-bit data in a 16-bit PNG: the std on the 0..255 scale of the 16-bit range (as --sigma
    takes it) and in the file's own units."""
    clean = data.camera()[100:164, 100:164].astype(np.float64) * 4095 / 255
    noisy = clean + 40 * np.random.default_rng(0).standard_normal(clean.shape)
    write_image(tmp_path / "d12.png", np.clip(noisy, 0, 4095).round().astype(np.uint16))
    assert main(["denoise", str(tmp_path / "d12.png"), "-o", str(tmp_path / "out.png")]) == 0
    line = capsys.readouterr().out
    sigma = float(line.split("sigma ")[1].split(" ")[0])
    assert sigma == pytest.approx(40 * 255 / 65535, rel=0.25)
    assert "in the file's units, whose data fill 12 bits" in line
    assert read_image(tmp_path / "out.png").max() <= 4095


def test_cli_suggests_fast_for_a_big_photo_once_per_run(tmp_path, capsys, monkeypatch):
    from libcem.commands import denoise as command

    monkeypatch.setattr(command, "BIG_PHOTO_MEGAPIXELS", 0.001)  # 40x48 pixels count as big
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        write_image(src / name, _noisy_rgb().astype(np.uint8))
    assert main(["denoise", str(src), "-o", str(tmp_path / "out"), "--sigma", "15"]) == 0
    err = capsys.readouterr().err
    assert err.count("--fast is about 2x faster") == 1 and "note: a.png: 0.0 megapixels" in err
    assert main(["denoise", str(src / "a.png"), "-o", str(tmp_path / "f.png"), "--fast"]) == 0
    assert "note:" not in capsys.readouterr().err
    photo = np.zeros((3000, 4000, 3), np.uint8)
    best = command._speed_note(photo, argparse.Namespace(fast=False, best=True, device="cpu"))
    assert best[0] == "best" and "12.0 megapixels with --best" in best[1]


def test_a_tiff_too_large_for_pillow_is_read_by_tifffile_alone(tmp_path, monkeypatch):
    """Pillow refuses images over 2 x MAX_IMAGE_PIXELS (179 megapixels) as decompression
    bombs; tifffile reads them, and the header readers (CMYK, EXIF) then step aside."""
    from PIL import Image

    from libcem.denoiser.io import exif_orientation, read_metadata

    img = _noisy_rgb().astype(np.uint16) * 257
    write_image(tmp_path / "big.tif", img)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40x48 is then "too large"
    assert np.array_equal(read_image(tmp_path / "big.tif"), img)
    assert read_metadata(tmp_path / "big.tif") == {} and exif_orientation(tmp_path / "big.tif") == 1


def test_heic_keeps_exif_and_names_its_extra_when_missing(tmp_path, monkeypatch):
    """A phone's HEIC photo: read and written (lossless) through pillow-heif, EXIF kept; without
    pillow-heif a one-line error names the extra, before any work."""
    import sys

    from PIL import Image

    from libcem.denoiser.io import check_writable, read_metadata

    img = _noisy_rgb().astype(np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    write_image(tmp_path / "a.heic", img, {"exif": exif.tobytes()})
    write_image(tmp_path / "b.heic", read_image(tmp_path / "a.heic"), read_metadata(tmp_path / "a.heic"))
    assert np.array_equal(read_image(tmp_path / "b.heic"), img)
    with Image.open(tmp_path / "b.heic") as back:
        assert back.getexif()[0x010F] == "TestCam"
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if not installed
    for call in (lambda: read_image(tmp_path / "a.heic"), lambda: check_writable(tmp_path / "c.heic", np.uint8)):
        with pytest.raises(LibcemError, match="pip install pillow-heif"):
            call()


def test_a_folder_of_large_photos_forks_its_tile_workers(tmp_path):
    """The CLI keeps a single thread (no tqdm monitor thread), so each photo's tile workers are
    forked, not spawned (each spawned worker imports torch again)."""
    import subprocess
    import sys

    if sys.platform != "linux":
        pytest.skip("workers are forked on Linux only")
    for i in range(2):
        write_image(tmp_path / f"p{i}.png", _noisy_rgb(150, 150).astype(np.uint8))
    script = tmp_path / "spy.py"
    script.write_text(
        "import multiprocessing\n"
        "real = multiprocessing.get_context\n"
        "multiprocessing.get_context = lambda method=None: print('context', method) or real(method)\n"
        "from libcem.cli import main\n"
        "if __name__ == '__main__':\n"
        f"    main(['denoise', {str(tmp_path)!r}, '-o', {str(tmp_path / 'out')!r}, '--fast',\n"
        "          '--tile', '100', '--workers', '2'])\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("context fork") == 2 and "spawn" not in run.stdout, run.stdout
