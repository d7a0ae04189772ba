"""Content-addressed blob storage for the coordinator: tensors by sha256, never overwritten.

::

    ROOT/blobs/ab/abcdef…           a finished blob, named by the sha256 of its bytes
    ROOT/uploads/<upload id>.part   an upload in progress, written chunk by chunk

A blob appears under its name only once it is complete and its hash checked (written to a
temporary file, fsynced, renamed), so a crash never leaves a half blob that looks whole.
Uploads are resumable: each chunk is written at its offset and recorded once its own hash
matched, and the whole file is hashed again before it becomes a blob.

Params the coordinator makes itself (each round's model) are streamed into a blob with
:meth:`BlobStore.put_params` (``ROOT/blobs/.tmp-<pid>-…`` while being written), never built
as bytes in memory; temporary files of a process that died are removed on the next start.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import suppress
from pathlib import Path

import numpy as np

from medfed.errors import IntegrityError
from medfed.records import Params
from medfed.serde import params_header
from medfed.tensor_file import write_params_to

__all__ = ["BlobStore", "valid_sha256"]

# fullmatch, not match with ^…$: "$" also matches before a trailing newline
_SHA = re.compile(r"[0-9a-f]{64}")
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_READ = 1 << 20


def valid_sha256(value: str) -> bool:
    return bool(_SHA.fullmatch(value))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "uploads").mkdir(parents=True, exist_ok=True)
        self._remove_orphans()

    def path(self, sha256: str) -> Path:
        if not valid_sha256(sha256):
            raise ValueError("a blob name is 64 lowercase hex characters")
        return self.root / "blobs" / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return valid_sha256(sha256) and self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def put(self, data: bytes) -> str:
        """Store bytes; returns their sha256 (storing the same bytes twice is a no-op)."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def put_params(self, params: Params, metadata: Mapping[str, str] | None = None) -> str:
        """Store params as their canonical blob (that of ``params_to_bytes``); returns its sha256.

        Streamed: the tensors are written window by window into a temporary file, hashed as
        they go, so memory stays bounded whatever the model's size. Params that are already
        a memory map of exactly that blob (e.g. the job's initial model) are not written again.
        """
        head = params_header(params, metadata)
        stored = self._mapped_blob(params, head)
        if stored is not None:
            return stored
        fd, tmp = tempfile.mkstemp(dir=self.root / "blobs", prefix=f".tmp-{os.getpid()}-")
        try:
            with os.fdopen(fd, "wb") as fh:
                digest, _ = write_params_to(fh, params, metadata)
                fh.flush()
                os.fsync(fh.fileno())
            target = self.path(digest)
            if target.exists():
                Path(tmp).unlink()
                return digest
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def _mapped_blob(self, params: Params, head: bytes) -> str | None:
        """The name of the stored blob that ``params`` map read-only, byte for byte, if any."""
        arrays = [a for a in params.values() if a.nbytes]
        first = arrays[0] if arrays else None
        if not isinstance(first, np.memmap) or first.filename is None:
            return None
        path = Path(first.filename)
        if not self.exists(path.name) or path.resolve() != self.path(path.name).resolve():
            return None
        offset = len(head)
        for arr in arrays:
            if not (
                isinstance(arr, np.memmap)
                and isinstance(arr.base, mmap.mmap)
                and arr.mode == "r"
                and arr.filename == first.filename
                and arr.offset == offset
                and arr.flags.c_contiguous
                and arr.dtype == arr.dtype.newbyteorder("<")
            ):
                return None
            offset += arr.nbytes
        with open(path, "rb") as fh:
            if fh.read(len(head)) != head or os.fstat(fh.fileno()).st_size != offset:
                return None
        return path.name

    def _remove_orphans(self) -> None:
        """Remove the temporary files of put_params left by processes that no longer run."""
        for tmp in (self.root / "blobs").glob(".tmp-*-*"):
            pid = tmp.name.split("-")[1]
            if pid.isdigit() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)

    def read(self, sha256: str) -> bytes:
        data = self.path(sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(f"blob {sha256[:12]} is corrupt on disk")
        return data

    def read_range(self, sha256: str, start: int, stop: int) -> bytes:
        with open(self.path(sha256), "rb") as fh:
            fh.seek(start)
            return fh.read(max(0, stop - start))

    def iter_file(self, sha256: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        with open(self.path(sha256), "rb") as fh:
            fh.seek(start)
            remaining = None if stop is None else stop - start
            while remaining is None or remaining > 0:
                chunk = fh.read(_READ if remaining is None else min(_READ, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    # -- resumable uploads ----------------------------------------------------------------

    def _part(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise ValueError("bad upload id")
        return self.root / "uploads" / f"{upload_id}.part"

    def start_upload(self, upload_id: str, size: int) -> bool:
        """Make the upload's file (sparse, ``size`` bytes); False if it was there already."""
        part = self._part(upload_id)
        if part.exists():
            return False
        with open(part, "wb") as fh:
            fh.truncate(size)
        return True

    def write_chunk(self, upload_id: str, offset: int, data: bytes) -> None:
        with open(self._part(upload_id), "r+b") as fh:
            fh.seek(offset)
            fh.write(data)
        # no fsync per chunk: the whole file is hashed and fsynced once in finish_upload, so a
        # chunk lost to a power cut is caught there and the sender uploads again

    def finish_upload(self, upload_id: str, sha256: str) -> None:
        """Hash the assembled upload; move it into place, or raise IntegrityError."""
        part = self._part(upload_id)
        digest = hashlib.sha256()
        with open(part, "rb") as fh:
            while chunk := fh.read(_READ):
                digest.update(chunk)
            os.fsync(fh.fileno())
        if digest.hexdigest() != sha256:
            raise IntegrityError("the uploaded bytes do not match the announced sha256")
        target = self.path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            part.unlink()
        else:
            os.replace(part, target)
            _fsync_dir(target.parent)

    def discard_upload(self, upload_id: str) -> None:
        self._part(upload_id).unlink(missing_ok=True)
