"""A pass's chunks of groups on several CPU cores: Python threads, results in chunk order.

A pass is a loop over chunks of reference patches, each chunk a few dozen batched small
matrix operations (gathers, `eigh`, Cholesky factors, products) followed by its aggregation.
Torch's own threads split each of those small operations, with little work per thread;
batched LAPACK calls release Python's lock, so whole chunks on separate Python threads, each
with one torch thread, use the cores better. On the 2-core development CPU (session 14,
`python -m benchmarks.denoise_threads`, 512x512 cameraman at sigma 25): 5.05 s on one torch
thread, 3.76 s on two, 2.88 s with two chunk threads (block matching keeps torch's threads);
at sigma 50, where torch's threads split the larger 9x9-patch operations well, 13.20, 7.64
and 7.32 s.
The results come back in chunk order and are aggregated in that order by the caller, so the
output is bitwise the same for any number of chunk threads.
"""

from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def chunk_threads(requested: int, device: torch.device) -> int:
    """Threads for a pass's chunks: `requested`, or 0 = torch's thread count in this thread;
    1 on a GPU, where the batches are large and one Python thread keeps the device busy."""
    if device.type != "cpu":
        return 1
    return max(1, requested or torch.get_num_threads())


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch at one intra-op thread in the calling thread inside the block, its count restored
    after. (With torch's OpenMP backend the count is the calling thread's own: other threads,
    such as another request of a web server, keep theirs; threads started inside the block
    begin with one.)"""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def map_ordered(fn: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    """fn(item) for each item, computed on `threads` Python threads (each with one torch
    thread), yielded in the items' order; at most 2 x threads results wait at once, so memory
    stays bounded. threads <= 1: computed one after the other in the calling thread."""
    if threads <= 1:
        yield from map(fn, items)
        return
    with one_torch_thread(), ThreadPoolExecutor(threads, thread_name_prefix="libcem-chunk",
                                                initializer=torch.set_num_threads,
                                                initargs=(1,)) as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # an error, or the caller stopped early: the chunks not started are dropped
            for future in pending:
                future.cancel()
