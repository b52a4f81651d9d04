"""The Denoise tab's image logic, without Gradio: a photo as read from its file, synthetic noise,
the denoiser with a progress callback, strength, PSNR, zoom crops and the result in the input's format.

Noise levels here are on the 0..255 scale whatever the bit depth, as in `libcem denoise --sigma`.
Arrays are (H, W) or (H, W, C), C in 1..4, in their file's dtype; alpha is never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from libcem.denoiser import DenoiseConfig
from libcem.denoiser.api import (
    content_peak,
    denoise_auto,
    denoise_camera,
    denoise_correlated,
    denoise_white,
    dtype_white,
    estimate_white,
    gray_if_equal_channels,
)
from libcem.denoiser.api import read_noise as denoiser_read_noise
from libcem.denoiser.io import exif_orientation, read_image, upright, write_image
from libcem.denoiser.noise_choice import NoiseReading
from libcem.errors import LibcemError
from libcem.imaging import psnr

SCALE = 255.0  # noise levels are shown and set on the 0..255 scale
MAX_MEGAPIXELS = 16.0  # the largest photo the page accepts (a colour megapixel: about 1.5 min on one CPU core)
VIEW_SIDE = 1600  # the before/after view is shrunk to this longest side; the zoom shows pixels


@dataclass
class Photo:
    """An uploaded photo, what is denoised, and the denoised result once there is one."""

    name: str  # the file name without its suffix
    suffix: str  # ".png", ".jpg", ".tif" ...: the result is written in the same format
    original: np.ndarray  # as read from the file
    noisy: np.ndarray  # what the denoiser gets: the original, or the original plus synthetic noise
    clean: np.ndarray | None = None  # the original when noise was added, to measure PSNR against
    denoised: np.ndarray | None = None  # the denoiser's output for `noisy` (strength 1)
    download: Path | None = None  # the result file last written for it (`save_result`)


def peak(img: np.ndarray) -> float:
    """Full white of an image's colour as `denoise` takes it: its dtype's, or for unsigned
    integers of more than 8 bits the range its data fill (`api.content_peak`: 4095 for 12-bit
    data in a 16-bit file, which showed nearly black on the page until session 26)."""
    return content_peak(split_alpha(img)[0], img.dtype)


def split_alpha(img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W[, C]) -> colour (H, W) or (H, W, 3), and alpha (H, W, 1) or None."""
    if img.ndim == 2 or img.shape[2] == 3:
        return img, None
    if img.shape[2] == 1:
        return img[:, :, 0], None
    return (img[:, :, 0], img[:, :, 1:]) if img.shape[2] == 2 else (img[:, :, :3], img[:, :, 3:])


