from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medfed.errors import SerializationError
from medfed.records import Params
from medfed.serde import params_to_bytes
from medfed.tensor_file import open_params, read_layout


def _params() -> Params:
    return Params(
        [
            ("w", np.arange(12, dtype=np.float32).reshape(3, 4)),
            ("b", np.array([1.5, -2.0])),
            ("n", np.array(7, np.int64)),
            ("empty", np.zeros((0, 2), np.float32)),
            ("mask", np.array([True, False, True])),
        ]
    )


def _write(tmp_path: Path, blob: bytes) -> Path:
    path = tmp_path / "t.safetensors"
    path.write_bytes(blob)
    return path


def test_memory_mapped_params_equal_the_written_ones(tmp_path: Path) -> None:
    p = _params()
    path = _write(tmp_path, params_to_bytes(p, {"round": "4"}))
    q, meta = open_params(path)
    assert q == p and list(q) == list(p) and meta == {"round": "4"}
    assert isinstance(q["w"], np.memmap) and not q["w"].flags.writeable
    assert read_layout(path).specs == p.specs


def _forge(tmp_path: Path, mutate) -> Path:
    blob = params_to_bytes(Params({"a": np.ones(4, np.float32), "b": np.ones(2, np.float32)}))
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    data = blob[8 + n :]
    header, data = mutate(header, data)
    raw = json.dumps(header).encode()
    return _write(tmp_path, len(raw).to_bytes(8, "little") + raw + data)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h, d: ({**h, "a": {**h["a"], "dtype": "F8_E4M3"}}, d),
        lambda h, d: ({**h, "a": {**h["a"], "shape": [5]}}, d),
        lambda h, d: ({**h, "a": {**h["a"], "shape": [-4]}}, d),
        lambda h, d: ({**h, "b": {**h["b"], "data_offsets": [0, 8]}}, d),  # overlaps a
        lambda h, d: (h, d + b"\0\0\0\0"),  # trailing bytes
        lambda h, d: (h, d[:-4]),  # truncated
        lambda h, d: ({**h, "__metadata__": {**h["__metadata__"], "medfed.order": '["a"]'}}, d),
        lambda h, d: ({**h, "a": {**h["a"], "data_offsets": [0, "16"]}}, d),
        lambda h, d: ([1, 2], d),
    ],
)
def test_malformed_headers_are_refused(tmp_path: Path, mutate) -> None:
    path = _forge(tmp_path, mutate)
    with pytest.raises(SerializationError):
        open_params(path)


def test_header_length_beyond_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, (10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(SerializationError, match="header length"):
        read_layout(path)
    with pytest.raises(SerializationError):
        read_layout(_write(tmp_path, b"abc"))


# -- streamed writes ---------------------------------------------------------------------------


def test_write_params_gives_the_canonical_bytes_of_params_to_bytes(tmp_path: Path) -> None:
    from medfed.serde import sha256_hex
    from medfed.tensor_file import write_params

    p = Params(
        [
            *_params().items(),
            ("be", np.arange(4, dtype=">f4")),
            ("transposed", np.arange(12.0).reshape(3, 4).T),
            ("big", np.arange(3_000_000, dtype=np.float32)),  # several windows
        ]
    )
    blob = params_to_bytes(p, {"round": "2"})
    sha, size = write_params(tmp_path / "m.safetensors", p, {"round": "2"})
    assert (tmp_path / "m.safetensors").read_bytes() == blob
    assert (sha, size) == (sha256_hex(blob), len(blob))
    # memory-mapped params written again: the same bytes
    q, meta = open_params(tmp_path / "m.safetensors")
    assert write_params(tmp_path / "again.safetensors", q, meta) == (sha, size)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.safetensors", "m.safetensors"]


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary_one(tmp_path: Path) -> None:
    from medfed.tensor_file import write_params

    target = tmp_path / "m.safetensors"
    with pytest.raises(TypeError, match="cannot be stored"):
        write_params(target, Params({"c": np.zeros(2, np.complex64)}))
    assert list(tmp_path.iterdir()) == []
