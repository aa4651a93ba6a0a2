"""Keep freed memory for reuse instead of handing it back to the OS (glibc only).

A compiled SGN step allocates and frees the same large arrays on every call and every
CG iteration (activations, their products with ``v``, parameter-sized blocks). With
glibc's defaults, blocks over its mmap threshold are mapped fresh and unmapped on free,
and the top of the heap is trimmed, so each call page-faults its working set back in.
Raising the mmap threshold to glibc's largest (32 MiB) and the trim threshold to 1 GiB
lets ``malloc`` reuse freed blocks. Either setting alone made things slower; what
both together gain is measured in the docs ("Performance").

It changes the allocator of the whole process, so importing :mod:`sgn_theano` does
not do it: call :func:`reuse_freed_memory` (``sgn-bench`` and the scripts under
``benchmarks/`` do, at start). The environment variable ``SGN_THEANO_MALLOC_TUNING=0``
turns the call into a no-op. The cost: the process keeps up to 1 GiB of freed memory
instead of returning it to the OS.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "reuse_freed_memory"]

#: glibc's ``mallopt`` parameter numbers (``malloc.h``).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap (32 MiB, the largest glibc accepts on 64 bit).
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the top of the heap kept before trimming.
TRIM_THRESHOLD = 2**30


def reuse_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring).

    Returns
    -------
    bool
        True if both were set; False where the C library is not glibc, or
        ``SGN_THEANO_MALLOC_TUNING=0`` is set, and nothing was changed.
    """
    if os.environ.get("SGN_THEANO_MALLOC_TUNING", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    # mallopt returns 1 on success; set the mmap threshold first (it also fixes the
    # otherwise dynamic trim threshold, which is set next).
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
