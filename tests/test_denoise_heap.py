"""The tile workers' heap: freed tables are reused, not mapped and faulted in afresh."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# page faults of three 64 MiB tables, each allocated and filled after three such were freed:
# by default glibc unmaps each (they are above its largest adaptive threshold, 32 MiB) and maps
# the next afresh, 16,384 pages of 4 KiB each faulted in and zeroed; kept, the heap's holes
# are reused (the first few allocations settle where they lie)
FAULTS = """
import resource, sys, torch
from libcem.denoiser.heap import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
for _ in range(3):
    torch.ones(16 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    torch.ones(16 << 20)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _later_table_faults(mode: str) -> tuple[str, int]:
    import libcem

    src = str(Path(libcem.__file__).parents[1])  # the libcem under test, in a fresh process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not GLIBC, reason="malloc's thresholds are glibc's")
def test_kept_heap_serves_freed_tables_again_without_page_faults():
    kept, faults = _later_table_faults("keep")
    assert kept == "True"
    assert faults < 1000  # the freed blocks' pages, already mapped and touched
    _, default = _later_table_faults("default")
    if default > 12000:  # 4 KiB pages (with transparent huge pages on for all, far fewer)
        assert faults < default / 10


def test_tile_workers_keep_their_heap(monkeypatch):
    from libcem.denoiser import tiling

    calls = []
    monkeypatch.setattr(tiling, "keep_freed_memory", lambda: calls.append("kept") or True)
    monkeypatch.setattr(tiling.torch, "set_num_threads", lambda n: calls.append(n))
    tiling._start_worker()
    assert calls == [1, "kept"]
