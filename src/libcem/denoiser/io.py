"""Reading and writing PNG (8/16-bit), JPEG, WebP, HEIC, TIFF and BMP images as numpy arrays,
keeping dtype.

Pillow (through imageio) handles 8-bit images and 16-bit grayscale; 16-bit colour PNG goes
through pypng, TIFF through tifffile, HEIC (phones' photos) through Pillow with the optional
pillow-heif (`pip install pillow-heif`, libcem's extra `heic`). Arrays are (H, W) or
(H, W, C), C in 1..4. A 1-bit image is read as 8-bit (0 and 255), a CMYK one as RGB. WebP and
HEIC are written lossless. JPEG and BMP hold no alpha channel: an image with one is written
without it (`drops_alpha`). EXIF, ICC profile and orientation come from Pillow's reading of
the header (`_from_header`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from libcem.errors import LibcemError

HEIF_SUFFIXES = (".heic", ".heif")  # read and written through pillow-heif
CMYK_SUFFIXES = (".jpg", ".jpeg", ".tif", ".tiff")  # the formats that can hold CMYK
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", *HEIF_SUFFIXES, ".tif", ".tiff", ".bmp")
EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp", *HEIF_SUFFIXES, ".bmp")  # formats that hold 8-bit images only
NO_ALPHA = (".jpg", ".jpeg", ".bmp")  # formats that hold gray and RGB only
# a lossless HEIC: no quantisation, full chroma, RGB stored as it is (no YCbCr matrix)
HEIF_LOSSLESS = {"quality": -1, "chroma": 444, "matrix_coefficients": 0}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_image_path(path: Path) -> bool:
    """Whether the file name has a suffix this module reads."""
    return path.suffix.lower() in SUFFIXES


def _png_bit_depth(path: Path) -> int:
    """Bit depth from the PNG header (IHDR starts at byte 8; depth is its 9th data byte)."""
    head = path.read_bytes()[:26]
    if len(head) < 26 or head[:8] != PNG_SIGNATURE:
        raise LibcemError(f"{path}: not a PNG file")
    return head[24]


def _read_png16(path: Path) -> np.ndarray:
    import png

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    planes = info["planes"]
    data = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    img = data.reshape(height, width, planes)
    return img[:, :, 0] if planes == 1 else img


def _write_png16(path: Path, img: np.ndarray) -> None:
    import png

    planes = 1 if img.ndim == 2 else img.shape[2]
    writer = png.Writer(width=img.shape[1], height=img.shape[0], bitdepth=16,
                        greyscale=planes <= 2, alpha=planes in (2, 4))
    with open(path, "wb") as f:
        writer.write(f, img.reshape(img.shape[0], -1))


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into an array of its own dtype; a non-image raises LibcemError."""
    path = Path(path)
    if not path.is_file():
        raise LibcemError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise LibcemError(f"{path}: unsupported file type {suffix or '(none)'}; "
                          f"expected one of {', '.join(SUFFIXES)}")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            img = tifffile.imread(path)
        elif suffix == ".png" and _png_bit_depth(path) == 16:
            img = _read_png16(path)
        elif suffix in HEIF_SUFFIXES:
            with _pillow_open(path) as im:  # upright already: libheif applies the rotation
                img = np.asarray(im)
        else:
            import imageio.v3 as iio

            img = iio.imread(path)
    except LibcemError:
        raise
    except Exception as err:  # each reader has its own error types; report which file failed
        raise LibcemError(f"{path}: cannot read as an image ({type(err).__name__}: {err})") from err
    rgb = _cmyk_as_rgb(path) if suffix in CMYK_SUFFIXES else None
    return _check_layout(np.asarray(img) if rgb is None else rgb, path)


def _register_heif(path: str | Path) -> None:
    """Teach Pillow HEIC (pillow-heif's opener and saver), or a one-line error naming the
    extra to install."""
    try:
        import pillow_heif
    except ImportError:
        raise LibcemError(f"{path}: HEIC images need pillow-heif: pip install pillow-heif "
                          "(libcem's extra [heic]), or save the photo as JPEG or PNG") from None
    pillow_heif.register_heif_opener()


def _pillow_open(path: str | Path):
    """Pillow's `Image.open`, HEIC included (`_register_heif`)."""
    from PIL import Image

    if Path(path).suffix.lower() in HEIF_SUFFIXES:
        _register_heif(path)
    return Image.open(path)


