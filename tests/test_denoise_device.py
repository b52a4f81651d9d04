"""What the denoiser does for a GPU, checked on the CPU: the passes never read a number back
from a tensor (each read waits for the device), EM runs on a host copy of its sample, and the
tile side on a GPU comes from its free memory (the whole photo when it fits: no tile loop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from libcem.denoiser import DenoiseConfig, em, linalg, passes, tiling
from libcem.denoiser.correlated import NoiseCorrelation
from libcem.denoiser.passes import PatchGroups
from libcem.denoiser.patches import pad_to_grid, to_opponent

READS = ("__float__", "__int__", "__bool__", "__index__", "item", "tolist", "numpy")


def _no_reads(monkeypatch):
    """Every way Python reads a tensor's value raises from here on."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("a tensor's value was read on the host")

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, refuse)


def _noisy(colour: bool, size: int = 40, sigma: float = 25.0) -> torch.Tensor:
    img = data.astronaut()[100:100 + size, 200:200 + size].astype(np.float32)
    x = torch.from_numpy(img).permute(2, 0, 1) if colour else torch.from_numpy(img[..., 1])[None]
    x = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    return pad_to_grid(to_opponent(x), 7, 4)


def test_the_reads_are_refused(monkeypatch):
    """The check below can fail: a float() of a tensor is caught."""
    _no_reads(monkeypatch)
    with pytest.raises(AssertionError, match="read on the host"):
        float(torch.ones(()))
    with pytest.raises(AssertionError, match="read on the host"):
        bool(torch.ones(()) > 0)


def _binomial_noise() -> NoiseCorrelation:
    """The autocovariance of white noise smoothed by [1 2 1]^T [1 2 1] / 6, std 25."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    line = torch.nn.functional.conv1d(k.view(1, 1, -1), k.view(1, 1, -1), padding=2).view(-1)
    autocov = torch.zeros(7, 7, dtype=torch.float64)
    autocov[1:6, 1:6] = torch.outer(line, line) / 36 * 625
    return NoiseCorrelation(autocov)


@pytest.mark.parametrize("colour, correlated", [(False, False), (True, False), (True, True)])
def test_the_passes_read_no_number_back_from_a_tensor(monkeypatch, colour, correlated):
    """Pass 1 with its per-group scale EM, the covariance pass with its covariance EM, the graph
    Wiener pass and a group-axis Wiener pass run with every host read refused: on a GPU none
    of their chunk loops waits for the device (with correlated noise too: its scales and
    whitening are made once per image, not per pass). The block inversion of the covariances
    reads their condition bounds, so it runs on the CPU only: here it is off, as on a GPU."""
    monkeypatch.setattr(linalg, "BLOCK_DEVICES", ())
    cfg = DenoiseConfig(threads=1, search_radius=8, combination_radius=8)
    img = _noisy(colour)
    noise = _binomial_noise() if correlated else None
    groups = PatchGroups(img, cfg.patch, cfg.heads_for(img.shape[0]), noise)
    positions = groups.match(cfg.step, cfg.search_radius, 16)
    params, _ = passes.fit_group_model(groups, positions, 25.0, cfg, torch.Generator().manual_seed(0))
    _no_reads(monkeypatch)
    est = passes.graph_diffusion_pass(groups, positions, params, cfg)
    est2, _ = passes.covariance_pass(groups, est, 625.0, cfg)
    assert cfg.cov_em_iter(img.shape[0], later=False) > 0
    est3, _ = passes.wiener_pass(groups, est2, 625.0, cfg, params)
    lum = PatchGroups(img[:1], cfg.combination_patch, ())
    est4, _, _ = passes.combination_pass(lum, lum, est3[:1], 25.0, 0.3, cfg)
    assert est4.shape == img[:1].shape


def test_the_global_em_runs_on_a_host_copy_of_its_sample(monkeypatch):
    """EM of the global parameters (--all-heads) reads numbers every iteration, so it gets its
    sample on the host, once, whatever the image's device."""
    seen = []

    def record(z, dists, start, *args, **kwargs):
        seen.append((z.device.type, dists.device.type, z.dtype))
        return start, em.EMTrace()

    monkeypatch.setattr(em, "fit", record)
    cfg = DenoiseConfig(threads=1, em_fit=True, search_radius=8)
    img = _noisy(False)
    groups = PatchGroups(img, cfg.patch, cfg.heads_for(1))
    positions = groups.match(cfg.step, cfg.search_radius, 16)
    real_cpu = torch.Tensor.cpu
    copies = []
    monkeypatch.setattr(torch.Tensor, "cpu", lambda t: copies.append(t.shape) or real_cpu(t))
    passes.fit_group_model(groups, positions, 25.0, cfg, torch.Generator().manual_seed(0))
    assert seen == [("cpu", "cpu", torch.float64)]
    # the sample's coefficients (G, K, F) and head distances (H, G, K, K) are copied off first
    n = min(cfg.em_groups, positions.shape[0])
    assert copies[:2] == [torch.Size([n, 16, 49]), torch.Size([1, n, 16, 16])]


