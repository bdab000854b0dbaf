"""Keep the server's resident memory bounded: large buffers go back to the kernel when freed.

Each thread that allocates (FastAPI's pool threads decode uploads, preprocess them and draw overlays)
gets its own glibc malloc arena, up to 8 per CPU. glibc raises its mmap threshold as large blocks
are freed, so image-sized buffers soon come from those arenas, and an arena keeps what was freed in
it: resident memory then grows with the number of threads times the image size (0.6 → 1.9 GB here
after one burst of 50 requests with an 821×957 image; 3.2 GB with 64 arenas, as on a larger machine:
``benchmarks/results/serve-leak.md``). A fixed threshold makes every block above it its own
mapping, returned to the kernel by ``free`` (about 1.0 GB there, flat).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MMAP_THRESHOLD = 128 * 1024
"""Bytes from which a block is its own mapping (glibc's initial threshold, held fixed)."""
_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold for this process (``mallopt(M_MMAP_THRESHOLD, threshold)``).

    Leaves it alone when ``MALLOC_MMAP_THRESHOLD_`` is set (the user chose) or the C library is not
    glibc (musl, macOS: nothing to do). Returns whether it was set.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return False
    return bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, threshold))
