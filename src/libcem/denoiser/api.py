"""`denoise(image, sigma=None)`: arrays or tensors in, the same type, dtype and range out."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from libcem.denoiser import clipping, poisson_gaussian
from libcem.denoiser.correlated import NoiseCorrelation
from libcem.denoiser.em import EMTrace
from libcem.denoiser.noise_choice import NoiseReading
from libcem.denoiser.passes import (
    NO_NOISE_SIGMA,
    DenoiseInfo,
    denoise_tensor,
    fit_tensor,
)
from libcem.denoiser.settings import DenoiseConfig
from libcem.denoiser.tiling import (
    central_tile,
    default_workers,
    device_tile,
    process_tiled,
)
from libcem.device import resolve_device
from libcem.errors import LibcemError

INTERNAL_PEAK = clipping.HIGH  # the denoiser works on the 0..255 scale whatever the input's dtype
NOISE_MODELS = ("gaussian", "poisson-gaussian", "auto", "correlated", "camera")


def _numpy_dtype(dtype) -> np.dtype:
    """numpy dtype of a numpy or torch dtype (torch's 16-bit floats count as float32)."""
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float16, torch.bfloat16):
            return np.dtype(np.float32)
        return torch.empty(0, dtype=dtype).numpy().dtype
    return np.dtype(dtype)


def _range(dtype: np.dtype) -> tuple[float, float]:
    """(lowest, full white) of an image dtype; float images are taken as [0, 1]."""
    if np.issubdtype(dtype, np.bool_) or not np.issubdtype(dtype, np.number) \
            or np.issubdtype(dtype, np.complexfloating):
        raise LibcemError(f"cannot denoise an image of dtype {dtype}")
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
    return 0.0, 1.0


def dtype_white(dtype) -> float:
    """Full white of an image dtype (numpy): its integer maximum, or 1 for floats."""
    return _range(np.dtype(dtype))[1]


def content_peak(colour, dtype: np.dtype) -> float:
    """Full white of an image: its dtype's (`dtype_white`), except for unsigned integers of more than 8 bits,
    whose data often fill fewer bits (12- or 14-bit camera, scanner and microscope data in a
    16-bit file): there the smallest 2^k - 1, k >= 8, that holds the image's largest value.
    The denoiser's levels (no noise below a tenth of a grey level, the clipping at white, the
    least correlated std `auto` acts on) are then those of the image's own range: 12-bit data
    with noise of std 20 read 0.08 on the 16-bit range's 0..255 scale and came back as it
    was."""
    peak = dtype_white(dtype)
    if not (np.issubdtype(dtype, np.unsignedinteger) and peak > 255):
        return peak
    top = float(colour.max()) if colour.shape[0] * colour.shape[1] else 0.0  # empty: refused later
    return float(min(peak, 2 ** max(8, math.ceil(math.log2(top + 1))) - 1))


def _split_channels(image):
    """(H, W) or (H, W, C) -> colour part (H, W, C'), C' in {1, 3}, and alpha (H, W, 1) or None.

    Works on numpy arrays and tensors alike; alpha keeps the input's type and dtype.
    """
    if image.ndim == 2:
        return image[:, :, None], None
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        # a torch-style (C, H, W) image: say how to pass it
        hint = (f"; a (C, H, W) image goes in as HxWxC: "
                f"{'image.permute(1, 2, 0)' if isinstance(image, torch.Tensor) else 'image.transpose(1, 2, 0)'}"
                if image.ndim == 3 and image.shape[0] in (1, 2, 3, 4) else "")
        raise LibcemError(f"expected an HxW or HxWxC image with C in 1..4, "
                          f"got shape {tuple(image.shape)}{hint}")
    c = image.shape[2]
    alpha = image[:, :, c - 1:] if c in (2, 4) else None
    return image[:, :, : (1 if c <= 2 else 3)], alpha