def test_tile_side_from_free_memory():
    """The largest square whose pixels, at `per_pixel` bytes each, and the batches' fixed
    part fit in `fraction` of the free memory; never below the smallest useful tile."""
    per, fixed = tiling.GPU_BYTES_PER_PIXEL, tiling.GPU_FIXED_BYTES
    free = int((fixed + per * 2000**2) / tiling.GPU_MEMORY_FRACTION) + 1
    assert tiling.tile_for_memory(free) == 2000
    assert tiling.tile_for_memory(0) == tiling.GPU_MIN_TILE
    big = int((fixed + per * 5000**2) / tiling.GPU_MEMORY_FRACTION) + 1
    assert tiling.tile_for_memory(big) == 5000


def test_device_tile(monkeypatch):
    """CPU: `tile`; a GPU: `gpu_tile` when set, else from its free memory."""
    cfg = DenoiseConfig()
    assert tiling.device_tile(torch.device("cpu"), cfg) == cfg.tile
    assert tiling.device_tile(torch.device("cuda"), cfg.override(gpu_tile=1000)) == 1000
    free = int((tiling.GPU_FIXED_BYTES + tiling.GPU_BYTES_PER_PIXEL * 3000**2)
               / tiling.GPU_MEMORY_FRACTION) + 1
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    assert tiling.device_tile(torch.device("cuda:0"), cfg) == 3000
    # memory torch holds cached but unused counts as free
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free - 10**9, 2 * free))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3 * 10**9)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * 10**9)
    assert tiling.device_tile(torch.device("cuda:0"), cfg) == 3000
    assert tiling.device_tile(torch.device("mps"), cfg) == cfg.tile


def test_a_tile_as_large_as_the_image_denoises_it_whole(monkeypatch):
    """When `device_tile` gives a side at least the image's, as on a GPU whose memory holds
    the photo, the image goes through the passes once, with no tiles: the output of
    `denoise_tensor` on the whole image."""
    from libcem.denoiser import api

    calls = []
    monkeypatch.setattr(api, "process_tiled", lambda *a, **k: calls.append(1) or tiling.process_tiled(*a, **k))
    img = torch.from_numpy(data.camera()[:80, :100].astype(np.float32))[None]
    img = img + 20 * torch.randn(img.shape, generator=torch.Generator().manual_seed(1))
    cfg = DenoiseConfig(threads=1, tile=64, overlap=8, workers=1)
    api.denoise_float(img, 20.0, cfg)
    assert calls == [1]  # 64-pixel tiles on the CPU
    monkeypatch.setattr(api, "device_tile", lambda device, cfg: 100)
    whole, _ = api.denoise_float(img, 20.0, cfg)
    assert calls == [1]
    assert torch.equal(whole, passes.denoise_tensor(img, 20.0, cfg)[0])


def test_gpu_tile_setting_is_checked_and_set_by_the_tile_option():
    from libcem.commands.denoise import _config
    from libcem.errors import LibcemError

    with pytest.raises(LibcemError, match="gpu_tile"):
        DenoiseConfig(gpu_tile=20)
    import argparse

    from libcem.commands.denoise import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    cfg = _config(parser.parse_args(["denoise", "in.png", "-o", "out.png", "--tile", "600"]))
    assert (cfg.tile, cfg.gpu_tile) == (600, 600)
