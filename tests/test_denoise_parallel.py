"""A pass's chunks on Python threads: same output for any thread count, order, bounds, cleanup."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from skimage import data

from libcem.denoiser import DenoiseConfig, denoise
from libcem.denoiser.parallel import chunk_threads, map_ordered, one_torch_thread
from libcem.errors import LibcemError


@pytest.mark.parametrize("settings", [
    {},  # gray: graph diffusion, two covariance passes with feedback
    {"pass2": "graph_wiener", "later_pass2": "graph_wiener"},  # the graph Wiener pass
])
def test_chunk_threads_give_the_bitwise_same_gray_image(torch_threads, settings):
    rng = np.random.default_rng(0)
    clean = data.camera()[100:164, 100:164].astype(float)
    noisy = clean + 25 * rng.standard_normal(clean.shape)
    torch.set_num_threads(1)
    cfg = DenoiseConfig(chunk=16, **settings)  # many chunks, so the threads interleave
    one = denoise(noisy, 25, config=cfg.override(threads=1))
    three = denoise(noisy, 25, config=cfg.override(threads=3))
    assert np.array_equal(one, three)
    assert torch.get_num_threads() == 1


def test_chunk_threads_give_the_bitwise_same_colour_image(torch_threads):
    rng = np.random.default_rng(1)
    clean = data.astronaut()[200:248, 200:248].astype(float)
    noisy = clean + 40 * rng.standard_normal(clean.shape)  # above 37.5: the high-noise passes
    torch.set_num_threads(1)
    cfg = DenoiseConfig(chunk=16)
    assert np.array_equal(denoise(noisy, 40, config=cfg.override(threads=1)),
                          denoise(noisy, 40, config=cfg.override(threads=2)))


def test_map_ordered_keeps_the_order_and_bounds_the_waiting_results(torch_threads):
    torch.set_num_threads(2)
    started, seen = [], []

    def work(i: int) -> int:
        started.append(i)
        seen.append(torch.get_num_threads())
        time.sleep(0.002 * (i % 3))  # finish out of order
        return i * i

    results = []
    for value in map_ordered(work, range(20), threads=2):
        # no more than 2 x threads chunks are submitted ahead of the one consumed
        assert len(started) <= len(results) + 1 + 4
        results.append(value)
    assert results == [i * i for i in range(20)]
    assert set(seen) == {1}  # one torch thread inside the chunks
    assert torch.get_num_threads() == 2  # restored


def test_map_ordered_raises_the_chunk_error_and_restores_torch_threads(torch_threads):
    torch.set_num_threads(2)

    def work(i: int) -> int:
        if i == 5:
            raise ValueError("chunk 5")
        return i

    with pytest.raises(ValueError, match="chunk 5"):
        list(map_ordered(work, range(50), threads=2))
    assert torch.get_num_threads() == 2


def test_one_torch_thread_is_the_calling_threads_own_and_restored(torch_threads):
    torch.set_num_threads(3)
    inside, leave, seen = threading.Event(), threading.Event(), []

    def other() -> None:  # another request of a web server, say
        torch.set_num_threads(2)
        with one_torch_thread():
            seen.append(torch.get_num_threads())
            inside.set()
            leave.wait(5)
        seen.append(torch.get_num_threads())

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(5)
    assert torch.get_num_threads() == 3  # this thread keeps its count
    with one_torch_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 3
    leave.set()
    thread.join()
    assert seen == [1, 2]


def test_thread_count_follows_torch_and_is_checked(torch_threads):
    torch.set_num_threads(2)
    assert chunk_threads(0, torch.device("cpu")) == 2
    assert chunk_threads(3, torch.device("cpu")) == 3
    assert chunk_threads(4, torch.device("meta")) == 1  # not a CPU: one thread feeds the device
    torch.set_num_threads(1)  # as in a tile worker process
    assert chunk_threads(0, torch.device("cpu")) == 1
    with pytest.raises(LibcemError, match="threads"):
        DenoiseConfig(threads=-1)


def test_tile_workers_get_no_chunk_threads_and_the_calling_process_keeps_them(monkeypatch):
    from libcem.denoiser import api

    seen = []

    def fake_tiled(img, fn, tile, overlap, progress, workers):
        seen.append((workers, fn.keywords["cfg"].threads))
        return img.clone()

    monkeypatch.setattr(api, "process_tiled", fake_tiled)
    img = torch.rand(1, 80, 80) * 255
    for workers in (1, 2):
        api.denoise_float(img, 20.0, DenoiseConfig(tile=48, overlap=8, threads=3, workers=workers))
    assert seen == [(1, 3), (2, 1)]
