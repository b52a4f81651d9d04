import gzip
import io
import json
import tarfile
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from libcem.errors import LibcemError
from libcem.generative.data import DataConfig, batch_indices, downloads, load_data
from libcem.generative.data.fractals import FAMILIES, render


def test_fractals_are_deterministic_per_seed_and_labelled():
    a, cap_a, fam_a, _, _ = render(24, 32, seed=3)
    b, cap_b, fam_b, _, _ = render(24, 32, seed=3)
    c, _, _, _, _ = render(24, 32, seed=4)
    assert np.array_equal(a, b) and cap_a == cap_b and np.array_equal(fam_a, fam_b)
    assert not np.array_equal(a, c)
    assert a.shape == (24, 32, 32, 3) and a.dtype == np.uint8
    assert len(FAMILIES) >= 6
    assert all(list(FAMILIES)[f] in cap for f, cap in zip(fam_a, cap_a))
    assert all(cap.endswith("background") and " fractal on a" in cap for cap in cap_a)


def test_every_family_renders_a_visible_shape():
    for family in FAMILIES:
        images, *_ = render(4, 32, seed=0, families=(family,))
        spread = images.reshape(4, -1, 3).std(1).max(1)
        assert (spread > 20).all(), family  # foreground and background both present


def test_fractal_source_splits_and_any_size():
    splits = load_data(DataConfig(source="fractals", image_size=48, train_size=20, test_size=5))
    assert splits.train.images.shape == (20, 3, 48, 48)
    assert splits.test.images.shape == (5, 3, 48, 48)
    assert not torch.equal(splits.train.images[:5], splits.test.images)


def test_digits_source_has_a_fixed_held_out_split():
    splits = load_data(DataConfig(source="digits"))
    assert len(splits.train) == 4500 and len(splits.test) == 500
    assert splits.train.images.shape[1:] == (1, 28, 28)
    assert splits.test.captions[0].startswith("a handwritten digit ")
    again = load_data(DataConfig(source="digits"))
    assert torch.equal(splits.test.images, again.test.images)
    assert len(set(splits.test.labels["digit"].tolist())) == 10


def test_batch_order_is_a_pure_function_of_step():
    n, batch = 10, 4
    seen = torch.cat([batch_indices(s, batch, n, seed=1) for s in range(5)])
    assert sorted(seen[:10].tolist()) == list(range(10))  # first epoch is a permutation
    assert torch.equal(batch_indices(3, batch, n, 1), batch_indices(3, batch, n, 1))


def _png(path, array, mode=None):
    Image.fromarray(array, mode).save(path)


