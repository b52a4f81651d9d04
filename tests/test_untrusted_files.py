"""Untrusted files: random and mutated config.json / state.json / safetensors headers fed to every
loader (hypothesis), and a folder of hostile files fed to the data loaders and the denoiser.

Every loader must answer with a LibcemError or a valid result: never another exception, never a
model beyond the size bound, never a read outside the folder."""

import json
import os
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from libcem.errors import LibcemError
from libcem.files import MAX_PARAMETERS, save_model
from libcem.generative.models.prior import PriorConfig, PriorTransformer
from libcem.generative.models.tokenizer import Tokenizer, TokenizerConfig
from libcem.generative.training.checkpoints import read_state

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
INTERESTING = st.sampled_from([0, -1, 1, 3, 64, 4096, 200_000, 2**31, 10**12, 1e308, float("nan"), float("inf"),
                               "", "x", None, True, [], [1, 64], {}, [[1]]])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)
VALUES = INTERESTING | JSON


def model_folders(root: Path) -> dict[str, tuple[type, Path]]:
    tok = Tokenizer(TokenizerConfig(width=8, channel_mult=(1,), latent_dim=4, codebook_size=8, codebook_groups=1), 3, 16)
    prior = PriorTransformer(PriorConfig(width=32, depth=1, heads=2), latent_dim=4, latent_size=4, text_dim=3)
    save_model(root / "tokenizer", tok)
    save_model(root / "prior", prior, {"text_encoder": "label", "vocabulary": ["a", "b", "c"]})
    return {"tokenizer": (Tokenizer, root / "tokenizer"), "prior": (PriorTransformer, root / "prior")}


FOLDERS_ROOT = Path(tempfile.mkdtemp(prefix="libcem-untrusted-"))
FOLDERS = model_folders(FOLDERS_ROOT)


def load_mutated(kind: str, config: bytes | None = None, weights: bytes | None = None):
    cls, source = FOLDERS[kind]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_bytes(config if config is not None else (source / "config.json").read_bytes())
        (folder / "model.safetensors").write_bytes(
            weights if weights is not None else (source / "model.safetensors").read_bytes())
        try:
            model = cls.from_pretrained(folder)
        except LibcemError:
            return None
        assert all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())
        return model


def mutate(record, path: list, value):
    """`record` with the value at `path` (keys / indices, the last one possibly new) replaced or removed."""
    node = record
    for key in path[:-1]:
        node = node[key]
    if value == "<delete>" and isinstance(node, dict):
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return record


@st.composite
def mutated_records(draw, kind: str):
    record = json.loads((FOLDERS[kind][1] / "config.json").read_text())
    if draw(st.integers(0, 9)) == 0:
        return json.dumps(draw(VALUES)).encode()
    section = draw(st.sampled_from(["config", "metadata", "kind", "<top>"]))
    if section == "<top>":
        path = [draw(st.text(max_size=6))]
    elif section == "kind":
        path = ["kind"]
    else:
        keys = sorted(record[section]) + [draw(st.text(max_size=6))]
        path = [section, draw(st.sampled_from(keys))]
    for _ in range(draw(st.integers(1, 3))):
        record = mutate(record, path, draw(VALUES | st.just("<delete>")))
    return json.dumps(record).encode()


@SETTINGS
@given(kind=st.sampled_from(["tokenizer", "prior"]), data=st.data())
def test_mutated_config_json_gives_a_libcem_error_or_a_valid_model(real_builds, kind, data):
    load_mutated(kind, config=data.draw(mutated_records(kind)))
    assert all(n <= MAX_PARAMETERS for n in real_builds)


def safetensors_parts(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def pack(header, body: bytes, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


@st.composite
def mutated_weights(draw, kind: str):
    header, body = safetensors_parts((FOLDERS[kind][1] / "model.safetensors").read_bytes())
    how = draw(st.sampled_from(["shape", "dtype", "offsets", "drop", "header", "length", "truncate", "bytes"]))
    name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    if how == "shape":
        header[name]["shape"] = draw(st.lists(st.integers(0, 10**12) | INTERESTING, max_size=4))
    elif how == "dtype":
        header[name]["dtype"] = draw(st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "I8", "BOOL", "U8", "X"]))
    elif how == "offsets":
        header[name]["data_offsets"] = draw(st.lists(st.integers(-1, 2**63) | INTERESTING, max_size=3))
    elif how == "drop":
        del header[name]
    elif how == "header":
        header = draw(VALUES)
    elif how == "length":
        return pack(header, body, draw(st.integers(0, 2**64 - 1)))
    elif how == "truncate":
        blob = pack(header, body)
        return blob[: draw(st.integers(0, len(blob) - 1))]
    else:
        blob = bytearray(pack(header, body))
        for _ in range(draw(st.integers(1, 8))):
            blob[draw(st.integers(0, len(blob) - 1))] = draw(st.integers(0, 255))
        return bytes(blob)
    return pack(header, body)


