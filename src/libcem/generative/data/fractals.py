"""Procedural colored IFS fractals rendered by the chaos game (Barnsley, "Fractals Everywhere", 1988).

Each image: one family's iterated function system, a random rotation, scale, offset and flip,
a random foreground color on a different random background color, and a caption such as
"a green fern fractal on a black background". Rendering is vectorised over many parallel
chaos-game chains and many images at once, and deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

# Each family: a list of affine maps (a, b, c, d, e, f, p): (x, y) -> (a x + b y + e, c x + d y + f),
# chosen with probability p.
FAMILIES: dict[str, list[tuple[float, ...]]] = {
    "fern": [
        (0.0, 0.0, 0.0, 0.16, 0.0, 0.0, 0.01),
        (0.85, 0.04, -0.04, 0.85, 0.0, 1.6, 0.85),
        (0.2, -0.26, 0.23, 0.22, 0.0, 1.6, 0.07),
        (-0.15, 0.28, 0.26, 0.24, 0.0, 0.44, 0.07),
    ],
    "sierpinski triangle": [
        (0.5, 0.0, 0.0, 0.5, 0.0, 0.0, 1 / 3),
        (0.5, 0.0, 0.0, 0.5, 0.5, 0.0, 1 / 3),
        (0.5, 0.0, 0.0, 0.5, 0.25, 0.433, 1 / 3),
    ],
    "sierpinski carpet": [
        (1 / 3, 0.0, 0.0, 1 / 3, i / 3, j / 3, 1 / 8)
        for i in range(3)
        for j in range(3)
        if (i, j) != (1, 1)
    ],
    "dragon": [
        (0.5, -0.5, 0.5, 0.5, 0.0, 0.0, 0.5),
        (-0.5, -0.5, 0.5, -0.5, 1.0, 0.0, 0.5),
    ],
    "spiral": [
        (0.787879, -0.424242, 0.242424, 0.859848, 1.758647, 1.408065, 0.9),
        (-0.121212, 0.257576, 0.151515, 0.05303, -6.721654, 1.377236, 0.05),
        (0.181818, -0.136364, 0.090909, 0.181818, 6.086107, 1.568035, 0.05),
    ],
    "tree": [
        (0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.05),
        (0.42, -0.42, 0.42, 0.42, 0.0, 0.2, 0.4),
        (0.42, 0.42, -0.42, 0.42, 0.0, 0.2, 0.4),
        (0.1, 0.0, 0.0, 0.1, 0.0, 0.2, 0.15),
    ],
    "maple leaf": [
        (0.14, 0.01, 0.0, 0.51, -0.08, -1.31, 0.1),
        (0.43, 0.52, -0.45, 0.5, 1.49, -0.75, 0.35),
        (0.45, -0.49, 0.47, 0.47, -1.62, -0.74, 0.35),
        (0.49, 0.0, 0.0, 0.51, 0.02, 1.62, 0.2),
    ],
}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "orange": (250, 140, 20),
    "purple": (150, 50, 200),
    "cyan": (40, 210, 220),
    "pink": (250, 120, 190),
    "white": (245, 245, 245),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (110, 110, 110),
    "navy": (15, 20, 80),
}

_CHAINS, _BURN_IN, _RECORD = 384, 12, 16  # points per image = _CHAINS * _RECORD


def caption(family: str, color: str, background: str) -> str:
    article = "an" if color[0] in "aeiou" else "a"
    return f"{article} {color} {family} fractal on a {background} background"


def _maps(family: str) -> tuple[np.ndarray, np.ndarray]:
    """(maps, 6) affine coefficients a, b, c, d, e, f and their probabilities."""
    table = np.array(FAMILIES[family], dtype=np.float64)
    return table[:, :6].astype(np.float32), table[:, 6] / table[:, 6].sum()


def _attractor_points(family: str, n_images: int, rng: np.random.Generator) -> np.ndarray:
    """Chaos game for `n_images` independent images at once -> (n_images, points, 2)."""
    coef, probs = _maps(family)
    cum = np.cumsum(probs)
    x, y = rng.uniform(-1.0, 1.0, size=(2, n_images, _CHAINS)).astype(np.float32)
    out = np.empty((n_images, _RECORD, _CHAINS, 2), dtype=np.float32)
    for it in range(_BURN_IN + _RECORD):
        k = np.minimum(np.searchsorted(cum, rng.random((n_images, _CHAINS))), len(probs) - 1)
        a, b, c, d, e, f = np.moveaxis(coef[k], -1, 0)
        x, y = a * x + b * y + e, c * x + d * y + f
        if it >= _BURN_IN:
            out[:, it - _BURN_IN, :, 0], out[:, it - _BURN_IN, :, 1] = x, y
    return out.reshape(n_images, -1, 2)


def _normalise(points: np.ndarray) -> np.ndarray:
    """Centre each image's attractor on its bounding box and scale it into [-1, 1]."""
    sample = points[:, ::4]
    lo = np.quantile(sample, 0.005, axis=1, keepdims=True)
    hi = np.quantile(sample, 0.995, axis=1, keepdims=True)
    centre = (lo + hi) / 2
    half = (hi - lo).max(axis=2, keepdims=True) / 2 + 1e-9
    return (points - centre) / half


