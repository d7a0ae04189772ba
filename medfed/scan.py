"""Arrays scanned window by window, so that scanning a memory-mapped file keeps memory bounded.

A memory-mapped file's pages count towards the process's resident memory once they are
touched: checking a 4 GB update for NaN by touching all of it makes the process 4 GB bigger,
although nothing was copied. :func:`windows` hands out consecutive windows of an array; when
the array is a read-only memory map (what :func:`medfed.tensor_file.open_params` makes), the
pages of each window are handed back to the kernel (``madvise(MADV_DONTNEED)``) once the
caller moves on. The bytes stay in the page cache, which the kernel reclaims under pressure;
nothing is lost, a later read maps them again. Elsewhere (other platforms, in-memory arrays)
the windows are plain views.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["WINDOW", "byte_windows", "windows"]

WINDOW = 8 << 20  # bytes per window: large enough for fast numpy and I/O, small next to a model
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


def windows(arr: np.ndarray, nbytes: int = WINDOW) -> Iterator[np.ndarray]:
    """Consecutive 1-D windows of ``arr``'s values in C order, about ``nbytes`` each.

    The windows are views when ``arr`` is C-contiguous (else of one contiguous copy). Use
    each window before asking for the next: a memory-mapped window's pages are released then.
    """
    flat = np.ascontiguousarray(arr).reshape(-1)
    step = max(1, nbytes // max(1, arr.itemsize))
    release = _releaser(arr) if flat.size > step else None
    done = 0
    try:
        for start in range(0, flat.size, step):
            stop = min(flat.size, start + step)
            yield flat[start:stop]
            if release is not None:
                release(done, stop * arr.itemsize)
                done = stop * arr.itemsize
    finally:
        if release is not None and done < flat.size * arr.itemsize:
            release(done, flat.size * arr.itemsize)  # the caller stopped early


def byte_windows(arr: np.ndarray, nbytes: int = WINDOW) -> Iterator[memoryview]:
    """The little-endian bytes of ``arr`` (as safetensors stores them), window by window."""
    little = arr.dtype.newbyteorder("<")
    for window in windows(arr, nbytes):
        if window.dtype != little:
            window = window.astype(little)
        yield window.view(np.uint8).data


def _releaser(arr: np.ndarray) -> Callable[[int, int], None] | None:
    """For a read-only memory map of a file: release the pages of its bytes [lo, hi)."""
    if (
        _DONTNEED is None
        or not isinstance(arr, np.memmap)
        or not isinstance(arr.base, mmap.mmap)  # a view of a memmap: left alone
        or arr.mode != "r"  # copy-on-write pages may hold changes: never dropped
        or not arr.flags.c_contiguous
    ):
        return None
    mm = arr.base
    origin = int(arr.offset) % mmap.ALLOCATIONGRANULARITY  # where the array starts in the map

    def release(lo: int, hi: int) -> None:
        start = origin + lo
        start -= start % mmap.PAGESIZE
        if hi > lo and start < len(mm):
            mm.madvise(_DONTNEED, start, origin + hi - start)

    return release
