"""`libcem demo`: the Denoise tab's image logic and the run-folder lookups on their own, then the page
itself, started with the CLI on a free localhost port and driven in headless Chromium with Playwright.

The browser test skips where Chromium or Playwright is missing, except in CI (CI set), where it fails.
Its screenshots go to $LIBCEM_ARTIFACTS (default: a pytest temporary folder); docs/images/demo-*.png
are copies of them.
"""

import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from libcem.cli import main
from libcem.demo import photos
from libcem.demo.runs import read_metrics, stage_files
from libcem.denoiser import DenoiseConfig
from libcem.denoiser.api import estimate_noise
from libcem.denoiser.io import read_image, write_image
from libcem.errors import LibcemError

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SIGMA = 25.0


def clean_crop(side: int = 96) -> np.ndarray:
    """A gray uint8 crop of scikit-image's camera (CC0)."""
    return data.camera()[140:140 + side, 200:200 + side]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny preset trained for its few steps (seconds on a CPU): a two-stage run folder."""
    root = tmp_path_factory.mktemp("demo-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIBCEM_CACHE", str(root / "cache"))
        assert main(["train", "--preset", "tiny", "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


# ---- the Denoise tab's logic, no browser ----

def test_add_noise_keeps_dtype_and_alpha_and_is_seeded():
    rgba = np.dstack([np.full((16, 16, 3), 128, np.uint16) * 256, np.full((16, 16, 1), 7, np.uint16)])
    noisy = photos.add_noise(rgba, SIGMA, seed=3)
    assert noisy.dtype == np.uint16 and noisy.shape == rgba.shape
    assert np.array_equal(noisy[:, :, 3], rgba[:, :, 3])  # alpha untouched
    assert np.array_equal(noisy, photos.add_noise(rgba, SIGMA, seed=3))
    measured = (noisy[:, :, :3].astype(float) - rgba[:, :, :3]).std() * 255 / 65535
    assert abs(measured - SIGMA) < 2.5  # sigma is on the 0..255 scale whatever the bit depth


def test_denoise_photo_estimates_sigma_improves_psnr_and_reports_tiles():
    clean = clean_crop(80)
    noisy = photos.add_noise(clean, SIGMA)
    estimate = photos.estimate_noise(noisy)
    assert abs(estimate - SIGMA) < 2.5
    calls = []
    tiled = DenoiseConfig(tile=48, overlap=8)  # an 80x80 photo in 2x2 tiles
    out, used, model = photos.denoise_photo(noisy, None, tiled,
                                            progress=lambda done, total: calls.append((done, total)))
    assert out.dtype == np.uint8 and out.shape == clean.shape
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert photos.psnr_db(out, clean) > photos.psnr_db(noisy, clean) + 4
    assert used == pytest.approx(photos.estimate_noise(noisy, tiled), rel=1e-3)  # the page shows what is used
    assert model == "gaussian"
    with pytest.raises(LibcemError, match="0..255 scale"):
        photos.denoise_photo(noisy, -1.0)


def test_denoise_photo_with_correlated_noise():
    from scipy.signal import fftconvolve

    clean = data.camera()[:96, 64:160]
    w = np.random.default_rng(0).standard_normal((98, 98))
    blotchy = fftconvolve(w, np.outer([1, 2, 1], [1, 2, 1]) / 6.0, mode="valid") * 20  # std 20
    noisy = np.clip(np.round(clean + blotchy), 0, 255).astype(np.uint8)
    white, _, _ = photos.denoise_photo(noisy, None)
    out, used, _ = photos.denoise_photo(noisy, None, noise="correlated")
    assert used == pytest.approx(20, rel=0.15)  # the white-noise estimate sees about 4
    assert photos.psnr_db(out, clean) > photos.psnr_db(white, clean) + 4
    reading = photos.read_noise(noisy)
    assert reading.correlated and reading.white_std == pytest.approx(estimate_noise(photos.to_work(noisy), DenoiseConfig()))
    assert not photos.read_noise(photos.add_noise(clean, SIGMA)).correlated
    pytest.importorskip("gradio")
    from libcem.demo.denoise_tab import describe

    line = describe(photos.Photo(name="blotchy", suffix=".png", original=noisy, noisy=noisy), reading, 4.0)
    assert "looks blotchy (correlated, std" in line and line.endswith("remove little of it.")
    auto, _, model = photos.denoise_photo(noisy, None, noise="auto")  # reads the noise as correlated
    assert model == "correlated" and np.array_equal(auto, photos.denoise_photo(noisy, None, noise="camera")[0])
    assert photos.denoise_photo(noisy, 20.0, noise="auto")[2] == "gaussian"  # a level set by hand: white
    with pytest.raises(LibcemError, match="gaussian, correlated, camera or auto"):
        photos.denoise_photo(noisy, None, noise="poisson")


def test_denoise_photo_with_camera_noise():
    from scipy.signal import fftconvolve

    clean = data.camera()[:128, 64:192].astype(np.float64)  # dark coat to bright sky
    w = fftconvolve(np.random.default_rng(0).standard_normal((130, 130)),
                    np.outer([1, 2, 1], [1, 2, 1]) / 6.0, mode="valid")
    noisy = np.clip(np.round(clean + np.sqrt(clean + 16) * w), 0, 255).astype(np.uint8)
    out, used, _ = photos.denoise_photo(noisy, None, noise="camera")
    corr, _, _ = photos.denoise_photo(noisy, None, noise="correlated")
    ref = clean.astype(np.uint8)
    assert photos.psnr_db(out, ref) > photos.psnr_db(corr, ref) + 1
    assert used == pytest.approx(np.sqrt(clean.mean() + 16), rel=0.25)  # std at the mean level
    with pytest.raises(LibcemError, match="fitted"):
        photos.denoise_photo(noisy, 10.0, noise="camera")


def test_strength_blends_input_and_output():
    noisy, denoised = np.full((8, 8), 100, np.uint8), np.full((8, 8), 200, np.uint8)
    assert np.array_equal(photos.blend(noisy, denoised, 0.0), noisy)
    assert np.array_equal(photos.blend(noisy, denoised, 1.0), denoised)
    assert np.all(photos.blend(noisy, denoised, 0.25) == 125)


def test_bad_files_are_one_line_errors(tmp_path):
    empty, text = tmp_path / "empty.png", tmp_path / "notes.txt"
    empty.write_bytes(b"")
    text.write_text("not a photo")
    small, big = tmp_path / "small.png", tmp_path / "big.png"
    Image.fromarray(np.zeros((4, 30), np.uint8)).save(small)
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(big)
    for path, message in [(None, "no file"), (empty, "empty"), (text, "unsupported file type"),
                          (small, "at least 7x7"), (big, "300x300 \\(0.1 megapixels\\)")]:
        with pytest.raises(LibcemError, match=message):
            photos.load_photo(path, max_megapixels=0.05)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_photo_is_shown_upright_as_its_exif_says(tmp_path, orientation):
    """A phone stores a portrait photo sideways with EXIF orientation 6; the page has no EXIF
    to show or return, so the pixels are turned at loading, as Pillow's exif_transpose does."""
    from PIL import ImageOps

    pixels = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / "phone.png", exif=exif.tobytes())
    with Image.open(tmp_path / "phone.png") as im:
        want = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(photos.load_photo(tmp_path / "phone.png").original, want)


