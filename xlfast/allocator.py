"""Keep freed memory for reuse in long loops of same-sized steps (training).

glibc returns a freed block larger than its mmap threshold (at most 32 MB by default) straight to the
system, so a training step that allocates the same large tensors every time faults each of their pages in
again, and the kernel zeroes every page: that was the system time of a training step. Measured on a
shp-es step (subword ave, batch 16, 2 cores, 10 steps per process): logits materialised 84–109 ms of
system time and 22–36k page faults per step, fused output layer 34–41 ms and 9–15k, fused with these
thresholds 13 ms and 4–5k; peak resident memory unchanged (1.23–1.27 GB). What faults remain: torch
allocates 64-byte aligned (posix_memalign), and a freed block followed by small allocations is then
sometimes not large enough for the next aligned request of the same size, so the heap grows instead.
"""
from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Serve blocks up to 1 GB from the heap and keep up to 1 GB of freed heap memory (glibc's mallopt);
    True where it took effect (glibc), False elsewhere (a no-op)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
