"""Chunked, resumable transfers of blobs between a participant and the coordinator.

Uploads send a file (or bytes) chunk by chunk, each chunk read from disk when it is sent and
carrying its sha256 (``X-Chunk-Sha256``), which the coordinator checks before writing it.
After a broken connection the upload asks the coordinator which chunks it holds and sends
only the others. Downloads fetch byte ranges written straight to a file; each range carries
the coordinator's sha256 of it, and a range that arrives corrupted is fetched again (only
that range). The whole blob's sha256 is checked at the end either way. Memory holds at most
one chunk, whatever the blob's size.

A transfer has no deadline. It goes on as long as it makes progress: bytes reaching further
into the blob than before (sending the same chunk again after a cut is not progress). Every
request's socket timeouts are bounded by the time left before the stall window runs out, and
connection errors are retried with backoff; when nothing moved for the whole stall window
the transfer fails with :class:`TransferStalled`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from medfed.errors import IntegrityError, MedfedError
from medfed.federation.transfer.client import ApiError, PinMismatch, TransportError

if TYPE_CHECKING:
    from medfed.federation.transfer.client import FederationClient

__all__ = ["CHUNK_HEADER", "Progress", "TransferStalled", "download_to", "upload"]

CHUNK_HEADER = "X-Chunk-Sha256"
RANGE = 8 << 20  # bytes asked for per download request (the coordinator serves at most 8 MiB)
MAX_CHUNK = 64 << 20  # the largest upload chunk size this client accepts from a coordinator
BAD_CHUNKS = 3  # a chunk that arrives corrupted this many times in a row ends the transfer
_READ = 8 << 20
_T = TypeVar("_T")


class TransferStalled(TransportError):
    """A transfer made no progress for the whole stall window."""


class Progress:
    """How far a transfer got, and when it last got further: the stall detector."""

    def __init__(self, what: str, stall_seconds: float) -> None:
        self.what = what
        self.stall = stall_seconds
        self.best = -1
        self.at = time.monotonic()

    def reach(self, position: int) -> None:
        """The transfer reached ``position`` bytes; progress only if further than ever."""
        if position > self.best:
            self.best = position
            self.at = time.monotonic()

    def remaining(self) -> float:
        return self.at + self.stall - time.monotonic()

    def timeout(self) -> float:
        """The socket timeout for the next request: what is left of the stall window."""
        return max(1.0, self.remaining())

    def check(self, error: Exception) -> None:
        """Raise TransferStalled if the stall window ran out; ``error`` is the last failure."""
        if self.remaining() <= 0:
            raise TransferStalled(
                f"the {self.what} made no progress for {self.stall:g} s (last error: {error}); "
                "check the connection to the coordinator and run it again"
            )


def retry(progress: Progress, call: Callable[[float], _T]) -> _T:
    """``call(timeout)`` until it succeeds; transient failures are retried until a stall."""
    delay = 0.25
    while True:
        try:
            return call(progress.timeout())
        except (TransferStalled, PinMismatch):  # retrying cannot help
            raise
        except (TransportError, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status < 500:
                raise  # a refusal: sending it again would be refused again
            progress.check(exc)
            time.sleep(max(0.0, min(delay, progress.remaining())))
            delay = min(delay * 2, 5.0)


# -- uploads -----------------------------------------------------------------------------------


class Source:
    """What an upload reads its chunks from: bytes in memory, or an open file on disk."""

    def __init__(self, *, data: bytes | None = None, fd: int | None = None) -> None:
        if (data is None) == (fd is None):
            raise ValueError("give data or fd")
        self._data = None if data is None else memoryview(data)
        self._fd = fd
        self.size = len(self._data) if self._data is not None else os.fstat(fd or 0).st_size

    def read(self, offset: int, length: int) -> bytes:
        if self._data is not None:
            return bytes(self._data[offset : offset + length])
        assert self._fd is not None
        parts, done = [], 0
        while done < length:
            part = os.pread(self._fd, length - done, offset + done)
            if not part:
                raise IntegrityError("the file being uploaded became shorter; upload it again")
            parts.append(part)
            done += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def file_sha256(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while part := os.pread(fd, _READ, offset):
        digest.update(part)
        offset += len(part)
    return digest.hexdigest()


def upload(client: FederationClient, source: Source, sha256: str) -> str:
    """Upload ``source`` (whose sha256 the caller computed) in chunks; returns the sha256.

    A completion the coordinator refuses as a conflict (chunks it lost, or a completion that
    raced a retry of itself) starts the upload again, which resumes from what it holds.
    """
    progress = Progress(f"upload of {sha256[:12]}", client.stall_seconds)
    announce = json.dumps({"sha256": sha256, "size": source.size}).encode()

    def start(timeout: float) -> Any:
        return client.request("POST", "/v1/uploads", body=announce, timeout=timeout).json()

    for attempt in range(3):
        state = retry(progress, start)
        if state.get("complete"):
            return sha256
        upload_id, chunk = str(state["id"]), int(state["chunk_size"])
        if not 0 < chunk <= MAX_CHUNK:
            raise MedfedError(f"the coordinator asked for chunks of {chunk} bytes; upgrade medfed")
        received = {int(i) for i in state.get("received", [])}
        for index in range(-(-source.size // chunk)):
            if index not in received:
                received = _send_chunk(client, progress, source, upload_id, index, chunk, received)
            progress.reach(min(source.size, (index + 1) * chunk))

        def complete(timeout: float, upload_id: str = upload_id) -> Any:
            path = f"/v1/uploads/{upload_id}/complete"
            return client.request("POST", path, body=b"{}", timeout=timeout).json()

        try:
            retry(progress, complete)
            return sha256
        except ApiError as exc:
            if exc.status != 409 or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _send_chunk(
    client: FederationClient,
    progress: Progress,
    source: Source,
    upload_id: str,
    index: int,
    chunk: int,
    received: set[int],
) -> set[int]:
    """Send one chunk until the coordinator holds it; returns the chunks it holds."""
    offset = index * chunk
    data = source.read(offset, min(chunk, source.size - offset))
    headers = {CHUNK_HEADER: hashlib.sha256(data).hexdigest()}
    path = f"/v1/uploads/{upload_id}/chunks/{index}"
    refused = 0
    delay = 0.25
    while True:
        try:
            with client.stream(
                "PUT",
                path,
                body=data,
                headers=headers,
                timeout=progress.timeout(),
                on_sent=lambda n: progress.reach(offset + n),
            ) as response:
                response.read()
            return received | {index}
        except (TransferStalled, PinMismatch):  # retrying cannot help
            raise
        except ApiError as exc:
            if exc.status < 500:
                # a chunk whose hash did not match what arrived was corrupted on the way: send
                # it again (a few times); any other refusal ends the upload
                refused += 1
                if exc.status != 400 or "does not match" not in exc.detail or refused >= BAD_CHUNKS:
                    raise
                continue
            progress.check(exc)
            time.sleep(max(0.0, min(delay, progress.remaining())))
            delay = min(delay * 2, 5.0)
        except TransportError as exc:
            progress.check(exc)
            time.sleep(max(0.0, min(delay, progress.remaining())))
            delay = min(delay * 2, 5.0)
            try:  # the chunk may have arrived before the connection broke
                status = client.request(
                    "GET", f"/v1/uploads/{upload_id}", timeout=progress.timeout()
                ).json()
                received = {int(i) for i in status.get("received", [])}
            except TransportError:
                continue
            if index in received:
                return received


# -- downloads ---------------------------------------------------------------------------------


def download_to(
    client: FederationClient, sha256: str, out: BinaryIO, *, resume: bool = False
) -> int:
    """Download blob ``sha256`` into the file ``out`` by ranges; returns its size.

    With ``resume``, what ``out`` already holds (an earlier, broken attempt) is kept and the
    download goes on after it. Raises IntegrityError if the blob does not match its sha256.
    """
    fd = out.fileno()
    whole = hashlib.sha256()
    offset = 0
    if resume:
        while part := os.pread(fd, _READ, offset):
            whole.update(part)
            offset += len(part)
    progress = Progress(f"download of {sha256[:12]}", client.stall_seconds)
    size: int | None = None
    bad = 0
    while size is None or offset < size:
        try:
            got = retry(
                progress, functools.partial(_fetch, client, progress, sha256, fd, offset, whole)
            )
        except ApiError as exc:
            if exc.status == 416 and offset > 0 and size is None:  # a stale partial file
                offset, whole = 0, hashlib.sha256()
                continue
            raise
        total, length, range_ok, digest = got
        if size is not None and total != size:
            raise IntegrityError("the blob's size changed during the download; try again")
        size = total
        if length == 0 and offset < size:
            raise IntegrityError("the coordinator sent an empty range; try again")
        if not range_ok:
            bad += 1
            if bad >= BAD_CHUNKS:
                raise IntegrityError(
                    f"bytes {offset}-{offset + length - 1} of blob {sha256[:12]} arrived "
                    f"corrupted {bad} times in a row; try again later"
                )
            continue  # fetch this range again, and only this range
        bad = 0
        whole = digest
        offset += length
    out.truncate(offset)
    out.flush()
    os.fsync(fd)
    if whole.hexdigest() != sha256:
        raise IntegrityError("the downloaded blob does not match its sha256; try again")
    return offset


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def _fetch(
    client: FederationClient,
    progress: Progress,
    sha256: str,
    fd: int,
    offset: int,
    whole: Any,
    timeout: float,
) -> tuple[int, int, bool, Any]:
    """Fetch one range into the file at ``offset``: (blob size, bytes, range ok, new digest)."""
    headers = {"range": f"bytes={offset}-{offset + RANGE - 1}"}
    with client.stream("GET", f"/v1/blobs/{sha256}", headers=headers, timeout=timeout) as r:
        size = int(r.headers.get("x-blob-size", "-1"))
        match = _CONTENT_RANGE.fullmatch(r.headers.get("content-range", ""))
        start = int(match.group(1)) if r.status_code == 206 and match else 0
        if size < 0 or start != offset:
            raise IntegrityError("the coordinator answered with another range than asked for")
        expected = r.headers.get(CHUNK_HEADER)
        chunk, digest, length = hashlib.sha256(), whole.copy(), 0
        for part in r.iter_bytes():
            if length + len(part) > RANGE or offset + length + len(part) > size:
                raise IntegrityError("the coordinator sent more bytes than the blob holds")
            os.pwrite(fd, part, offset + length)
            chunk.update(part)
            digest.update(part)
            length += len(part)
            progress.reach(offset + length)
    return size, length, chunk.hexdigest() == expected, digest