def _pose(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random rotation (any angle), scale (0.65..0.95 of the frame), mirror and offset per image."""
    n = points.shape[0]
    theta = rng.uniform(0, 2 * np.pi, n)
    scale = rng.uniform(0.65, 0.95, n)
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    cos, sin = (np.cos(theta) * scale)[:, None], (np.sin(theta) * scale)[:, None]
    x, y = points[..., 0] * mirror[:, None], points[..., 1]
    offset = rng.uniform(-0.08, 0.08, (n, 2)).astype(np.float32)
    return np.stack([cos * x - sin * y + offset[:, :1], sin * x + cos * y + offset[:, 1:]], -1)


def _rasterise(points: np.ndarray, size: int, supersample: int = 2) -> np.ndarray:
    """Point clouds in [-1, 1]^2 -> coverage maps in [0, 1], (n, size, size), anti-aliased."""
    n = points.shape[0]
    big = size * supersample
    ij = np.floor((points + 1) / 2 * big).astype(np.int64)
    ok = (ij >= 0).all(-1) & (ij < big).all(-1)
    flat = (np.arange(n)[:, None] * big * big + ij[..., 1] * big + ij[..., 0])[ok]
    hits = np.bincount(flat, minlength=n * big * big).reshape(n, big, big) > 0
    cover = hits.reshape(n, size, supersample, size, supersample).mean(axis=(2, 4))
    return cover[:, ::-1, :]  # y axis up


def render(
    n: int,
    size: int = 32,
    seed: int = 0,
    families: tuple[str, ...] | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Render `n` fractals deterministically from `seed`.

    Returns images (n, size, size, 3) uint8, captions, and integer labels for family,
    foreground color and background (indices into FAMILIES, COLORS, BACKGROUNDS).
    """
    families = families or tuple(FAMILIES)
    rng = np.random.default_rng(seed)
    fam = rng.integers(0, len(families), n)
    fg = rng.integers(0, len(COLORS), n)
    bg = rng.integers(0, len(BACKGROUNDS), n)
    fg_rgb = np.array(list(COLORS.values()), dtype=np.float64)
    bg_rgb = np.array(list(BACKGROUNDS.values()), dtype=np.float64)
    clash = np.abs(fg_rgb[fg] - bg_rgb[bg]).sum(-1) < 150  # white on white: pick another background
    bg[clash] = (bg[clash] + 1) % len(BACKGROUNDS)
    cover = np.empty((n, size, size))
    bar = tqdm(total=n, desc="render fractals", unit="img", disable=not progress, leave=False)
    for f, name in enumerate(families):
        idx = np.flatnonzero(fam == f)
        for chunk in np.array_split(idx, max(1, len(idx) // 256)):
            if len(chunk):
                pts = _pose(_normalise(_attractor_points(name, len(chunk), rng)), rng)
                cover[chunk] = _rasterise(pts, size)
                bar.update(len(chunk))
    bar.close()
    alpha = np.clip(cover * 1.6, 0.0, 1.0)[..., None]
    images = alpha * fg_rgb[fg][:, None, None] + (1 - alpha) * bg_rgb[bg][:, None, None]
    names_c, names_b = list(COLORS), list(BACKGROUNDS)
    captions = [caption(families[a], names_c[b], names_b[c]) for a, b, c in zip(fam, fg, bg)]
    global_fam = np.array([list(FAMILIES).index(families[a]) for a in fam])
    return np.rint(images).astype(np.uint8), captions, global_fam, fg, bg
