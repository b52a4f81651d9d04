"""`cifar10`, `mnist` and `fashion` from their official archives: downloaded once into the cache
folder (or put there by hand on an offline machine), checksum-verified, parsed without unpickling
(CIFAR-10 binary version, MNIST and Fashion-MNIST IDX files)."""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from libcem.errors import LibcemError
from libcem.generative.data.base import ImageSet, Splits, split_fixed
from libcem.generative.data.digits import digits_imageset

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"}
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MD5 = {  # the training half: 60,000 images; `data.test_size` of them are held out
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
}
FASHION_CLASSES = (  # the official names are T-shirt/top, Trouser, ..., Ankle boot
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)


def cache_dir(override: str = "") -> Path:
    root = override or os.environ.get("LIBCEM_CACHE") or Path.home() / ".cache" / "libcem"
    return Path(root).expanduser()


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, expected_md5: str) -> Path:
    """Return `dest`, downloading it first if absent; the checksum is verified either way."""
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as out:
                while block := resp.read(1 << 20):
                    out.write(block)
        except (urllib.error.URLError, OSError) as err:
            tmp.unlink(missing_ok=True)
            raise LibcemError(
                f"could not download {url} ({getattr(err, 'reason', err)}). If this machine is "
                f"offline, download it elsewhere and put it at {dest}, or train on "
                "--data fractals, digits or folder:PATH"
            ) from None
        os.replace(tmp, dest)
    if md5(dest) != expected_md5:
        raise LibcemError(f"{dest} is corrupt (checksum mismatch): delete it and run again")
    return dest


def _cifar_records(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 1 + 3072)
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)


def _cifar_imageset(images: np.ndarray, labels: np.ndarray) -> ImageSet:
    captions = [f"a photo of a {CIFAR10_CLASSES[y]}" for y in labels]
    return ImageSet(
        torch.from_numpy(images.copy()), captions, {"class": labels}, {"class": list(CIFAR10_CLASSES)}
    )


def load_cifar10(root: str = "") -> Splits:
    """CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test images, 32x32 RGB."""
    (name, digest), = CIFAR10_MD5.items()
    path = fetch(CIFAR10_URL, cache_dir(root) / name, digest)
    parts: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name.endswith(".bin") and "batch" in member.name:
                parts[Path(member.name).name] = tar.extractfile(member).read()
    train_names = [f"data_batch_{i}.bin" for i in range(1, 6)]
    if not all(n in parts for n in train_names + ["test_batch.bin"]):
        raise LibcemError(f"{path} is not the CIFAR-10 binary archive")
    train = _cifar_records(b"".join(parts[n] for n in train_names))
    test = _cifar_records(parts["test_batch.bin"])
    return Splits(_cifar_imageset(*train), _cifar_imageset(*test))


def read_idx(raw: bytes) -> np.ndarray:
    """An IDX file (LeCun's MNIST format): magic 0x0000 08 NDIM, big-endian sizes, uint8 data."""
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise LibcemError("not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">u4").astype(np.int64)
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(shape)


def load_mnist(root: str = "") -> Splits:
    """MNIST (LeCun et al. 1998): 60,000 training and 10,000 test digits, 28x28 grayscale."""
    arrays = {}
    for name, digest in MNIST_MD5.items():
        path = fetch(MNIST_URL + name, cache_dir(root) / "mnist" / name, digest)
        with gzip.open(path, "rb") as f:
            arrays[name.split("-idx")[0]] = read_idx(f.read())
    return Splits(
        digits_imageset(arrays["train-images"], arrays["train-labels"]),
        digits_imageset(arrays["t10k-images"], arrays["t10k-labels"]),
    )


def write_idx(array: np.ndarray) -> bytes:
    """The inverse of read_idx (used to make small archives in the official format)."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def a_photo_of(name: str) -> str:
    return f"a photo of {'an' if name[0] in 'aeiou' else 'a'} {name}"


def load_fashion(root: str = "", n_test: int = 500) -> Splits:
    """Fashion-MNIST (Xiao et al. 2017): the 60,000 training images, 28x28 grayscale, in 10 classes;
    a fixed held-out split of `n_test` of them (seeded permutation, seed 0)."""
    arrays = {}
    for name, digest in FASHION_MD5.items():
        path = fetch(FASHION_URL + name, cache_dir(root) / "fashion-mnist" / name, digest)
        with gzip.open(path, "rb") as f:
            arrays[name.split("-idx")[0]] = read_idx(f.read())
    images, labels = arrays["train-images"], arrays["train-labels"].astype(np.int64)
    data = ImageSet(
        torch.from_numpy(images.copy())[:, None],
        [a_photo_of(FASHION_CLASSES[y]) for y in labels],
        {"class": labels},
        {"class": list(FASHION_CLASSES)},
    )
    return split_fixed(data, n_test, seed=0)
