"""The Denoise tab: upload a photo (or pick an example), see its estimated noise level, denoise it,
compare before and after with a slider and a zoomed crop, and download the result in the input's format.

Strength blends the input and the denoiser's output (1 = fully denoised, 0 = the input); changing it
re-blends at once without denoising again. Synthetic noise of a chosen sigma can be added to a
clean photo first, and then the PSNR of the noisy photo and of the result against it is shown.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from libcem.demo import photos
from libcem.demo.messages import shown
from libcem.denoiser import DenoiseConfig
from libcem.denoiser.noise_choice import NoiseReading

EXAMPLES = sorted((Path(__file__).parent / "examples").glob("*.png"))  # clean crops of scikit-image's CC0 samples
ZOOMS = [2, 4, 8]
CHANNELS = {1: "gray", 2: "gray + alpha", 3: "RGB", 4: "RGBA"}
SPEED_CHOICES = [  # (label, DenoiseConfig.at_speed name), as --fast, the default and --best
    ("Fast: about 2.7x faster on colour photos, about 0.1 dB softer (large photos)", "fast"),
    ("Default", "default"),
    ("Best: about 0.1-0.2 dB more PSNR, 2.5-5.5x slower (small photos and crops)", "best"),
]
NOISE_CHOICES = [  # (label, noise model of photos.denoise_photo), as --noise auto / gaussian / correlated / camera
    ("Auto: read from the photo (grain, or blotches as in a phone's photos and JPEGs)", "auto"),
    ("Grain: white noise", "gaussian"),
    ("Blotches: correlated noise (demosaiced or smoothed; its correlation is fitted)", "correlated"),
    ("Camera: blotches that grow with brightness (phone or camera photos; all fitted)", "camera"),
]


@dataclass
class DenoiseTab:
    """The tab's settings, shared by every visitor; each visitor's photo lives in a gr.State."""

    device: str
    max_megapixels: float
    config: DenoiseConfig
    workdir: tempfile.TemporaryDirectory  # results for download, one folder each; removed at exit

    @shown
    def load(self, path: str | None, noise: float):
        """A new file (or none): read it, add the synthetic noise, estimate the noise level."""
        if path is None:
            return cleared()
        photo = photos.load_photo(path, self.max_megapixels)
        return self.noisy(photo, noise)

    @shown
    def noisy(self, photo: photos.Photo | None, noise: float):
        """Add `noise` (0..255 scale; 0 = none) to the photo's original and estimate the noise level."""
        if photo is None:
            return cleared()
        photo.clean = photo.original if noise > 0 else None
        photo.noisy = photos.add_noise(photo.original, noise) if noise > 0 else photo.original
        photo.denoised = None
        reading = photos.read_noise(photo.noisy, self.config)
        sigma = photos.estimate_noise(photo.noisy, self.config)
        view = photos.to_display(photo.noisy)
        return (photo, view, round(sigma, 2), describe(photo, reading, sigma), (view, view), None,
                gr.DownloadButton(value=None, visible=False))  # the zoomed crop follows (restyle)

    @shown
    def denoise(self, photo: photos.Photo | None, auto: bool, sigma: float | None, model: str, speed: str,
                strength: float, factor: int, centre: tuple[float, float],
                progress=gr.Progress()):  # noqa: B008 (how Gradio passes a progress bar)
        """Run the denoiser on the photo, with its estimated noise level (auto) or `sigma` (0..255 scale),
        the noise `model` ("auto", "gaussian", "correlated" or "camera", as `--noise`) and the settings of `speed` ("fast",
        "default" or "best", as `--fast` and `--best`); tile by tile when the photo is large, the progress
        bar following the tiles."""
        if photo is None:
            photos.load_photo(None)  # raises: there is nothing to denoise yet
        progress(0, desc="denoising")
        start = time.perf_counter()
        config = self.config.at_speed(speed)
        photo.denoised, used, chosen = photos.denoise_photo(
            photo.noisy, None if auto else sigma, config, self.device,
            lambda done, total: progress((done, total), desc="denoising", unit="tiles"), model)
        seconds = time.perf_counter() - start
        how = "estimated" if auto else "set by hand"
        settings = "" if speed == "default" else f", {speed} settings"
        if chosen != "gaussian" or model == "auto":
            settings += f", {chosen} noise" + (" (chosen by Auto)" if model == "auto" else "")
        if chosen in ("correlated", "camera") and speed == "best":
            settings += " (--best's extra passes skipped)"
        if chosen in ("camera", "poisson-gaussian"):
            how = "fitted; at the photo's mean brightness"
        note = f"Denoised with noise level σ = {used:.2f} ({how}, 0..255 scale{settings}) in {seconds:.1f} s."
        return (photo, note) + self.views(photo, strength, factor, centre, note)

    @shown
    def restyle(self, photo: photos.Photo | None, strength: float, factor: int, centre: tuple[float, float],
                note: str):
        """New strength, zoom or crop centre: redraw the views from the denoised photo, no new denoising."""
        if photo is None:
            return gr.update(), gr.update(), gr.update(), gr.update()
        if photo.denoised is None:  # not denoised yet: the zoomed crop of the input on both sides
            crop = photos.zoom(photo.noisy, centre, factor)
            return gr.update(), (crop, crop), gr.update(), gr.update()
        return self.views(photo, strength, factor, centre, note)

    def views(self, photo: photos.Photo, strength: float, factor: int, centre: tuple[float, float], note: str):
        """Before/after at page size, before/after of the zoomed crop, the notes, the download."""
        result = photos.blend(photo.noisy, photo.denoised, strength)
        text = f"{note} Strength {strength:g}."
        if photo.clean is not None:
            before, after = photos.psnr_db(photo.noisy, photo.clean), photos.psnr_db(result, photo.clean)
            text += f"\n\nPSNR against the clean photo: noisy {before:.2f} dB → result {after:.2f} dB " \
                    f"({after - before:+.2f} dB)"
        if photo.download is not None and photo.download.parent.is_dir():  # the previous result's folder
            shutil.rmtree(photo.download.parent)
        path = photo.download = photos.save_result(result, photo, Path(tempfile.mkdtemp(dir=self.workdir.name)))
        white = photos.peak(photo.noisy)  # the result on the input's scale
        return ((photos.to_display(photo.noisy, white=white), photos.to_display(result, white=white)),
                (photos.zoom(photo.noisy, centre, factor, white=white),
                 photos.zoom(result, centre, factor, white=white)),
                text, gr.DownloadButton(f"Download {path.name}", value=str(path), visible=True))


