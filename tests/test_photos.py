"""Training on photo folders: the memory-mapped on-disk cache, the three caption conventions,
augmentation (random crops, flips) drawn from the step's generator, and Fashion-MNIST."""

import gzip
import json
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from libcem.config import ConfigError
from libcem.files import load_tensors
from libcem.generative.data import DataConfig, downloads, folder, load_data
from libcem.generative.data.base import Augment, ImageSet
from libcem.generative.training.tokenizer import TokenizerTask
from libcem.generative.training.trainer import Trainer

SHARED_FASHION = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fashion-mnist"


def photo(path: Path, value, size=(12, 9), fmt=None) -> Path:
    """A flat-coloured image of `size` (w, h): its resized pixels are exactly `value`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(value) if isinstance(value, (tuple, list)) else (value,) * 3).save(path, fmt)
    return path


def mapped_file(t: torch.Tensor) -> str:
    """The file that the memory holding `t` maps ('' for anonymous memory such as the heap)."""
    ptr = t.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= ptr < hi:
            return parts[5].strip() if len(parts) == 6 else ""
    raise AssertionError("not mapped")


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("folders/*/*.u8"))


# --- the on-disk cache ---------------------------------------------------------------------------

def test_two_thousand_images_are_memory_mapped_not_held_in_ram(tmp_path):
    rng = np.random.default_rng(0)
    n, size = 2000, 64  # 24.6 MB decoded: far more than the per-image bookkeeping (paths, captions)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(_dir(tmp_path / "data" / f"c{i % 4}") / f"{i}.png")
    decoded = n * 3 * size * size  # bytes as uint8; 4x that as floats
    cfg = DataConfig(source=f"folder:{tmp_path / 'data'}", image_size=size, test_size=100,
                     cache_dir=str(tmp_path / "cache"))
    tracemalloc.start()
    try:
        splits = load_data(cfg)  # builds the cache
        _, build_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        splits = load_data(cfg)  # reads it
        batches = [splits.train.floats(torch.arange(i, i + 64)) for i in range(0, 640, 64)]
        _, hit_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(splits.train) + len(splits.test) == n and batches[0].shape == (64, 3, size, size)
    assert build_peak < decoded / 4 and hit_peak < decoded / 4, (build_peak, hit_peak, decoded)
    (data_file,) = cache_files(tmp_path / "cache")
    assert data_file.stat().st_size == decoded
    for part in (splits.train, splits.test):  # both splits are views of the one file, never copies
        assert mapped_file(part.pixels) == str(data_file)
    first = splits.train.uint8([0])[0]
    assert torch.equal(first, torch.from_numpy(folder.load_image(tmp_path / "data" / "c0" / "0.png", 3, size)))


def test_a_second_load_reuses_the_cache_and_an_edit_rebuilds_it(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for i in range(10):
        photo(root / "grey" / f"{i}.png", 10 * i)
    cfg = DataConfig(source=f"folder:{root}", image_size=8, test_size=1, cache_dir=str(tmp_path / "cache"))
    before = load_data(cfg)
    (old,) = cache_files(tmp_path / "cache")

    def no_decoding(*_):
        raise AssertionError("decoded although the folder did not change")

    with monkeypatch.context() as mp:
        mp.setattr(folder, "decode_image", no_decoding)
        again = load_data(cfg)
    assert torch.equal(again.train.images, before.train.images)

    photo(root / "grey" / "3.png", 250, size=(20, 20))  # an edit: new pixels, new size and time
    after = load_data(cfg)
    (new,) = cache_files(tmp_path / "cache")  # the old build is gone
    assert new != old and not old.exists()
    values = sorted(int(v) for v in torch.cat([after.train.images, after.test.images])[:, 0, 0, 0])
    assert values == sorted([10 * i for i in range(10) if i != 3] + [250])

    (root / "grey" / "9.png").unlink()  # a removal rebuilds too
    assert len(load_data(cfg).train) + 1 == 9


def test_a_corrupt_image_is_skipped_counted_and_reported_once(tmp_path, capsys):
    root = tmp_path / "data"
    for i in range(11):
        photo(root / "cats" / f"{i}.jpg", 100, fmt="JPEG")
    good = (root / "cats" / "0.jpg").read_bytes()
    (root / "cats" / "broken.jpg").write_bytes(good[:40])
    cfg = DataConfig(source=f"folder:{root}", image_size=8, test_size=1, cache_dir=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="skipped 1 file"):
        splits = load_data(cfg, progress=True)
    assert len(splits.train) + len(splits.test) == 11
    assert "data: cached 11 images from" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache hit warns no more
        load_data(cfg, progress=True)
    assert "11 images of" in capsys.readouterr().out


def test_a_killed_build_leaves_no_cache_that_is_read(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for i in range(10):
        photo(root / "a" / f"{i}.png", i)
    cfg = DataConfig(source=f"folder:{root}", image_size=8, test_size=1, cache_dir=str(tmp_path / "cache"))
    calls = []

    def dies(path, *args):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(path, *args)

    real = folder.decode_image
    monkeypatch.setattr(folder, "decode_image", dies)
    with pytest.raises(KeyboardInterrupt):
        load_data(cfg)
    assert not list((tmp_path / "cache").rglob("*.u8")) and not list((tmp_path / "cache").rglob("*.part"))
    monkeypatch.setattr(folder, "decode_image", real)
    assert len(load_data(cfg).train) == 9


# --- captions ------------------------------------------------------------------------------------

def test_captions_from_class_folders_through_a_template(tmp_path):
    root = tmp_path / "data"
    for name in ("tabby_cat", "dog"):
        for i in range(5):
            photo(root / name / f"{i}.png", 50)
    cfg = DataConfig(source=f"folder:{root}", image_size=8, test_size=1)
    plain = load_data(cfg)
    assert set(plain.train.captions) == {"tabby cat", "dog"}
    templated = load_data(DataConfig(source=f"folder:{root}", image_size=8, test_size=1, caption="a photo of a {label}"))
    assert set(templated.train.captions + templated.test.captions) == {"a photo of a tabby cat", "a photo of a dog"}
    assert templated.train.label_names["class"] == ["dog", "tabby cat"]
    for i, c in enumerate(templated.train.captions):
        assert c.endswith(templated.train.label_names["class"][templated.train.labels["class"][i]])


def test_captions_from_metadata_jsonl(tmp_path):
    rows = []
    for i in range(10):
        photo(tmp_path / f"{i}.png", 20 * i)
        rows.append(json.dumps({"file_name": f"{i}.png", "text": f"a grey square, level {20 * i}"}))
    (tmp_path / "metadata.jsonl").write_text("\n".join(rows))
    splits = load_data(DataConfig(source=f"folder:{tmp_path}", image_size=8, test_size=1, caption="x {label}"))
    for part in (splits.train, splits.test):  # each caption belongs to its own image; no template applies
        for caption, image in zip(part.captions, part.images):
            assert caption == f"a grey square, level {int(image[0, 0, 0])}"
    assert "class" not in splits.train.labels


def test_captions_from_a_txt_file_beside_each_image(tmp_path):
    root = tmp_path / "data"
    for i in range(10):
        photo(root / "things" / f"{i}.jpg", 20 * i, fmt="JPEG")
        if i % 2 == 0:  # kohya's convention; the others keep their folder's name
            (root / "things" / f"{i}.txt").write_text(f"  1girl, level {20 * i}\n")
    (root / "things" / "notes.txt").write_text("a note that belongs to no image")
    with pytest.warns(UserWarning, match="skipped 1 file"):  # notes.txt; the captions are not counted
        splits = load_data(DataConfig(source=f"folder:{root}", image_size=8, test_size=1,
                                      caption="a photo of {label}"))
    seen = {}
    for part in (splits.train, splits.test):
        for caption, image in zip(part.captions, part.images):
            seen[round(int(image[0, 0, 0]) / 20)] = caption
    assert seen == {i: f"1girl, level {20 * i}" if i % 2 == 0 else "a photo of things" for i in range(10)}


def test_a_caption_file_pointing_outside_is_not_read(tmp_path):
    root = tmp_path / "data"
    (tmp_path / "secret.txt").write_text("secret")
    for i in range(10):
        photo(root / "a" / f"{i}.png", i)
    (root / "a" / "0.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.warns(UserWarning, match="1 entries outside"):
        splits = load_data(DataConfig(source=f"folder:{root}", image_size=8, test_size=1))
    assert "secret" not in splits.train.captions + splits.test.captions and len(splits.train) == 8


def test_caption_templates_are_checked():
    with pytest.raises(ConfigError, match="data.caption"):
        DataConfig(caption="a photo of a {label}")  # fractals have no class label
    for bad in ("a photo of a {name}", "a photo", "a {label", "{label} {0}"):
        with pytest.raises(ConfigError, match="data.caption"):
            DataConfig(source="folder:x", caption=bad)
    with pytest.raises(ConfigError, match="data.crop"):
        DataConfig(crop="middle")
    with pytest.raises(ConfigError, match="data.flip"):
        DataConfig(flip="sometimes")


# --- augmentation --------------------------------------------------------------------------------

def test_flips_are_on_for_photos_and_off_for_digits_and_fractals():
    assert DataConfig(source="folder:x").flips() and DataConfig(source="cifar10").flips()
    assert DataConfig(source="fashion").flips()
    assert not any(DataConfig(source=s).flips() for s in ("digits", "mnist", "fractals"))
    assert not DataConfig(source="folder:x", flip="false").flips() and DataConfig(source="digits", flip="true").flips()


def test_random_crops_and_flips_come_from_the_generator_and_only_in_training(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (18, 18, 3), dtype=np.uint8)).save(_dir(tmp_path / "d" / "x") / f"{i}.png")
    splits = load_data(DataConfig(source=f"folder:{tmp_path / 'd'}", image_size=16, crop="random", test_size=2))
    train = splits.train
    assert train.pixels.shape[-1] == 18 and train.size == 16 and splits.test.images.shape[-1] == 16
    assert train.augment == Augment(flip=True, random_crop=True) and splits.test.augment == Augment()
    idx = torch.arange(len(train))
    a = train.augmented(idx, torch.Generator().manual_seed(1))
    b = train.augmented(idx, torch.Generator().manual_seed(1))
    c = train.augmented(idx, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    stored = train.pixels[torch.from_numpy(train.rows)].float() / 255  # the 18x18 images the crops come from
    flips = offsets = 0
    for k in range(len(train)):  # each example is one 16x16 window of its image, maybe mirrored
        windows = {(t, l, f) for t in range(3) for l in range(3) for f in (0, 1)
                   if torch.equal(a[k], (stored[k, :, t : t + 16, l : l + 16].flip(-1) if f else
                                         stored[k, :, t : t + 16, l : l + 16]))}
        assert len(windows) == 1
        (t, l, f), = windows
        flips, offsets = flips + f, offsets + ((t, l) != (1, 1))
    assert 0 < flips < len(train) and offsets > 0
    assert torch.equal(train.floats(idx), stored[:, :, 1:17, 1:17])  # un-augmented: the centre


def test_no_augmentation_draws_nothing_from_the_generator():
    data = ImageSet(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), ["a"] * 4)
    g = torch.Generator().manual_seed(5)
    data.augmented(torch.arange(4), g)
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(5).get_state())


def test_resume_with_random_crops_and_flips_is_bit_identical(tiny_cfg, tmp_path):
    for i in range(24):
        photo(tmp_path / "d" / ("a" if i % 2 else "b") / f"{i}.png", (i * 10, 255 - i * 10, 7), size=(30, 20))
    cfg = tiny_cfg(f"data.source=folder:{tmp_path / 'd'}", "data.crop=random", "data.flip=true", "data.test_size=2",
                   "train.ema_decay=0")

    def fit(run, resume=False, stop_at=None):
        task = TokenizerTask(cfg, load_data(cfg.data))
        return Trainer(run, cfg, task, progress=False).fit(resume=resume, stop_at=stop_at)

    whole = fit(tmp_path / "a")
    fit(tmp_path / "b", stop_at=3)
    resumed = fit(tmp_path / "b", resume=True)
    a, b = load_tensors(whole.checkpoint / "model.safetensors"), load_tensors(resumed.checkpoint / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- Fashion-MNIST -------------------------------------------------------------------------------

def test_fashion_from_files_already_in_the_cache(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    root = _dir(tmp_path / "fashion-mnist")
    images = rng.integers(0, 255, (40, 28, 28), dtype=np.uint8)
    labels = np.arange(40, dtype=np.uint8) % 10
    sums = {}
    for name, arr in (("train-images-idx3-ubyte.gz", images), ("train-labels-idx1-ubyte.gz", labels)):
        (root / name).write_bytes(gzip.compress(downloads.write_idx(arr)))
        sums[name] = downloads.md5(root / name)
    monkeypatch.setattr(downloads, "FASHION_MD5", sums)
    monkeypatch.setattr(downloads.urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    splits = load_data(DataConfig(source="fashion", cache_dir=str(tmp_path), test_size=4))
    assert (len(splits.train), len(splits.test)) == (36, 4)
    assert splits.train.images.shape[1:] == (1, 28, 28) and splits.train.augment.flip
    both = torch.cat([splits.train.images, splits.test.images])[:, 0]
    assert sorted(map(bytes, both.numpy())) == sorted(map(bytes, images))
    captions = splits.train.captions + splits.test.captions
    assert "a photo of an ankle boot" in captions and "a photo of a t-shirt" in captions
    templated = load_data(DataConfig(source="fashion", cache_dir=str(tmp_path), test_size=4, caption="{label}"))
    assert set(templated.train.captions) == set(downloads.FASHION_CLASSES)


@pytest.mark.skipif(not SHARED_FASHION.is_dir(), reason="the shared Fashion-MNIST files are not on this machine")
def test_the_official_fashion_files(tmp_path):
    splits = load_data(DataConfig(source="fashion", cache_dir=str(SHARED_FASHION.parent)))
    assert (len(splits.train), len(splits.test)) == (59_500, 500)
    assert splits.train.uint8(range(8)).shape == (8, 1, 28, 28)
    counts = np.bincount(np.concatenate([splits.train.labels["class"], splits.test.labels["class"]]))
    assert counts.tolist() == [6000] * 10  # the official training set is balanced
