"""The command line's memory settings for long CPU runs (:func:`configure`, at its start).

glibc's ``malloc`` serves a block above its mmap threshold (128 KiB, raised adaptively up to
32 MiB) with fresh pages from the kernel and returns them on ``free``, and trims its heap when the
free space at its top passes a threshold. A video or evaluation loop allocates and frees the same
frame-sized buffers every frame (NumPy, OpenCV, PyTorch all go through ``malloc``), so every
frame paid for zeroed pages and their faults again: measured, the guided filter's fit on a
1080p frame's quarter copy took 13.9 ms with the defaults and 6.6 ms with the heap kept, and
``endolight video`` at 1080p used 8-10 CPU-ms a frame less. Linux (glibc) only; elsewhere a no-op.

Transparent huge pages are turned off for the same reason (:func:`no_huge_pages`).
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value: a 4K I420 frame (12 MiB) stays in the heap
TRIM_THRESHOLD = 256 << 20  # free memory kept at the heap's top before it is returned
TOP_PAD = 64 << 20  # extra heap asked for at each growth
PR_SET_THP_DISABLE = 41  # prctl option (linux/prctl.h)


def _glibc() -> ctypes.CDLL | None:
    """Linux's C library, or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def reuse_freed_memory() -> bool:
    """Tune glibc's ``malloc`` so freed buffers are reused instead of unmapped; True if applied.

    Process-wide and irreversible, so the library never calls it: the command line does, at
    start. An application embedding endolight may call it once, before its frame loop.
    """
    libc = _glibc()
    if libc is None:
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


def no_huge_pages() -> bool:
    """Turn transparent huge pages off for this process; True if applied.

    x264 and NumPy ask the kernel for huge pages for large buffers (``madvise``), and it zeroes
    a whole 2 MiB page on its first touch. With the heap kept that happens only while a stream's
    buffers are first allocated, but all at once: a live 1080p stream's first frames spent
    20-40 ms each in it (``scripts/live_latency.py 1920 1080 --low-latency``: p99 57-82 ms with
    huge pages, 37-41 without); the steady rate measured no slower. Process-wide and inherited
    by child processes, so, as :func:`reuse_freed_memory`, only the command line calls it.
    Linux only; elsewhere a no-op.
    """
    libc = _glibc()
    if libc is None:
        return False
    return libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0


def configure() -> None:
    """The command line's settings: :func:`reuse_freed_memory` and :func:`no_huge_pages`
    (scripts and child processes that time what it does call this first)."""
    reuse_freed_memory()
    no_huge_pages()