def test_a_phones_heic_photo_uploads_as_it_is(tmp_path):
    """The demo extra installs pillow-heif: an iPhone's HEIC loads, and its result is written
    back as HEIC, lossless."""
    pixels = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / "IMG_0001.heic", pixels)
    photo = photos.load_photo(tmp_path / "IMG_0001.heic")
    assert np.array_equal(photo.original, pixels)
    path = photos.save_result(photo.original, photo, tmp_path / "out")
    assert path.name == "IMG_0001-denoised.heic" and np.array_equal(read_image(path), pixels)


def test_12bit_data_in_a_16bit_file_show_and_denoise_on_their_own_range(tmp_path):
    """As `denoise` does (`api.content_peak`): the page's 0..255 scale is that of the range the
    data fill, so 12-bit data show bright (they showed nearly black) and their noise levels
    read as on an 8-bit photo; alpha keeps the dtype's range; the result shows on the input's
    scale, whatever its own largest value."""
    eight = data.camera()[:64, :64]
    clean = (eight.astype(np.float64) * 4095 / 255).round().astype(np.uint16)
    assert photos.peak(clean) == 4095  # the largest value, 3372, needs 12 bits
    assert np.abs(photos.to_display(clean).astype(int) - eight).max() <= 1  # as the 8-bit photo
    noisy = photos.add_noise(clean, 10.0)  # std 10 on the 0..255 scale of 0..4095
    assert noisy.max() <= 4095 and np.std(noisy.astype(float) - clean) == pytest.approx(160, rel=0.1)
    assert photos.estimate_noise(noisy) == pytest.approx(10.0, rel=0.15)
    out = photos.denoise_photo(noisy, 10.0)[0]
    assert out.dtype == np.uint16 and photos.psnr_db(out, clean) > photos.psnr_db(noisy, clean) + 3
    dim = photos.to_display(out // 2, white=4095)  # a darker result keeps the input's scale
    assert dim.max() <= 130
    rgba = np.dstack([np.repeat(clean[:, :, None], 3, 2), np.full((64, 64, 1), 32768, np.uint16)])
    assert photos.to_display(rgba, side=None)[0, 0, 3] == 128  # half transparent stays half


def test_result_keeps_the_input_format(tmp_path):
    src = tmp_path / "deep.png"
    write_image(src, (np.arange(64 * 64 * 3, dtype=np.uint16) * 7).reshape(64, 64, 3))
    photo = photos.load_photo(src)
    path = photos.save_result(photo.original, photo, tmp_path / "out")
    assert path.name == "deep-denoised.png"
    back = read_image(path)
    assert back.dtype == np.uint16 and np.array_equal(back, photo.original)
    view = photos.to_display(back)
    assert view.dtype == np.uint8 and view.shape == (64, 64, 3)
    assert photos.zoom(back, (0.5, 0.5), 4, box=64).shape == (64, 64, 3)  # a 16-pixel crop, 4 times larger


# ---- the Training tab's lookups ----

def test_stage_files_of_a_two_stage_run(tiny_run, tmp_path):
    stages = stage_files(tiny_run)
    assert [s.name for s in stages] == ["tokenizer", "prior"]
    assert all(s.latest_grid and s.latest_grid.name.startswith("step_") for s in stages)
    assert [row["step"] for row in read_metrics(stages[1].metrics)][-1] == 4
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')  # a line still being written
    assert read_metrics(log) == [{"step": 1, "loss": 0.5}]
    assert stage_files(tmp_path)[0].name == tmp_path.name  # a single-stage run is the folder itself
    with pytest.raises(LibcemError, match="no such folder"):
        stage_files(tmp_path / "nope")


# ---- the command and the Colab kit ----

def test_without_gradio_one_line_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    monkeypatch.delitem(sys.modules, "libcem.demo.app", raising=False)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'libcem[demo]'" in err


def test_colab_kit_ends_by_opening_the_demo_on_the_run():
    from libcem.platforms.notebook import build_notebook

    last = "".join(build_notebook("colab")["cells"][-1]["source"])
    assert "build_app(model=RUN, run=RUN)" in last and "share=True" in last


# ---- the page in a real browser ----

def browser():
    """Playwright and Chromium, or a skip saying what is missing (a failure in CI)."""
    missing = []
    try:
        import gradio  # noqa: F401
    except ImportError:
        missing.append("gradio (pip install 'libcem[demo]')")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("playwright (pip install playwright)")
    chromium = os.environ.get("LIBCEM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        missing.append("chromium (apt-get install chromium)")
    if missing:
        if os.environ.get("CI"):
            pytest.fail("the browser test must run in CI; missing: " + ", ".join(missing))
        pytest.skip("missing: " + ", ".join(missing))
    return sync_playwright, chromium


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_url(tiny_run):
    """`libcem demo --model RUN` on a free port, with a 0.05-megapixel limit for the huge-photo check."""
    browser()
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "libcem", "demo", "--model", str(tiny_run), "--port", str(port),
           "--device", "cpu", "--max-megapixels", "0.05"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    seen, deadline = "", time.monotonic() + 90
    while "libcem demo: open" not in seen and proc.poll() is None and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            seen += proc.stdout.readline()
    if "libcem demo: open" not in seen:
        proc.kill()
        pytest.fail(f"the demo did not start:\n{seen}{proc.stdout.read() if proc.poll() is not None else ''}")
    assert f"http://127.0.0.1:{port}" in seen
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(demo_url, tmp_path_factory):
    sync_playwright, chromium = browser()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.requests = []  # every URL the page asked for (checked by the last test)
        page.on("request", lambda request: page.requests.append(request.url))
        page.goto(demo_url)
        page.wait_for_selector("#photo-file")
        yield page
        context.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("LIBCEM_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def info_has(page, element: str, text: str) -> None:
    """Wait until the element's text contains `text`."""
    page.wait_for_function("([sel, text]) => document.querySelector(sel).innerText.includes(text)",
                           arg=[element, text])


def upload(page, path: Path) -> None:
    """Put a file into the photo box, clearing the one there first."""
    clear = page.locator("#photo-file button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.locator("#photo-file input[type=file]").set_input_files(str(path))


def toast(page, text: str) -> str:
    """Wait for an error message on the page holding `text`, close it, return all of it."""
    message = page.locator("[data-testid=toast-text]", has_text=text).first
    message.wait_for()
    shown = message.inner_text()
    page.locator("[data-testid=toast-close]").first.click()
    return shown


def test_denoise_tab_in_a_browser(page, tmp_path, artifacts):
    clean = clean_crop(96)
    noisy_path = tmp_path / "noisy.png"
    Image.fromarray(photos.add_noise(clean, SIGMA, seed=1)).save(noisy_path)
    upload(page, noisy_path)
    info_has(page, "#denoise-info", "noisy.png")
    estimate = float(page.locator("#sigma input").input_value())
    assert abs(estimate - SIGMA) < 2.5
    page.click("#denoise-button")  # the default noise model, Auto: white noise read as such
    info_has(page, "#denoise-info", "gaussian noise (chosen by Auto)")
    page.locator("#noise-model").get_by_text("Blotches:").click()  # the correlated-noise model
    page.click("#denoise-button")
    info_has(page, "#denoise-info", "correlated noise")
    page.locator("#compare img").first.wait_for()
    with page.expect_download() as download:
        page.click("#download")
    result = tmp_path / download.value.suggested_filename
    download.value.save_as(result)
    assert result.name == "noisy-denoised.png"
    out = read_image(result)
    noisy = read_image(noisy_path)
    assert out.shape == clean.shape and out.dtype == np.uint8
    assert photos.psnr_db(out, clean) > photos.psnr_db(noisy, clean) + 4
    page.locator("#noise-model").get_by_text("Camera:").click()  # correlated and signal-dependent
    page.click("#denoise-button")
    info_has(page, "#denoise-info", "camera noise")

    # a bundled clean example with synthetic noise: the page measures the PSNR against the clean photo
    page.locator("#photo-file button[aria-label=Clear]").click()
    page.get_by_text("cat.png", exact=True).first.click()
    info_has(page, "#denoise-info", "cat.png")
    page.locator("#add-noise input[type=number]").fill(str(int(SIGMA)))
    page.locator("#add-noise input[type=number]").press("Enter")
    info_has(page, "#denoise-info", "synthetic noise added")
    page.locator("#noise-model").get_by_text("Grain:").click()  # back to the white-noise model
    page.locator("#speed").get_by_text("Fast:").click()
    page.click("#denoise-button")
    info_has(page, "#denoise-info", "PSNR against the clean photo")
    assert "fast settings" in page.locator("#denoise-info").inner_text()
    assert "correlated" not in page.locator("#denoise-info").inner_text()
    text = page.locator("#denoise-info").inner_text()
    before, after = map(float, re.search(r"noisy ([\d.]+) dB → result ([\d.]+) dB", text).groups())
    assert after > before + 4
    page.wait_for_timeout(500)  # let the slider images settle
    page.screenshot(path=str(artifacts / "demo-denoise.png"), full_page=True)


def test_bad_uploads_show_a_message(page, tmp_path):
    text, empty, huge = tmp_path / "notes.txt", tmp_path / "empty.png", tmp_path / "huge.png"
    text.write_text("not a photo")
    empty.write_bytes(b"")
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(huge)  # 0.09 megapixels; the page takes 0.05
    for path, message in [(text, "unsupported file type"), (empty, "is empty"), (huge, "megapixels")]:
        upload(page, path)
        assert toast(page, message).startswith(path.name)  # its name, not the server's upload folder
    assert "Traceback" not in page.content()


def test_generate_tab_in_a_browser(page, artifacts, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Generate").click()
    page.get_by_role("button", name="a pink tree fractal on a navy background").click()  # an example prompt
    expect(page.locator("#prompt textarea")).to_have_value("a pink tree fractal on a navy background", timeout=30_000)
    page.locator("#seed input").fill("7")

    def generate(n: int) -> list[bytes]:
        """Generate n images; the PNG bytes of the gallery's images once it holds n."""
        page.locator("#count input[type=number]").fill(str(n))
        page.locator("#count input[type=number]").press("Enter")
        page.click("#generate-button")
        images = page.locator("#gallery button img")
        expect(images).to_have_count(n, timeout=60_000)
        return [page.request.get(src).body() for src in images.evaluate_all("imgs => imgs.map(i => i.src)")]

    three = generate(3)
    expect(page.locator("#gallery")).to_contain_text("seed 7, image 2")
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "demo-generate.png"), full_page=True)
    assert generate(2) == three[:2]  # image i is seeded by (seed, i): the same seed gives the same images

    page.locator("#prompt textarea").fill("")
    page.click("#generate-button")
    toast(page, "empty prompt")
    page.locator("#model-path input, #model-path textarea").first.fill(str(tmp_path))
    page.click("#load-model")
    toast(page, "neither a model folder")


def test_training_tab_in_a_browser(page, artifacts):
    page.get_by_role("tab", name="Training").click()
    info_has(page, "#run-status", "prior")
    status = page.locator("#run-status").inner_text()
    assert "tokenizer: step 4" in status and "prior: step 4" in status
    page.locator("#snapshots img").first.wait_for()
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "demo-training.png"), full_page=True)


def test_the_page_fetched_nothing_from_the_internet(page, demo_url):
    local = [url for url in page.requests if url.startswith((demo_url, "data:", "blob:"))]
    assert len(local) > 10 and local == page.requests  # no fonts, scripts or analytics from elsewhere
