"""A tensor file (safetensors, as written by :mod:`medfed.serde`) opened without loading it.

The header alone gives the layout (names, shapes, dtypes, order), which is what an upload is
checked against; the arrays are read-only memory maps of the file, so checking and
aggregating a model of several GB needs no second copy of it in memory.

The header comes from another party, so it is checked strictly before any byte is mapped:
size limits, known dtypes only, shapes that match their byte ranges, ranges that tile the
data section exactly (no overlap, no gap, nothing past the end).

:func:`write_params` writes the same bytes as :func:`medfed.serde.params_to_bytes` without
building them in memory: the header, then each tensor window by window, hashed as written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from medfed.errors import IntegrityError, SerializationError
from medfed.records import Params, TensorSpec
from medfed.scan import byte_windows

__all__ = ["TensorFile", "open_params", "read_layout", "write_params", "write_params_to"]

_MAX_HEADER = 100_000_000
_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}


@dataclass(frozen=True)
class TensorFile:
    """The checked header of a tensor file: layout, metadata and where each tensor lies."""

    path: Path
    specs: tuple[TensorSpec, ...]
    metadata: dict[str, str]
    offsets: dict[str, tuple[int, int]]  # absolute [start, stop) in the file
    dtypes: dict[str, str]  # numpy dtype strings (little-endian)


def read_layout(path: str | os.PathLike[str]) -> TensorFile:
    """Parse and check a tensor file's header, reading nothing else."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise SerializationError("not a tensor file: shorter than its header length")
        n = int.from_bytes(head, "little")
        if n > _MAX_HEADER or n > size - 8:
            raise SerializationError("not a tensor file: header length beyond the file")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SerializationError(f"not a tensor file: header is not JSON ({exc})") from None
        except RecursionError:  # 200k nested brackets: valid JSON, but no tensor header
            raise SerializationError("not a tensor file: header nested too deeply") from None
    if not isinstance(header, dict):
        raise SerializationError("not a tensor file: header is not an object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise SerializationError("tensor file metadata must map strings to strings")
    from medfed.serde import FORMAT_VERSION

    if meta.get("medfed.format") != FORMAT_VERSION:
        raise IntegrityError("tensor file format version is not this medfed's; upgrade medfed")
    try:
        order = json.loads(meta.pop("medfed.order"))
    except (KeyError, json.JSONDecodeError, RecursionError):
        raise SerializationError("tensor file has no valid medfed order header") from None
    meta.pop("medfed.format")
    if (
        not isinstance(order, list)
        or sorted(order) != sorted(header)
        or len(set(order)) != len(order)
    ):
        raise IntegrityError("tensor file's order header does not list exactly its tensors")

    data_start = 8 + n
    spans: list[tuple[int, int, str]] = []
    specs: list[TensorSpec] = []
    offsets: dict[str, tuple[int, int]] = {}
    dtypes: dict[str, str] = {}
    for name in order:
        entry = header[name]
        if not isinstance(name, str) or not isinstance(entry, dict):
            raise SerializationError("tensor file entries must be objects keyed by name")
        code, shape, span = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if code not in _DTYPES:
            raise SerializationError(f"tensor {name!r}: unsupported dtype {code!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise SerializationError(f"tensor {name!r}: shape must be non-negative integers")
        if not (
            isinstance(span, list)
            and len(span) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in span)
        ):
            raise SerializationError(f"tensor {name!r}: bad data_offsets")
        dtype = np.dtype(_DTYPES[code])
        start, stop = span
        if not 0 <= start <= stop or stop - start != math.prod(shape) * dtype.itemsize:
            raise SerializationError(f"tensor {name!r}: byte range does not match its shape")
        spans.append((start, stop, name))
        specs.append(TensorSpec(name, tuple(shape), dtype.newbyteorder("=").name))
        offsets[name] = (data_start + start, data_start + stop)
        dtypes[name] = _DTYPES[code]
    position = 0
    for start, stop, name in sorted(spans):
        if start != position:
            raise SerializationError(f"tensor {name!r}: byte ranges overlap or leave gaps")
        position = stop
    if data_start + position != size:
        raise SerializationError("tensor file size does not match its header")
    return TensorFile(p, tuple(specs), meta, offsets, dtypes)


def open_params(path: str | os.PathLike[str]) -> tuple[Params, dict[str, str]]:
    """Params whose arrays are read-only memory maps of the file (nothing is copied)."""
    tf = read_layout(path)
    arrays = []
    for spec in tf.specs:
        start, stop = tf.offsets[spec.name]
        if stop == start:
            arr = np.zeros(spec.shape, dtype=tf.dtypes[spec.name])
            arr.flags.writeable = False
        else:
            arr = np.memmap(
                tf.path, dtype=tf.dtypes[spec.name], mode="r", offset=start, shape=spec.shape
            )
        arrays.append((spec.name, arr))
    return Params(arrays), dict(tf.metadata)


def write_params_to(
    out: BinaryIO, params: Params, metadata: Mapping[str, str] | None = None
) -> tuple[str, int]:
    """Write params' canonical blob into ``out``, streamed; returns its (sha256, size).

    The bytes (and so the sha256) are those of :func:`medfed.serde.params_to_bytes`, but no
    copy of the tensors is made: each is written in windows, and a memory-mapped tensor's
    pages are released behind the write, so memory stays bounded for any model size.
    """
    from medfed.serde import params_header

    head = params_header(params, metadata)
    digest = hashlib.sha256(head)
    out.write(head)
    size = len(head)
    for tensor in params.values():
        for window in byte_windows(tensor):
            digest.update(window)
            out.write(window)
            size += len(window)
    return digest.hexdigest(), size


def write_params(
    path: str | os.PathLike[str], params: Params, metadata: Mapping[str, str] | None = None
) -> tuple[str, int]:
    """Atomically write params as a tensor file, streamed; returns its (sha256, size).

    A temporary file next to ``path`` is written, fsynced and renamed, so a crash leaves
    either no file or the whole one (and at most a ``.name.*`` temporary file).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            result = write_params_to(fh, params, metadata)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return result