def cleared() -> tuple:
    """No photo: the Denoise tab's state, preview, sigma, notes, views and download emptied."""
    return None, None, None, "", None, None, gr.DownloadButton(value=None, visible=False)


def describe(photo: photos.Photo, reading: NoiseReading, sigma: float) -> str:
    """One line about the loaded photo: size, channels, bit depth, the estimated white-noise
    level `sigma` (0..255 scale; `photos.estimate_noise`) and whether the noise looks
    correlated, as Auto reads it."""
    img = photo.noisy
    h, w = img.shape[:2]
    channels = CHANNELS[1 if img.ndim == 2 else img.shape[2]]
    bits = f"{img.dtype.itemsize * 8}-bit" if img.dtype.kind in "ui" else "float"
    text = (f"**{photo.name}{photo.suffix}**: {w}×{h} {channels}, {bits}. "
            f"Estimated noise level σ = {sigma:.2f}")
    if photo.clean is not None:
        text += f" (synthetic noise added; PSNR of the noisy photo {photos.psnr_db(photo.noisy, photo.clean):.2f} dB)"
    if reading.correlated:
        text += (f". The noise looks blotchy (correlated, std {reading.correlated_std:.1f} in luminance, as in "
                 "a phone's photo or a JPEG): Auto and Camera fit it, Grain would remove little of it")
    return text + "."


def click_centre(evt: gr.SelectData, preview) -> tuple[float, float]:
    """Where the input preview was clicked, as fractions of its width and height."""
    h, w = preview.shape[:2]
    return (evt.index[0] + 0.5) / w, (evt.index[1] + 0.5) / h


def build(device: str, max_megapixels: float, config: DenoiseConfig | None = None) -> None:
    """Lay out the Denoise tab and wire its events (inside a gr.Blocks)."""
    tab = DenoiseTab(device, max_megapixels, config or DenoiseConfig(),
                     tempfile.TemporaryDirectory(prefix="libcem-demo-"))
    photo, centre, note = gr.State(None), gr.State((0.5, 0.5)), gr.State("")
    with gr.Row():
        with gr.Column(scale=2):
            upload = gr.File(label="Photo: PNG, JPEG, WebP, HEIC, TIFF or BMP, 8 or 16 bits", elem_id="photo-file")
            gr.Examples([[str(p)] for p in EXAMPLES], inputs=upload, label="Clean examples: add noise below")
            noise = gr.Slider(0, 100, value=0, step=1, label="Add synthetic noise σ (0 = denoise the photo as it is)",
                              elem_id="add-noise")
            with gr.Row():
                auto = gr.Checkbox(True, label="Estimate the noise level", elem_id="auto-sigma", scale=1)
                sigma = gr.Number(label="Noise level σ (0..255 scale)", minimum=0, maximum=255, interactive=False,
                                  elem_id="sigma", scale=2)
            model = gr.Radio(NOISE_CHOICES, value="auto", label="Noise", elem_id="noise-model")
            speed = gr.Radio(SPEED_CHOICES, value="default", label="Settings", elem_id="speed")
            strength = gr.Slider(0, 1, value=1, step=0.05, label="Strength (1 = fully denoised, 0 = the input)",
                                 elem_id="strength")
            run = gr.Button("Denoise", variant="primary", elem_id="denoise-button")
            info = gr.Markdown(elem_id="denoise-info")
            download = gr.DownloadButton("Download the result", visible=False, elem_id="download")
            preview = gr.Image(label="Input: click it to choose where to zoom", interactive=False, format="png",
                               elem_id="preview")
        with gr.Column(scale=3):
            compare = gr.ImageSlider(label="Before | after: drag the slider", format="png", interactive=False,
                                     elem_id="compare", max_height=720)
            factor = gr.Radio(ZOOMS, value=4, label="Zoom", elem_id="zoom-factor")
            zoomed = gr.ImageSlider(label="Zoomed crop: before | after", format="png", interactive=False,
                                    elem_id="zoomed")
    loaded = [photo, preview, sigma, info, compare, zoomed, download]
    restyled = [compare, zoomed, info, download]
    restyle = (tab.restyle, [photo, strength, factor, centre, note], restyled)
    upload.change(tab.load, [upload, noise], loaded, concurrency_id="photo").success(*restyle)
    noise.change(tab.noisy, [photo, noise], loaded, trigger_mode="always_last",
                 concurrency_id="photo").success(*restyle)
    auto.change(lambda on: gr.Number(interactive=not on), auto, sigma)
    run.click(tab.denoise, [photo, auto, sigma, model, speed, strength, factor, centre],
              [photo, note, compare, zoomed, info, download], concurrency_id="photo")
    strength.change(*restyle, trigger_mode="always_last")
    factor.change(*restyle)
    preview.select(click_centre, [preview], centre).success(*restyle)