def test_folder_with_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("red cat", "blue_dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    _png(tmp_path / "red cat" / "gray.png", rng.integers(0, 255, (20, 20), dtype=np.uint8))
    _png(tmp_path / "red cat" / "rgba.png", rng.integers(0, 255, (20, 20, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16)).save(tmp_path / "blue_dog" / "deep.png")
    good = (tmp_path / "red cat" / "0.png").read_bytes()
    (tmp_path / "red cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "blue_dog" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 2 file"):
        splits = load_data(DataConfig(source=f"folder:{tmp_path}", image_size=16, test_size=2))
    assert len(splits.train) + len(splits.test) == 9
    assert splits.train.images.shape[1:] == (3, 16, 16)
    assert set(splits.train.captions + splits.test.captions) == {"red cat", "blue dog"}


def test_folder_with_metadata_jsonl(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        _png(tmp_path / f"{i}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        rows.append(json.dumps({"file_name": f"{i}.png", "text": f"picture {i}"}))
    (tmp_path / "metadata.jsonl").write_text("\n".join(rows))
    splits = load_data(DataConfig(source=f"folder:{tmp_path}", image_size=8, channels=1, test_size=1))
    assert splits.train.images.shape == (3, 1, 8, 8)
    assert sorted(splits.train.captions + splits.test.captions) == [f"picture {i}" for i in range(4)]


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LibcemError, match="no readable images"):
        load_data(DataConfig(source=f"folder:{tmp_path}"))


def test_fake_cifar10_archive_in_the_official_binary_format(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)

    def batch(n):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        pixels = rng.integers(0, 255, (n, 3072), dtype=np.uint8)
        return np.concatenate([labels[:, None], pixels], 1).tobytes(), labels, pixels

    buf = io.BytesIO()
    test_labels = None
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            raw, labels, pixels = batch(4)
            if name == "test_batch.bin":
                test_labels, test_pixels = labels, pixels
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())
    monkeypatch.setattr(downloads, "CIFAR10_MD5", {"cifar-10-binary.tar.gz": downloads.md5(tmp_path / "cifar-10-binary.tar.gz")})
    splits = load_data(DataConfig(source="cifar10", cache_dir=str(tmp_path)))
    assert len(splits.train) == 20 and len(splits.test) == 4
    assert np.array_equal(splits.test.images.reshape(4, -1).numpy(), test_pixels)
    assert splits.test.captions[0] == f"a photo of a {downloads.CIFAR10_CLASSES[test_labels[0]]}"


def test_fake_mnist_archive_in_the_official_idx_format(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 255, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 6, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 255, (3, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.array([7, 0, 1], dtype=np.uint8),
    }
    sums = {}
    for name, arr in arrays.items():
        (folder / name).write_bytes(gzip.compress(downloads.write_idx(arr)))
        sums[name] = downloads.md5(folder / name)
    monkeypatch.setattr(downloads, "MNIST_MD5", sums)
    splits = load_data(DataConfig(source="mnist", cache_dir=str(tmp_path)))
    assert splits.train.images.shape == (6, 1, 28, 28)
    assert torch.equal(splits.test.images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte.gz"]))
    assert splits.test.captions[0] == "a handwritten digit seven"


def test_corrupt_archive_and_offline_download_are_clear_errors(tmp_path, monkeypatch):
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"garbage")
    with pytest.raises(LibcemError, match="checksum mismatch"):
        load_data(DataConfig(source="cifar10", cache_dir=str(tmp_path)))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(downloads.urllib.request, "urlopen", offline)
    with pytest.raises(LibcemError, match="could not download .*offline"):
        load_data(DataConfig(source="mnist", cache_dir=str(tmp_path / "empty")))


def test_a_folder_path_alone_is_a_folder_source_and_survives_the_overrides(tmp_path):
    """`--data PATH` of an existing folder means folder:PATH (a name or a prefixed path stays as
    it is), and the override that carries it parses back to the same text, a Windows path's
    backslashes and quotes included."""
    import argparse

    from libcem.commands.common import shortcut_overrides
    from libcem.config import parse_override
    from libcem.generative.data.registry import data_source

    assert data_source(str(tmp_path)) == f"folder:{tmp_path}"
    for value in ("digits", f"folder:{tmp_path}", str(tmp_path / "missing"), "cifar100"):
        assert data_source(value) == value
    for value in (f"folder:{tmp_path}", 'folder:C:\\Users\\me\\my "best" photos'):
        args = argparse.Namespace(data=value, precision=None, steps=None, seed=None, overrides=[])
        assert parse_override(shortcut_overrides(args)[0]) == (["data", "source"], value)


def test_captions_a_prior_needs_are_checked_before_the_work():
    """No caption at all is an error naming the ways to give them; some missing a warning; the
    snapshot prompts leave the empty ones out."""
    from libcem.generative.data import ImageSet
    from libcem.generative.training.prior import check_captions, snapshot_prompts

    def images(captions):
        return ImageSet(torch.zeros(len(captions), 3, 8, 8, dtype=torch.uint8), list(captions))

    with pytest.raises(LibcemError, match="none of the 3 training images has a caption.*sub-folders"):
        check_captions(images(["", " ", ""]))
    with pytest.warns(UserWarning, match="2 of 4 training images have no caption"):
        check_captions(images(["", "a cat", "", "a dog"]))
    assert snapshot_prompts(images(["", "a cat", " ", "a dog", "a cat"])) == ["a cat", "a dog"]


def test_evaluation_and_the_label_encoder_leave_empty_captions_out():
    """`libcem eval` prompts only with held-out captions that have text, and the label encoder's
    refusal of an unknown prompt suggests known captions that have text."""
    import types

    from libcem.generative.data import ImageSet
    from libcem.generative.evaluation.report import held_out_prompts
    from libcem.generative.text.encoders import LabelEncoder

    test = ImageSet(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), ["", "a cat", " ", "a dog"])
    pipe = types.SimpleNamespace(encoder=types.SimpleNamespace(vocabulary=None))
    assert held_out_prompts(pipe, test, None).tolist() == [1, 3]
    with pytest.raises(LibcemError, match="none of the 2 held-out images has a caption"):
        held_out_prompts(pipe, ImageSet(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), ["", ""]), None)
    with pytest.raises(LibcemError, match=r"e\.g\. 'a cat'; 'a dog'$"):
        LabelEncoder(["", "a cat", "a dog"]).encode(["a bird"])