def join_alpha(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Inverse of `split_alpha`."""
    if alpha is None:
        return colour
    return np.concatenate([colour[:, :, None] if colour.ndim == 2 else colour, alpha], axis=2)


def load_photo(path: str | Path | None, max_megapixels: float = MAX_MEGAPIXELS) -> Photo:
    """Read an uploaded file; a missing, empty, non-image, too small or too large one raises LibcemError."""
    if path is None:
        raise LibcemError("no file: upload a photo (PNG, JPEG, WebP, HEIC, TIFF or BMP) or pick an example")
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise LibcemError(f"{path.name} is empty: upload a photo (PNG, JPEG, WebP, HEIC, TIFF or BMP)")
    try:
        img = read_image(path)
    except LibcemError as err:  # the same message with the file's name, not the server's upload folder
        raise LibcemError(str(err).replace(str(path), path.name)) from None
    img = upright(img, exif_orientation(path))  # a phone's photo as its viewer shows it
    h, w = img.shape[:2]
    if h * w > max_megapixels * 1e6:
        raise LibcemError(f"{path.name} is {w}x{h} ({h * w / 1e6:.1f} megapixels); this page takes up to "
                          f"{max_megapixels:g}: crop it, or use `libcem denoise` on the command line")
    patch = DenoiseConfig().patch
    if min(h, w) < patch:
        raise LibcemError(f"{path.name} is {w}x{h}; the denoiser needs at least {patch}x{patch} pixels")
    return Photo(name=path.stem, suffix=path.suffix.lower(), original=img, noisy=img)


def add_noise(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """img plus white Gaussian noise of std `sigma` (0..255 scale), clipped to the dtype's range."""
    colour, alpha = split_alpha(img)
    top = peak(img)
    rng = np.random.default_rng(seed)
    noisy = colour.astype(np.float64) + rng.normal(0.0, sigma * top / SCALE, colour.shape)
    noisy = np.clip(noisy, 0.0, top)
    if img.dtype.kind in "ui":
        noisy = np.round(noisy)
    return join_alpha(noisy.astype(img.dtype), alpha)


def to_work(img: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """The colour channels as the denoiser's (C, H, W) float32 on the 0..255 scale."""
    colour, _ = split_alpha(img)
    x = torch.from_numpy(np.ascontiguousarray(colour, dtype=np.float32)).to(device)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    return gray_if_equal_channels(x)[0] * (SCALE / peak(img))  # gray stored as RGB: gray


def from_work(x: torch.Tensor, like: np.ndarray) -> np.ndarray:
    """Inverse of `to_work`: back to `like`'s dtype and layout, with its alpha."""
    colour, alpha = split_alpha(like)
    if colour.ndim == 3 and x.shape[0] < colour.shape[2]:  # a gray image stored as RGB
        x = x.expand(colour.shape[2], -1, -1)
    top = peak(like)
    out = (x.permute(1, 2, 0) * (top / SCALE)).cpu().numpy()
    out = out[:, :, 0] if colour.ndim == 2 else out
    if like.dtype.kind in "ui":
        out = np.clip(np.round(out), 0, top)
    return join_alpha(out.astype(like.dtype), alpha)


def estimate_noise(img: np.ndarray, cfg: DenoiseConfig | None = None) -> float:
    """The noise std (0..255 scale) the denoiser would estimate for white noise: weak-texture
    PCA on the central tile; on a photo clipped at black and white (as `add_noise` leaves
    it) the std before clipping (`api.estimate_white`), which is what a noise level set by
    hand means too."""
    return estimate_white(to_work(img), cfg or DenoiseConfig())


def read_noise(img: np.ndarray, cfg: DenoiseConfig | None = None) -> NoiseReading:
    """What `auto` reads from the photo (0..255 scale): the white-noise estimate as measured
    (the clipped noise's, `api.estimate_noise`) and the std of the fitted correlated model,
    and whether it is correlated."""
    return denoiser_read_noise(to_work(img), cfg or DenoiseConfig())


def denoise_photo(img: np.ndarray, sigma: float | None, cfg: DenoiseConfig | None = None,
                  device: str | torch.device = "cpu",
                  progress: Callable[[int, int], None] | None = None,
                  noise: str = "gaussian") -> tuple[np.ndarray, float, str]:
    """Denoise with noise std `sigma` (0..255 scale; None: estimate). Returns the result, the
    sigma used and the noise model used.

    noise: "gaussian" (white), "correlated" (its correlation between neighbouring pixels fitted
    too, as `libcem denoise --noise correlated`), "camera" (also growing with brightness, as
    `--noise camera`; its level is always fitted, and the sigma returned is the noise std at the
    photo's mean level) or "auto" (read from the photo, as `--noise auto`: camera noise when it
    is correlated, else Poisson-Gaussian or white; with a sigma given, white: on a photo that
    touches black or white that noise was clipped there, as `add_noise` leaves it, and
    `api.denoise_white` allows for it). Photos larger than cfg.tile are denoised tile by tile;
    `progress(done, total)` follows the tiles.
    """
    if sigma is not None and not (np.isfinite(sigma) and 0 <= sigma <= SCALE):
        raise LibcemError(f"the noise level is on the 0..255 scale; got {sigma}")
    if noise not in ("gaussian", "correlated", "camera", "auto"):
        raise LibcemError(f"noise must be gaussian, correlated, camera or auto, got {noise!r}")
    if noise == "camera" and sigma is not None:
        raise LibcemError("camera noise grows with brightness, so its level is fitted from the "
                          "photo: tick 'Estimate the noise level'")
    if noise == "auto" and sigma is not None:  # a level set by hand describes white noise
        noise = "gaussian"
    cfg = cfg or DenoiseConfig()
    if noise == "camera":
        out, info = denoise_camera(to_work(img, device), None, cfg, progress)
    elif noise == "auto":
        out, info = denoise_auto(to_work(img, device), None, cfg, progress)
    else:
        run = denoise_correlated if noise == "correlated" else denoise_white
        out, info = run(to_work(img, device), sigma, cfg, progress)
    return from_work(out, img), float(info.sigma), info.noise_model or noise


def blend(noisy: np.ndarray, denoised: np.ndarray, strength: float) -> np.ndarray:
    """noisy + strength * (denoised - noisy): 0 gives the input back, 1 the denoiser's output."""
    if strength >= 1:
        return denoised
    mixed = noisy.astype(np.float64) + strength * (denoised.astype(np.float64) - noisy)
    return (np.round(mixed) if noisy.dtype.kind in "ui" else mixed).astype(noisy.dtype)


def psnr_db(img: np.ndarray, ref: np.ndarray) -> float:
    """PSNR in dB of img against ref on ref's range (`peak`; colour channels only)."""
    a, b = (torch.from_numpy(np.asarray(split_alpha(x)[0], dtype=np.float64)) for x in (img, ref))
    return float(psnr(a.reshape(1, -1), b.reshape(1, -1), peak=peak(ref)))


def to_display(img: np.ndarray, side: int | None = VIEW_SIDE, white: float | None = None) -> np.ndarray:
    """8-bit RGB(A) or gray for the browser, shrunk to `side` pixels at most (None: full size);
    the colour scaled from `white` (default `peak(img)`: pass the noisy photo's, so that its
    result shows on the same scale), alpha from the dtype's full range."""
    from PIL import Image

    colour, alpha = split_alpha(img)
    colour8 = _eight_bit(colour, peak(img) if white is None else white)
    u8 = join_alpha(colour8, None if alpha is None else _eight_bit(alpha, dtype_white(img.dtype)))
    if u8.ndim == 3 and u8.shape[2] == 2:  # gray + alpha: browsers want RGBA
        u8 = np.concatenate([np.repeat(u8[:, :, :1], 3, axis=2), u8[:, :, 1:]], axis=2)
    pil = Image.fromarray(u8[:, :, 0] if u8.ndim == 3 and u8.shape[2] == 1 else u8)
    if side and max(pil.size) > side:
        pil.thumbnail((side, side), Image.LANCZOS)
    return np.asarray(pil)


def _eight_bit(x: np.ndarray, white: float) -> np.ndarray:
    return np.clip(np.round(x.astype(np.float64) * (255.0 / white)), 0, 255).astype(np.uint8)


def zoom(img: np.ndarray, centre: tuple[float, float], factor: int, box: int = 384,
         white: float | None = None) -> np.ndarray:
    """A crop of `box / factor` pixels around centre (x, y as fractions of the width and height),
    enlarged `factor` times with nearest neighbour so single pixels show. 8-bit, for the browser,
    on the scale of `white` (default: the whole image's `peak`)."""
    h, w = img.shape[:2]
    side = max(8, box // factor)
    ch, cw = min(side, h), min(side, w)
    y = int(np.clip(round(centre[1] * h - ch / 2), 0, h - ch))
    x = int(np.clip(round(centre[0] * w - cw / 2), 0, w - cw))
    crop = to_display(img[y:y + ch, x:x + cw], side=None, white=peak(img) if white is None else white)
    return np.repeat(np.repeat(crop, factor, axis=0), factor, axis=1)


def save_result(img: np.ndarray, photo: Photo, folder: Path) -> Path:
    """Write the result into `folder` as NAME-denoised.SUFFIX, in the input's format and bit depth."""
    path = Path(folder) / f"{photo.name}-denoised{photo.suffix}"
    write_image(path, img)
    return path
