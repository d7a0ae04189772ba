"""The coordinator's content-addressed blob store and its resumable uploads."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import medfed.federation.coordinator.blobs as blobs_module
from medfed.errors import IntegrityError
from medfed.federation.coordinator.blobs import BlobStore, valid_sha256


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "state")


# -- put and read ------------------------------------------------------------------------------


def test_put_read_exists_and_size(store: BlobStore) -> None:
    data = b"the global model, round 3"
    digest = store.put(data)
    assert digest == sha(data)
    assert store.path(digest) == store.root / "blobs" / digest[:2] / digest
    assert store.exists(digest) and store.size(digest) == len(data)
    assert store.read(digest) == data
    # the same bytes again: the same name, one file, no temporary file left behind
    assert store.put(data) == digest
    assert files_under(store.root) == {f"blobs/{digest[:2]}/{digest}"}
    empty = store.put(b"")
    assert empty == sha(b"") and store.read(empty) == b"" and store.size(empty) == 0


def test_exists_is_false_for_absent_and_malformed_names(store: BlobStore) -> None:
    assert not store.exists(sha(b"never stored"))
    for bad in ("", "abc", "A" * 64, "g" * 64, "a" * 63, "a" * 65, "../" + "a" * 61):
        assert not store.exists(bad)


def test_read_range(store: BlobStore) -> None:
    digest = store.put(b"0123456789")
    assert store.read_range(digest, 0, 10) == b"0123456789"
    assert store.read_range(digest, 2, 5) == b"234"
    assert store.read_range(digest, 4, 4) == b""
    assert store.read_range(digest, 5, 3) == b""
    assert store.read_range(digest, 7, 100) == b"789"  # clipped at the end
    assert store.read_range(digest, 50, 60) == b""


def test_iter_file_streams_in_bounded_chunks(store: BlobStore) -> None:
    data = os.urandom((5 << 19) + 123)  # 2.5 MiB and a bit: more than one read
    digest = store.put(data)
    chunks = list(store.iter_file(digest))
    assert b"".join(chunks) == data
    assert len(chunks) == 3 and max(map(len, chunks)) <= 1 << 20
    assert b"".join(store.iter_file(digest, 1000)) == data[1000:]
    stop = (1 << 20) + 5000
    assert b"".join(store.iter_file(digest, 1000, stop)) == data[1000:stop]
    assert b"".join(store.iter_file(digest, 10, 10)) == b""
    assert b"".join(store.iter_file(digest, len(data) - 3, len(data) + 100)) == data[-3:]


def test_a_blob_corrupted_on_disk_is_detected(store: BlobStore) -> None:
    data = b"weights " * 1000
    digest = store.put(data)
    path = store.path(digest)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="corrupt"):
        store.read(digest)
    path.write_bytes(data[:-1])  # truncated
    with pytest.raises(IntegrityError, match="corrupt"):
        store.read(digest)


# -- resumable uploads ---------------------------------------------------------------------


def upload(store: BlobStore, upload_id: str, data: bytes, chunk: int, order: list[int]) -> None:
    store.start_upload(upload_id, len(data))
    for index in order:
        store.write_chunk(upload_id, index * chunk, data[index * chunk : (index + 1) * chunk])


def test_upload_in_chunks_out_of_order(store: BlobStore) -> None:
    data = os.urandom(10_000)
    upload(store, "upload-1", data, 3000, [3, 1, 0, 2])
    store.finish_upload("upload-1", sha(data))
    assert store.read(sha(data)) == data
    assert not (store.root / "uploads" / "upload-1.part").exists()
    assert files_under(store.root) == {f"blobs/{sha(data)[:2]}/{sha(data)}"}


def test_an_interrupted_upload_resumes_where_it_stopped(store: BlobStore) -> None:
    data = os.urandom(9_000)
    upload(store, "upload-2", data, 3000, [0, 2])
    # the node comes back: starting the same upload again keeps what was written
    store.start_upload("upload-2", len(data))
    store.write_chunk("upload-2", 3000, data[3000:6000])
    store.finish_upload("upload-2", sha(data))
    assert store.read(sha(data)) == data


def test_an_upload_with_the_wrong_bytes_never_becomes_a_blob(store: BlobStore) -> None:
    data = os.urandom(6_000)
    announced = sha(b"something else")
    upload(store, "upload-3", data, 3000, [1, 0])
    with pytest.raises(IntegrityError, match="do not match"):
        store.finish_upload("upload-3", announced)
    assert not store.exists(announced) and not store.exists(sha(data))
    assert not (store.root / "blobs").joinpath(announced[:2], announced).exists()
    # a chunk never sent leaves zeros, which do not hash right either
    upload(store, "upload-4", data, 3000, [0])
    with pytest.raises(IntegrityError):
        store.finish_upload("upload-4", sha(data))
    assert not store.exists(sha(data))
    store.discard_upload("upload-3")
    store.discard_upload("upload-4")
    store.discard_upload("upload-4")  # twice is fine
    assert files_under(store.root) == set()


def test_finishing_an_upload_of_a_blob_already_stored(store: BlobStore) -> None:
    data = b"the same update, uploaded twice"
    digest = store.put(data)
    upload(store, "upload-5", data, 8, [0, 1, 2, 3])
    store.finish_upload("upload-5", digest)
    assert store.read(digest) == data
    assert files_under(store.root) == {f"blobs/{digest[:2]}/{digest}"}


# -- crashes -------------------------------------------------------------------------------


def test_put_writes_a_synced_temporary_file_then_renames_it(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Any]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", fd))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        assert Path(src).read_bytes() == b"payload"  # complete before it gets its name
        calls.append(("replace", (Path(src), Path(dst))))
        real_replace(src, dst)

    monkeypatch.setattr(blobs_module.os, "fsync", fsync)
    monkeypatch.setattr(blobs_module.os, "replace", replace)
    digest = store.put(b"payload")
    kinds = [kind for kind, _ in calls]
    assert kinds[:2] == ["fsync", "replace"]  # the file's data is on disk before the rename
    (src, dst) = next(arg for kind, arg in calls if kind == "replace")
    assert dst == store.path(digest)
    assert src.parent == dst.parent and src.name.startswith(".tmp-")  # same directory: atomic


def test_a_failed_put_leaves_no_blob_and_no_temporary_file(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(blobs_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        store.put(b"payload")
    assert not store.exists(sha(b"payload"))
    assert files_under(store.root) == set()


def test_a_crash_during_put_leaves_no_visible_blob(tmp_path: Path) -> None:
    """The process dies after writing the bytes and before the rename, as in a power cut."""
    root = tmp_path / "state"
    child = (
        "import os, sys\n"
        "import medfed.federation.coordinator.blobs as b\n"
        "b.os.replace = lambda src, dst: os._exit(17)\n"
        "b.BlobStore(sys.argv[1]).put(b'payload' * 1000)\n"
    )
    proc = subprocess.run([sys.executable, "-c", child, str(root)], timeout=60)
    assert proc.returncode == 17
    store = BlobStore(root)
    digest = sha(b"payload" * 1000)
    leftovers = files_under(root)
    assert len(leftovers) == 1 and Path(leftovers.pop()).name.startswith(".tmp-")
    assert not store.exists(digest)
    with pytest.raises(FileNotFoundError):
        store.read(digest)
    # storing the same bytes after the restart works, and the leftover does not get in the way
    assert store.put(b"payload" * 1000) == digest and store.read(digest) == b"payload" * 1000


# -- names from the network --------------------------------------------------------------------

BAD_SHAS = [
    "../../../../etc/passwd",
    "../" + "a" * 61,
    "a" * 62 + "/x",
    "A" * 64,
    "a" * 63,
    "a" * 65,
    "a" * 64 + "\n",
    "",
]
BAD_UPLOAD_IDS = [
    "../../etc/passwd",
    "../blobs/x",
    "abc/defgh",
    "abc\\defgh",
    "short",
    "x" * 65,
    "abcdefgh\n",
    "abcdefgh.part",
    "",
]


@pytest.mark.parametrize("name", BAD_SHAS)
def test_blob_names_that_are_not_a_sha256_are_refused(store: BlobStore, name: str) -> None:
    assert not valid_sha256(name)
    with pytest.raises(ValueError):
        store.path(name)
    with pytest.raises(ValueError):
        store.read(name)
    with pytest.raises(ValueError):
        store.read_range(name, 0, 10)
    with pytest.raises(ValueError):
        list(store.iter_file(name))
    with pytest.raises(ValueError):
        store.size(name)
    assert not store.exists(name)


@pytest.mark.parametrize("upload_id", BAD_UPLOAD_IDS)
def test_bad_upload_ids_are_refused(tmp_path: Path, upload_id: str) -> None:
    store = BlobStore(tmp_path / "state")
    with pytest.raises(ValueError, match="bad upload id"):
        store.start_upload(upload_id, 10)
    with pytest.raises(ValueError, match="bad upload id"):
        store.write_chunk(upload_id, 0, b"x")
    with pytest.raises(ValueError, match="bad upload id"):
        store.finish_upload(upload_id, sha(b""))
    with pytest.raises(ValueError, match="bad upload id"):
        store.discard_upload(upload_id)
    assert files_under(tmp_path) == set()


# -- params streamed into a blob ---------------------------------------------------------------


def _model() -> Any:
    import numpy as np

    from medfed.records import Params

    return Params([("w", np.arange(3_000_000, dtype=np.float32)), ("b", np.ones(3, np.float64))])


def test_put_params_stores_the_canonical_blob(store: BlobStore) -> None:
    from medfed.serde import params_to_bytes

    params = _model()
    digest = store.put_params(params, {"round": "3"})
    assert store.read(digest) == params_to_bytes(params, {"round": "3"})
    assert store.put_params(params, {"round": "3"}) == digest  # the same again: a no-op
    assert files_under(store.root) == {f"blobs/{digest[:2]}/{digest}"}


def test_params_that_map_a_stored_blob_are_not_written_again(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medfed.tensor_file import open_params

    digest = store.put_params(_model())
    mapped, _ = open_params(store.path(digest))
    monkeypatch.setattr(
        blobs_module, "write_params_to", lambda *a, **k: pytest.fail("written again")
    )
    assert store.put_params(mapped) == digest
    # other metadata is another blob: that one is written
    monkeypatch.undo()
    other = store.put_params(mapped, {"round": "1"})
    assert other != digest and store.exists(other)


def test_temporary_files_of_a_dead_process_are_removed_on_start(tmp_path: Path) -> None:
    root = tmp_path / "state"
    child = (
        "import os, sys\n"
        "import numpy as np\n"
        "import medfed.federation.coordinator.blobs as b\n"
        "from medfed.records import Params\n"
        "b.os.replace = lambda src, dst: os._exit(17)\n"
        "b.BlobStore(sys.argv[1]).put_params(Params({'w': np.ones(10, np.float32)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", child, str(root)], timeout=60)
    assert proc.returncode == 17
    leftovers = files_under(root)
    assert len(leftovers) == 1 and Path(leftovers.pop()).name.startswith(".tmp-")
    mine = root / "blobs" / f".tmp-{os.getpid()}-in-progress"
    mine.write_bytes(b"a live process's temporary file")
    BlobStore(root)
    assert files_under(root) == {f"blobs/{mine.name}"}  # the dead one's only
