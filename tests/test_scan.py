"""Scanning arrays in windows: the same values, and memory-mapped pages released behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from medfed.math.aggregate import is_finite
from medfed.records import Params
from medfed.scan import byte_windows, windows
from medfed.serde import params_to_bytes, sha256_hex
from medfed.tensor_file import open_params, write_params

MiB = 1 << 20


def _status(key: str) -> int:
    """A /proc/self/status figure in MiB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current VmRSS
    except OSError:
        return False
    return True


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _reset_peak(),
    reason="needs /proc/self/clear_refs (Linux) to measure peak memory",
)


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(10, dtype=np.float32),
        np.arange(24, dtype=np.float64).reshape(2, 3, 4),
        np.arange(12, dtype=">i4").reshape(3, 4),
        np.arange(12.0).reshape(3, 4).T,  # not contiguous
        np.array(3.5),
        np.zeros((0, 4), np.float32),
        np.array([True, False, True]),
    ],
    ids=["f32", "3d", "big-endian", "transposed", "scalar", "empty", "bool"],
)
def test_windows_hold_every_value_once_in_c_order(arr: np.ndarray) -> None:
    parts = list(windows(arr, nbytes=arr.itemsize * 5))
    assert all(p.ndim == 1 and p.size <= 5 for p in parts)
    joined = np.concatenate(parts) if parts else np.zeros(0, arr.dtype)
    np.testing.assert_array_equal(joined, arr.reshape(-1))
    raw = b"".join(bytes(w) for w in byte_windows(arr, nbytes=arr.itemsize * 5))
    assert raw == np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def _zeros_file(tmp_path: Path, nbytes: int) -> Path:
    """A tensor file of ``nbytes`` of float32 zeros, written without holding them."""
    raw = tmp_path / "zeros.raw"
    with open(raw, "wb") as fh:
        fh.truncate(nbytes)
    zeros = np.memmap(raw, dtype="<f4", mode="r", shape=(nbytes // 8, 2))
    path = tmp_path / "model.safetensors"
    write_params(path, Params({"w": zeros, "b": np.ones(3, np.float32)}))
    raw.unlink()
    return path


@linux_only
def test_scanning_a_memory_mapped_model_keeps_memory_bounded(tmp_path: Path) -> None:
    size = 256 * MiB
    path = _zeros_file(tmp_path, size)
    params, _ = open_params(path)
    _reset_peak()
    base = _status("VmHWM")
    assert is_finite(params)
    sha, n = write_params(tmp_path / "copy.safetensors", params)
    growth = _status("VmHWM") - base
    assert growth < 64, f"peak memory grew by {growth} MiB scanning a {size // MiB} MiB model"
    assert n == os.path.getsize(path)
    with open(path, "rb") as fh:
        assert sha == sha256_hex(fh.read())
    # and without the release, the same scan does grow by the model's size: the test measures
    _reset_peak()
    base = _status("VmHWM")
    assert np.isfinite(np.sum(params["w"]))
    assert _status("VmHWM") - base > size // MiB // 2


def test_a_nan_deep_inside_a_memory_mapped_tensor_is_found(tmp_path: Path) -> None:
    values = np.zeros(3_000_000, np.float32)
    values[2_900_000] = np.nan
    path = tmp_path / "m.safetensors"
    path.write_bytes(params_to_bytes(Params({"w": values})))
    params, _ = open_params(path)
    assert not is_finite(params)
    assert is_finite(Params({"w": np.zeros(3_000_000, np.float32)}))