def _from_header(path: str | Path, read, default):
    """read(im) on Pillow's opening of the file (its header; pixels only if `read` asks), or
    `default` where Pillow cannot parse it (some scientific TIFFs) or refuses it (over 179
    megapixels, a decompression-bomb guard): the pixels are read by another reader."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _pillow_open(path) as im:
            return read(im)
    except (UnidentifiedImageError, Image.DecompressionBombError):
        return default


def _cmyk_as_rgb(path: Path) -> np.ndarray | None:
    """A CMYK image (print JPEGs and TIFFs) as 8-bit RGB through Pillow; None for any other.
    Its four channels had read as RGBA, the black plate as alpha: a CMYK JPEG came out as a
    transparent PNG."""
    return _from_header(path, lambda im: np.asarray(im.convert("RGB")) if im.mode == "CMYK" else None,
                        None)


def _check_layout(img: np.ndarray, path: Path) -> np.ndarray:
    if img.dtype == np.bool_:  # a 1-bit image (a scan, a mask): 0 and 255
        img = img.astype(np.uint8) * 255
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[2] > 4:  # planar TIFF
        img = np.moveaxis(img, 0, 2)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] > 4):
        raise LibcemError(f"{path}: expected a single gray/RGB/RGBA image, got shape {img.shape}")
    return img


def read_metadata(path: str | Path) -> dict[str, bytes]:
    """The EXIF and ICC profile of an image file, as raw bytes ({} when it has none or Pillow
    cannot parse its header, e.g. some scientific TIFFs; the pixels are read separately); no
    ICC profile for a CMYK image, read as RGB."""
    header = _from_header(path, lambda im: (dict(im.info), im.getexif(), im.mode == "CMYK"), None)
    if header is None:
        return {}
    info, exif, cmyk = header
    exif = exif.tobytes() if len(exif) else None
    # a CMYK image's profile describes its inks, not the RGB read_image makes of it
    meta = {"exif": info.get("exif") or exif, "icc_profile": None if cmyk else info.get("icc_profile")}
    return {k: v for k, v in meta.items() if v}


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation of an image file, 1..8 (1: as stored; 6: a phone held upright,
    to be turned 90 degrees clockwise); 1 when it has none or Pillow cannot read its header."""
    value = _from_header(path, lambda im: im.getexif().get(0x0112, 1), 1)
    return value if value in range(1, 9) else 1


def upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """The array turned and mirrored as a viewer shows an image of that EXIF orientation (as
    Pillow's `ImageOps.exif_transpose`, for any dtype). The CLI keeps the stored pixels and
    their EXIF; a web page that shows and returns pixels without EXIF needs them upright."""
    turn = {1: lambda x: x, 2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1],
            4: lambda x: x[::-1], 5: lambda x: np.swapaxes(x, 0, 1),
            6: lambda x: np.rot90(x, -1), 7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1],
            8: lambda x: np.rot90(x, 1)}[orientation]
    return np.ascontiguousarray(turn(img))


def write_image(path: str | Path, img: np.ndarray, metadata: dict[str, bytes] | None = None) -> None:
    """Write an array to PNG, JPEG, WebP or HEIC (8-bit only; WebP and HEIC lossless) or TIFF,
    chosen by the suffix (`check_writable`), atomically (a temporary file in the same folder,
    then `os.replace`).

    metadata: from `read_metadata`; EXIF and ICC are kept in 8-bit PNG, JPEG, WebP and HEIC,
    the ICC profile in TIFF; 16-bit PNG (written by pypng) and BMP drop them. JPEG and BMP
    get the image without its alpha channel (`drops_alpha`), as gray or RGB.
    """
    path = Path(path)
    suffix = check_writable(path, img.dtype)
    if drops_alpha(path, img):
        img = img[:, :, 0] if img.shape[2] == 2 else img[:, :, :3]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    try:  # write beside the target, then rename: a crash never leaves a truncated file
        _write_by_suffix(Path(tmp), img, suffix, metadata or {})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def drops_alpha(path: str | Path, img: np.ndarray) -> bool:
    """Whether `write_image` leaves out img's alpha channel at `path`: the image has one (gray
    + alpha or RGBA) and the format holds none (JPEG, BMP)."""
    return Path(path).suffix.lower() in NO_ALPHA and img.ndim == 3 and img.shape[2] in (2, 4)


def check_writable(path: str | Path, dtype) -> str:
    """The suffix of `path` when its format holds images of `dtype` (and, for HEIC, pillow-heif
    is installed), else a LibcemError that says which format would (JPEG, WebP and HEIC:
    8-bit; PNG: 8- and 16-bit; TIFF: any). For a command to check its output before the work."""
    path, dtype = Path(path), np.dtype(dtype)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise LibcemError(f"{path}: cannot write {suffix or '(no suffix)'}; "
                          f"use one of {', '.join(SUFFIXES)}")
    if suffix in EIGHT_BIT_ONLY and dtype != np.uint8:
        raise LibcemError(f"{path}: {suffix[1:].upper()} holds 8-bit images only; write "
                          f"{dtype} to {'PNG or ' if dtype == np.uint16 else ''}TIFF")
    if suffix == ".png" and dtype not in (np.uint8, np.uint16):
        raise LibcemError(f"{path}: PNG holds 8- and 16-bit images only; write {dtype} to TIFF")
    if suffix in HEIF_SUFFIXES:
        _register_heif(path)
    return suffix


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_by_suffix(path: Path, img: np.ndarray, suffix: str, meta: dict[str, bytes]) -> None:
    if suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, img, iccprofile=meta.get("icc_profile"))
    elif suffix == ".png" and img.dtype == np.uint16:
        _write_png16(path, img)
    elif suffix in HEIF_SUFFIXES:  # gray + alpha comes back as RGBA
        from PIL import Image

        _register_heif(path)
        Image.fromarray(img).save(path, format="HEIF", **HEIF_LOSSLESS, **meta)
    else:
        import imageio.v3 as iio

        extra = {"lossless": True, "exact": True} if suffix == ".webp" else {}  # exact: keep RGB under alpha 0
        iio.imwrite(path, img, extension=suffix, **meta, **extra)