@SETTINGS
@given(kind=st.sampled_from(["tokenizer", "prior"]), data=st.data())
def test_mutated_safetensors_gives_a_libcem_error_or_a_valid_model(real_builds, kind, data):
    load_mutated(kind, weights=data.draw(mutated_weights(kind)))
    assert all(n <= MAX_PARAMETERS for n in real_builds)


@SETTINGS
@given(state=VALUES | st.fixed_dictionaries({"step": VALUES, "window": VALUES})
       | st.fixed_dictionaries({"step": st.just(2), "window": st.fixed_dictionaries(
           {"n": VALUES, "sums": VALUES | st.dictionaries(st.text(max_size=4), VALUES, max_size=2), "seconds": VALUES})}))
def test_mutated_state_json_gives_a_libcem_error_or_a_valid_state(state):
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "step_00000002"
        (ckpt / "training").mkdir(parents=True)
        (ckpt / "training" / "state.json").write_text(json.dumps(state))
        try:
            got = read_state(ckpt)
        except LibcemError:
            return
    assert got["step"] == 2
    window = got.get("window")
    assert window is None or (window["n"] >= 0 and all(np.isfinite(v) for v in window["sums"].values()))


# --- a folder of hostile files -------------------------------------------------------------------

def hostile_folder(root: Path, outside: Path) -> dict[str, Path]:
    """name -> file, in one class sub-folder of `root`; `outside` holds what a symlink points to."""
    d = root / "things"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {}

    def add(name: str, write) -> None:
        files[name] = d / name
        write(files[name])

    add("good.png", lambda p: Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(p))
    add("gray16.png", lambda p: Image.fromarray(rng.integers(0, 65535, (24, 24), dtype=np.uint16)).save(p))
    add("rgba.png", lambda p: Image.fromarray(rng.integers(0, 255, (24, 24, 4), dtype=np.uint8)).save(p))
    add("tiny.png", lambda p: Image.new("L", (1, 1)).save(p))
    add("truncated.png", lambda p: p.write_bytes((d / "good.png").read_bytes()[:100]))
    add("empty.png", lambda p: p.write_bytes(b""))
    add("text.png", lambda p: p.write_text("not an image"))
    add("pickle.png", lambda p: p.write_bytes(b"\x80\x04\x95\x00"))
    add("nan.tif", lambda p: __import__("tifffile").imwrite(p, np.full((24, 24), np.nan, dtype=np.float32)))
    add("inf.tif", lambda p: __import__("tifffile").imwrite(p, np.full((24, 24), np.inf, dtype=np.float32)))
    add("fifo.png", lambda p: os.mkfifo(p))
    outside.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), (1, 2, 3)).save(outside / "secret.png")
    add("escape.png", lambda p: p.symlink_to(outside / "secret.png"))
    return files


def test_data_loaders_read_only_the_readable_images_inside(tmp_path):
    from libcem.generative.data import DataConfig, load_data

    hostile_folder(tmp_path / "data", tmp_path / "outside")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_data(DataConfig(source=f"folder:{tmp_path / 'data'}", test_size=1, image_size=16))
    # good, gray16, rgba, tiny and the two TIFFs are images; the rest is skipped, escape.png is outside
    assert len(splits.train) + len(splits.test) == 6
    assert any("skipped 5 file(s) that are not readable images and 1 entries outside" in str(w.message) for w in caught)
    images = torch.cat([splits.train.images, splits.test.images]).flatten(1)
    assert not any(bool((row[:3] == torch.tensor([1, 2, 3], dtype=torch.uint8)).all()) for row in images)


def readable_arrays(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """The files a user could hand to the denoiser: those that decode to an array."""
    import tifffile

    out = {}
    for name, path in files.items():
        if not path.is_file() or path.is_symlink():
            continue
        try:
            out[name] = tifffile.imread(path) if path.suffix == ".tif" else np.asarray(Image.open(path))
        except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError, tifffile.TiffFileError):
            continue
    return out


DENOISER_CASES = ["good.png", "gray16.png", "rgba.png", "tiny.png", "nan.tif", "inf.tif"]


@pytest.mark.parametrize("name", DENOISER_CASES)
def test_denoiser_on_hostile_files_gives_a_libcem_error_or_a_result(tmp_path, name):
    import libcem

    arrays = readable_arrays(hostile_folder(tmp_path / "data", tmp_path / "outside"))
    assert sorted(arrays) == sorted(DENOISER_CASES)
    image = arrays[name]
    try:
        out = libcem.denoise(image, device="cpu")
    except LibcemError:
        return
    assert out.shape == image.shape and out.dtype == image.dtype
    assert np.isfinite(out.astype(np.float64)).all()
