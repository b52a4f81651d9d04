"""The C heap of a process that denoises tile after tile: freed memory kept for the next one.

Every pass builds tables of a whole tile (the patches of each channel, the aggregate of the
patch estimates: 260 MB each for a 707 x 639 colour tile at sigma 25) and frees them at its
end. glibc's malloc maps blocks that large afresh each time and unmaps them when freed, and
it hands the free top of its heap back to the system; each new page is then a page fault
that the kernel fills with zeros. A tile worker of the 12-megapixel photo spent 2.0-2.3 s of
each 15 s tile in the kernel, at 1.1-1.2 million faults per tile (session 34,
docs/denoise-log.md). `keep_freed_memory` makes malloc serve those blocks from its heap and
keep what is freed there, so from the second tile on a worker reuses its own pages: 0.0-0.4 s
in the kernel and almost no faults, at a higher resident peak (the largest block the heap
held stays mapped until the process ends).

It changes the whole process, for good (glibc has no way back to its adaptive thresholds), so
only the processes libcem owns take it: the tile workers (`tiling`) and the `libcem denoise`
command. A script that calls `denoise` itself may call it too.
"""

from __future__ import annotations

import ctypes
import platform

MMAP_THRESHOLD = 1 << 30  # blocks smaller than this come from the heap, not from their own mapping
TRIM_THRESHOLD = (1 << 31) - 1  # the free top of the heap is given back only beyond this (never, here)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def keep_freed_memory() -> bool:
    """On Linux with glibc, set malloc's thresholds so that freed blocks below MMAP_THRESHOLD
    stay in the heap for the next allocation (module docstring). Returns whether it was set:
    False on other systems and C libraries (macOS, Windows, musl), where nothing changes."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library this process runs on
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