def gray_if_equal_channels(work: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(C, H, W) -> its first channel and True when it is a gray image stored as RGB (three
    equal channels), else itself and False. Its chroma is exactly zero, so every noise
    estimate read 0 there and nothing was removed; it is denoised as the gray image it is."""
    if work.shape[0] == 3 and bool((work[1:] == work[:1]).all()):
        return work[:1], True
    return work, False


def check_finite(work: torch.Tensor) -> None:
    """Reject NaN or infinite pixels (a float TIFF can hold them) before any linear algebra."""
    bad = int((~torch.isfinite(work)).sum())
    if bad:
        raise LibcemError(f"the image has {bad} NaN or infinite pixel value(s); "
                          f"replace them (e.g. numpy.nan_to_num) before denoising")


def check_sigma(sigma: float | None, work: torch.Tensor, scale: float) -> None:
    """Reject a sigma that is negative, NaN, or larger than the image's range.

    The limit is the full range of the dtype (255 on the 0..255 scale) or the image's own
    value range if that is wider (a float image on 0..255 rather than 0..1).
    """
    if sigma is None:
        return
    if not (np.isfinite(sigma) and sigma >= 0):
        raise LibcemError(f"sigma must be a finite number >= 0, got {sigma}")
    span = max(INTERNAL_PEAK, float(work.max() - work.min()) if work.numel() else 0.0)
    if sigma * scale > span:
        raise LibcemError(f"sigma {sigma:g} is larger than the image's value range "
                          f"({span / scale:g} in the image's units): no signal left to recover")


def check_noise(noise: str, sigma: float | None, noise_params, strength: float) -> None:
    """One-line errors for a bad noise model, a sigma given with it, or a bad strength."""
    if noise not in NOISE_MODELS:
        raise LibcemError(f"noise must be one of {', '.join(NOISE_MODELS)}, got {noise!r}")
    if noise not in ("gaussian", "correlated") and sigma is not None:
        raise LibcemError(f"sigma describes Gaussian noise; for noise={noise!r} give "
                          "noise_params=(a, b) (variance a x + b) or nothing (estimated)")
    if noise_params is not None and noise == "correlated":
        raise LibcemError("noise_params are (a, b) of Poisson-Gaussian noise; correlated noise "
                          "takes sigma (its std) or nothing (fitted)")
    if noise_params is not None and (len(noise_params) != 2 or not all(
            np.isfinite(v) and v >= 0 for v in noise_params)):
        raise LibcemError(f"noise_params must be two finite numbers (a, b) >= 0, "
                          f"got {noise_params}")
    if not (np.isfinite(strength) and 0 <= strength <= 1):
        raise LibcemError(f"strength must be in [0, 1], got {strength}")


def denoise_signal_dependent(img: torch.Tensor, auto: bool, params: tuple[float, float] | None,
                             cfg: DenoiseConfig, progress: Callable[[int, int], None] | None = None,
                             ) -> tuple[torch.Tensor, DenoiseInfo]:
    """Poisson-Gaussian noise: stabilise the variance (unit Gaussian), denoise, invert.

    img (C, H, W) on the 0..255 scale; params (a, b) on that scale, or None to fit them.
    On an image clipped at black and white (an 8-bit file) the noise was clipped there too:
    (a, b) are fitted (`poisson_gaussian.fit_levels`, on the level bins whose noise reads as
    Gaussian) with the clipping's share of each level's variance, and the clipping's bias is
    taken out of the output (`clipping.unclip` with the std sqrt(a x + b) of each level; with
    (a, b) fitted, from a noise std of clipping.ESTIMATED_FROM at the image's mean level).
    Under `auto`, an image whose noise so fitted does not depend on the signal goes the
    Gaussian way (since session 24 the clipping-aware fit decides: clipped white noise,
    smaller near black and white, no longer reads as growing with brightness).
    """
    fitted, clipped = params is None, clipping.is_clipped(img)
    if fitted:
        points = poisson_gaussian.level_variances(img, generator=torch.Generator().manual_seed(cfg.seed))
        params = poisson_gaussian.fit_levels(*points, clipped=clipped)
    a, b = params
    if auto and not poisson_gaussian.signal_dependent(img, a, b):
        out, info = denoise_white(img, None, cfg, progress)  # the std before clipping, estimated
        info.noise_model = "gaussian"
        return out, info
    if a <= 0 and b <= 0:
        return img.clone(), DenoiseInfo(0.0, None, EMTrace(), (), noise_params=(0.0, 0.0),
                                        noise_model="poisson-gaussian")
    level = float(poisson_gaussian.noise_std_map(img.mean(), a, b))  # noise std at the mean
    est, info = denoise_float(poisson_gaussian.anscombe(img, a, b) * level, level, cfg, progress)
    out = poisson_gaussian.inverse_anscombe(est / level, a, b)
    if clipped and (level >= clipping.ESTIMATED_FROM or not fitted):  # the clipping's bias out
        out = clipping.unclip(out, partial(poisson_gaussian.noise_std_map, a=a, b=b))
        info.clipping_modelled = True
    info.sigma = level
    info.noise_params = (a, b)
    info.noise_map = poisson_gaussian.noise_std_map(out, a, b)
    info.noise_model = "poisson-gaussian"
    return out, info


def denoise_auto(img: torch.Tensor, params: tuple[float, float] | None, cfg: DenoiseConfig,
                 progress: Callable[[int, int], None] | None = None,
                 ) -> tuple[torch.Tensor, DenoiseInfo]:
    """`auto`: the camera model when the image's noise reads as spatially correlated (a
    demosaiced photo, a JPEG: `noise_choice`), else Poisson-Gaussian or white Gaussian noise
    (`denoise_signal_dependent`); given (a, b) describe Poisson-Gaussian noise. The model
    used is `info.noise_model`."""
    if params is None and read_noise(img, cfg).correlated:
        return denoise_camera(img, None, cfg, progress)
    return denoise_signal_dependent(img, True, params, cfg, progress)


def estimate_noise(img: torch.Tensor, cfg: DenoiseConfig) -> float:
    """The noise std that `denoise_float` assumes for (C, H, W) float32 on the 0..255 scale when none is
    given: weak-texture PCA on the opponent-colour image (its central tile when it is tiled)."""
    from libcem.denoiser.noise import estimate_sigma
    from libcem.denoiser.patches import to_opponent

    return estimate_sigma(to_opponent(central_tile(img, cfg.tile)),
                          generator=torch.Generator().manual_seed(cfg.seed))


def denoise_white(img: torch.Tensor, sigma: float | None, cfg: DenoiseConfig,
                  progress: Callable[[int, int], None] | None = None,
                  ) -> tuple[torch.Tensor, DenoiseInfo]:
    """White Gaussian noise of std `sigma` (None: estimated) on (C, H, W) float32 on the
    0..255 scale. When the image lies within the range and touches an end of it, that noise
    was clipped there (`clipping`): the passes assume the clipped noise's std
    (`info.clipped_sigma`) and the clipping's bias is taken out of their output. An estimated
    sigma is then the std before clipping (`estimate_before_clipping`)."""
    if sigma is None:
        sigma = estimate_before_clipping(img, cfg)  # None: the passes estimate it
    if sigma is None or sigma < NO_NOISE_SIGMA or not clipping.is_clipped(img):
        return denoise_float(img, sigma, cfg, progress)
    effective = clipping.effective_std(img, sigma)
    out, info = denoise_float(img, effective, cfg, progress)
    info.sigma, info.clipped_sigma, info.clipping_modelled = sigma, effective, True
    return clipping.unclip(out, sigma), info


def estimate_before_clipping(img: torch.Tensor, cfg: DenoiseConfig) -> float | None:
    """On (C, H, W) float32 on the 0..255 scale that lies within the range and touches an end
    of it, the std of its white noise before clipping (`clipping.estimate_std`, on the same
    patches as `estimate_noise`: its central tile when it is tiled); None when the image is
    not clipped or that std is below clipping.ESTIMATED_FROM (there clipping hardly changes
    the noise, and the texture of a clean image can pass for noise)."""
    if not clipping.is_clipped(img):
        return None
    check_size(img, cfg)
    before = clipping.estimate_std(central_tile(img, cfg.tile),
                                   generator=torch.Generator().manual_seed(cfg.seed))[1]
    return before if before >= clipping.ESTIMATED_FROM else None


def estimate_white(img: torch.Tensor, cfg: DenoiseConfig) -> float:
    """The std that `denoise_white` assumes for (C, H, W) float32 on the 0..255 scale when
    none is given: the std before clipping (`estimate_before_clipping`), else `estimate_noise`."""
    before = estimate_before_clipping(img, cfg)
    return estimate_noise(img, cfg) if before is None else before


def check_size(img: torch.Tensor, cfg: DenoiseConfig) -> tuple[int, int, int]:
    """The shape (C, H, W) of an image at least one patch large, else a one-line error."""
    _, h, w = img.shape
    if h < cfg.patch or w < cfg.patch:
        raise LibcemError(f"image {h}x{w} is smaller than the {cfg.patch}x{cfg.patch} patch")
    return tuple(img.shape)


def fit_correlation(img: torch.Tensor, cfg: DenoiseConfig) -> NoiseCorrelation:
    """The noise autocovariance of (C, H, W) float32 on the 0..255 scale, fitted on its
    luminance/chroma channels (its central tile when it is tiled), one per channel unless
    cfg.noise_per_channel is off, leaving out patches with a pixel at either end of the range."""
    from libcem.denoiser.correlated import estimate_correlation
    from libcem.denoiser.patches import to_opponent

    tile = central_tile(img, cfg.tile)
    clipped = ((tile <= tile.min()) | (tile >= tile.max())).any(0)  # at either end of the range
    return estimate_correlation(to_opponent(tile), generator=torch.Generator().manual_seed(cfg.seed),
                                per_channel=cfg.noise_per_channel, clipped=clipped)


def read_noise(img: torch.Tensor, cfg: DenoiseConfig) -> NoiseReading:
    """What `auto` compares (`noise_choice`): the white-noise estimate and the luminance std of
    the fitted correlated model, of (C, H, W) float32 on the 0..255 scale (its central tile
    when tiled)."""
    return NoiseReading(estimate_noise(img, cfg), fit_correlation(img, cfg).channel_stds()[0])


def denoise_correlated(img: torch.Tensor, sigma: float | None, cfg: DenoiseConfig,
                       progress: Callable[[int, int], None] | None = None,
                       ) -> tuple[torch.Tensor, DenoiseInfo]:
    """Stationary spatially correlated Gaussian noise (`correlated`): its autocovariance fitted
    on the image (its central tile when tiled), rescaled to std `sigma` when given, then the
    passes with that noise model."""
    from libcem.denoiser.correlated import white

    check_size(img, cfg)
    corr = fit_correlation(img, cfg)
    if corr.variance <= 0:  # nothing to fit on (a flat or tiny image): white noise
        corr = white(estimate_noise(img, cfg) if sigma is None else sigma)
    elif sigma is not None:
        corr = corr.scaled(sigma**2 / corr.variance)
    if corr.variance <= 0:
        return img.clone(), DenoiseInfo(0.0, None, EMTrace(), ())
    # no graph diffusion under correlated noise: a group's nearby members share noise, and the
    # attention graph links most strongly the members whose noise looks alike, so smoothing
    # along it kept noise (tau = 0 was +0.08 / +0.11 dB on Train400 at std 25 / 15, better on
    # 8-9 of 10 images, and +0.00-0.11 dB on three skimage colour crops; docs/denoise-noise.md).
    # The first covariance pass still diffuses along its groups, on the pilot's graph
    # (`cov_graph_tau`; session 32)
    out, info = denoise_float(img, None, cfg.override(graph_diffusion=False), progress, noise=corr)
    info.noise_correlation, info.noise_model = corr, "correlated"
    return out, info


def denoise_camera(img: torch.Tensor, params: tuple[float, float] | None, cfg: DenoiseConfig,
                   progress: Callable[[int, int], None] | None = None,
                   ) -> tuple[torch.Tensor, DenoiseInfo]:
    """Noise as a demosaiced photo has it (`camera`): variance a x + b and correlated between
    neighbouring pixels. (a, b) fitted (`poisson_gaussian.estimate_correlated`, on patches
    drawn from the whole image, so that its every brightness counts, not only the central
    tile's) unless `params` gives them; the variance is stabilised
    (`_correlated_signal_dependent`) and the autocovariance fitted on the result. With a = 0
    this is the stationary `correlated` model."""
    check_size(img, cfg)
    given = params is not None
    if params is None:
        params = poisson_gaussian.estimate_correlated(
            img, generator=torch.Generator().manual_seed(cfg.seed))
    if params[0] <= 0:  # no signal dependence: the stationary model (given b: its variance)
        out, info = denoise_correlated(img, params[1]**0.5 if given else None, cfg, progress)
        info.noise_params = (0.0, info.sigma**2)
        return out, info
    return _correlated_signal_dependent(img, params, cfg, progress, rescale=not given)


def _correlated_signal_dependent(img: torch.Tensor, params: tuple[float, float],
                                 cfg: DenoiseConfig, progress, rescale: bool,
                                 ) -> tuple[torch.Tensor, DenoiseInfo]:
    """Correlated noise of variance a x + b: the generalised Anscombe transform makes it
    stationary (scaled to the noise std at the image's mean level), `denoise_correlated`
    denoises it, the inverse transform maps back. With `rescale` (fitted (a, b)) the stationary
    fit's variance corrects the overall scale of (a, b): it is 1 (in transform units) when
    they are right, and the transform's shape depends on b / a only."""
    a, b = params
    level = float(poisson_gaussian.noise_std_map(img.mean(), a, b))
    z = poisson_gaussian.anscombe(img, a, b) * level
    est, info = denoise_correlated(z, None if rescale else level, cfg, progress)
    if info.noise_correlation is None:  # nothing to fit: the transformed image is flat
        return img.clone(), info
    factor = info.noise_correlation.variance / level**2  # 1 when (a, b) are right
    a, b = a * factor, b * factor
    out = poisson_gaussian.inverse_anscombe(est / (level * factor**0.5), a, b)
    info.noise_correlation = info.noise_correlation.scaled(1 / factor)  # at the mean level
    info.sigma = float(poisson_gaussian.noise_std_map(img.mean(), a, b))
    info.noise_params = (a, b)
    info.noise_map = poisson_gaussian.noise_std_map(out, a, b)
    info.noise_model = "camera"
    return out, info


def denoise_float(img: torch.Tensor, sigma: float | None, cfg: DenoiseConfig,
                  progress: Callable[[int, int], None] | None = None,
                  noise: NoiseCorrelation | None = None) -> tuple[torch.Tensor, DenoiseInfo]:
    """Denoise (C, H, W) float32 on the 0..255 scale, in tiles when larger than cfg.tile (on a
    GPU: than `device_tile`, the whole image when its free memory holds it). noise: the
    autocovariance of correlated noise (None: white).

    For tiled images the noise level and the EM parameters are fitted once, on the central
    tile, and shared by every tile, so all tiles use one model of the image.
    """
    _, h, w = check_size(img, cfg)
    cfg = cfg.override(tile=device_tile(img.device, cfg))  # on a GPU, from its free memory
    if max(h, w) <= cfg.tile:
        return denoise_tensor(img, sigma, cfg, noise=noise)
    info = fit_tensor(central_tile(img, cfg.tile), sigma, cfg, noise)  # one model for all tiles
    if info.params is None:
        return img.clone(), info
    workers = cfg.workers or default_workers(cfg.tile)
    if workers > 1:  # each worker process uses one core: no chunk threads inside it
        cfg = cfg.override(threads=1)
    out = process_tiled(img, partial(denoise_tile, cfg=cfg, params=info.params, noise=noise),
                        cfg.tile, cfg.overlap, progress, workers)
    return out, info


def denoise_tile(tile: torch.Tensor, cfg: DenoiseConfig, params,
                 noise: NoiseCorrelation | None = None) -> torch.Tensor:
    """One tile (C, h, w) with the model fitted on the central tile (run in tile workers)."""
    return denoise_tensor(tile, None, cfg, params=params, noise=noise)[0]


def denoise(image, sigma: float | None = None, *, config: DenoiseConfig | None = None,
            device: str | torch.device | None = None, return_info: bool = False,
            noise: str = "gaussian", noise_params: tuple[float, float] | None = None,
            strength: float = 1.0, progress: Callable[[int, int], None] | None = None):
    """Denoise an image with the patch-graph EM denoiser; no training needed.

    image: numpy array or torch tensor, (H, W) or (H, W, C) with C = 1 (gray), 2 (gray + alpha),
        3 (RGB) or 4 (RGBA); integer images span their dtype's range (unsigned ones of more
        than 8 bits the range their data fill, e.g. 0..4095 for 12-bit data: `content_peak`),
        float images [0, 1].
        Alpha is passed through untouched.
    sigma: noise std in the image's units (25 for uint8, 25/255 for float in [0, 1]);
        None estimates it. On an image that lies within its range and touches an end of it
        (an 8-bit image carrying noise), the std before the noise was clipped there, given
        or estimated (`estimate_before_clipping`): the passes then assume the clipped
        noise's smaller std and the clipping's bias is taken out (`clipping`,
        `info.clipped_sigma`).
    noise: "gaussian" (white, one sigma), "poisson-gaussian" (variance a x + b, as in camera
        and phone photos; (a, b) estimated unless noise_params gives them in the image's units)
        "auto" (camera when the noise is spatially correlated: the std of its fitted
        correlated model is over 3x the white-noise estimate, `noise_choice`; else
        poisson-gaussian when the fitted variance grows by half from the darkest to the
        brightest tenth of the image, else gaussian; `info.noise_model` says which), or
        "correlated" (Gaussian noise
        smoothed over neighbouring pixels, as demosaicing leaves it: its autocovariance is
        fitted from the image; sigma, when given, is its std), or "camera" (both: variance
        a x + b and correlated, as in a demosaiced photo; (a, b) fitted unless noise_params
        gives them).
    strength: 1 removes the noise; lower values keep part of it (grain): the result is
        noisy + strength * (denoised - noisy).
    progress: called as progress(tiles done, tiles) while a large image's tiles are denoised.
    Returns the denoised image of the same type, shape and dtype (integers rounded and clipped);
    with return_info=True, also a DenoiseInfo whose sigma (and noise_params, noise_map) are in
    the image's units.
    """
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise LibcemError(f"expected a numpy array or torch tensor, got {type(image).__name__}")
    dtype = _numpy_dtype(image.dtype)
    lo, peak = _range(dtype)
    colour, alpha = _split_channels(image)
    peak = content_peak(colour, dtype)
    dev = resolve_device(device)
    if isinstance(colour, np.ndarray):
        colour = torch.from_numpy(np.ascontiguousarray(colour, dtype=np.float32))
    scale = INTERNAL_PEAK / peak
    work = colour.detach().to(dev, torch.float32).permute(2, 0, 1) * scale  # (C', H, W)
    check_finite(work)
    check_sigma(sigma, work, scale)
    check_noise(noise, sigma, noise_params, strength)
    work, gray_as_rgb = gray_if_equal_channels(work)
    cfg = config or DenoiseConfig()
    check_size(work, cfg)  # every noise model's fits read patches
    if noise == "gaussian":
        out, info = denoise_white(work, None if sigma is None else sigma * scale, cfg, progress)
    elif noise == "correlated":
        out, info = denoise_correlated(work, None if sigma is None else sigma * scale, cfg, progress)
    else:
        params = None if noise_params is None else (noise_params[0] * scale,
                                                    noise_params[1] * scale**2)
        if noise == "camera":
            out, info = denoise_camera(work, params, cfg, progress)
        elif noise == "auto":
            out, info = denoise_auto(work, params, cfg, progress)
        else:
            out, info = denoise_signal_dependent(work, False, params, cfg, progress)
    if info.noise_model is None:
        info.noise_model = noise
    out = work + strength * (out - work)
    if gray_as_rgb:
        out = out.expand(3, -1, -1)
    info.to_image_units(scale)
    info.white = peak
    out = out.permute(1, 2, 0) / scale  # (H, W, C')
    if np.issubdtype(dtype, np.integer):
        out = out.round().clamp(lo, peak)
    return (_restore(out, alpha, image), info) if return_info else _restore(out, alpha, image)


def _restore(out: torch.Tensor, alpha, image):
    """(H, W, C') float result -> the input's type, dtype, device and layout, alpha re-attached."""
    if isinstance(image, np.ndarray):
        res = out.cpu().numpy().astype(image.dtype)
        if alpha is not None:
            res = np.concatenate([res, alpha], axis=2)
    else:
        res = out.to(device=image.device, dtype=image.dtype)
        if alpha is not None:
            res = torch.cat([res, alpha], dim=2)
    return res[:, :, 0] if image.ndim == 2 else res
