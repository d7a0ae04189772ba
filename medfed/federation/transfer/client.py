"""A signed HTTPS client for the coordinator's API, used by nodes, researchers and admins.

Every request is signed with the participant's identity key; the server's certificate must
chain to the federation CA *and* match the pinned fingerprint from the startup kit. Tensors
move in chunks (:mod:`medfed.federation.transfer.chunks`): each chunk carries its sha256, uploads
resume where they stopped, downloads fetch byte ranges straight to disk, and a transfer fails
only when it made no progress for ``stall_seconds``, never on a fixed deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from medfed.errors import IntegrityError, MedfedError
from medfed.federation.transfer.transport import (
    HttpsTransport,
    PinMismatch,
    Transport,
    TransportError,
)

__all__ = [
    "ApiError",
    "FederationClient",
    "PinMismatch",
    "Transport",
    "TransportError",
    "client_for_kit",
]

Signer = Callable[[str, str, bytes], Mapping[str, str]]

STALL_SECONDS = 120.0  # a transfer fails after this long without any progress
_PIECE = 256 << 10  # an upload chunk goes to the socket in pieces of this size


class ApiError(MedfedError):
    """The coordinator refused a request (4xx/5xx); the message is its one-sentence reason."""

    exit_code = 2

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"the coordinator refused the request ({status}): {detail}")
        self.status = status
        self.detail = detail


class FederationClient:
    """Signs every request with the participant's key and sends it through ``transport``.

    By default the transport is HTTPS to ``base_url`` (trusting ``ca_pem`` and the pin); give
    ``transport`` (e.g. :class:`~medfed.federation.transfer.transport.AsgiTransport`) to reach
    the coordinator another way; ``base_url`` then only names it (in ledgers and messages).
    """

    def __init__(
        self,
        base_url: str,
        *,
        signer: Signer,
        ca_pem: bytes | None,
        server_pin: str | None = None,
        insecure: bool = False,
        timeout: float = 60.0,
        stall_seconds: float = STALL_SECONDS,
        transport: Transport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.stall_seconds = stall_seconds
        self._sign = signer
        self.transport: Transport = transport or HttpsTransport(
            self.base_url,
            ca_pem=ca_pem,
            server_pin=server_pin,
            insecure=insecure,
            timeout=timeout,
        )

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> FederationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one place requests are made -------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        all_headers.update(self._sign(method.upper(), path, body))
        if body:
            all_headers.setdefault("content-type", "application/json")
        try:
            response = self.transport.send(
                method, path, body=body or None, headers=all_headers, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, _detail(response))
        return response

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_sent: Callable[[int], None] | None = None,
    ) -> Iterator[httpx.Response]:
        """A signed request whose response body is read as it arrives (``iter_bytes``).

        ``body`` goes out in pieces and ``on_sent(n)`` learns how many bytes left so far;
        ``timeout`` bounds every connect, read and write on the socket, not the request.
        A refusal raises ApiError, a network failure (also while reading) TransportError.
        """
        all_headers = dict(headers or {})
        all_headers.update(self._sign(method.upper(), path, body))
        content: bytes | Iterator[bytes] | None = None
        if body:
            all_headers.setdefault("content-type", "application/octet-stream")
            all_headers["content-length"] = str(len(body))  # not chunked: the gate needs it
            content = body if on_sent is None else _pieces(body, on_sent)
        try:
            response = self.transport.send(
                method, path, body=content, headers=all_headers, timeout=timeout, stream=True
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        try:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, _detail(response))
            yield response
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        finally:
            response.close()

    def get_json(self, path: str, *, timeout: float | None = None) -> Any:
        return self.request("GET", path, timeout=timeout).json()

    def post_json(self, path: str, payload: Any) -> Any:
        return self.post_bytes(path, json.dumps(payload).encode())

    def post_bytes(self, path: str, body: bytes) -> Any:
        return self.request("POST", path, body=body).json()

    def get_bytes(self, path: str) -> bytes:
        return self.request("GET", path).content

    # -- chunked, resumable transfers (medfed.federation.transfer.chunks) -----------------

    def upload_blob(self, data: bytes) -> str:
        """Upload bytes in chunks (resuming after a broken connection); returns the sha256."""
        from medfed.federation.transfer.chunks import Source, upload

        return upload(self, Source(data=data), hashlib.sha256(data).hexdigest())

    def upload_file(self, path: str | os.PathLike[str], *, sha256: str | None = None) -> str:
        """Upload a file chunk by chunk, never holding more than one chunk; returns its sha256.

        Give ``sha256`` when it is known (e.g. from :func:`medfed.tensor_file.write_params`);
        otherwise the file is read once more to hash it. The coordinator checks it either way.
        """
        from medfed.federation.transfer.chunks import Source, file_sha256, upload

        with open(path, "rb") as fh:
            digest = sha256 or file_sha256(fh.fileno())
            return upload(self, Source(fd=fh.fileno()), digest)

    def download_blob_to(self, sha256: str, path: Path) -> Path:
        """Stream a blob into a file by byte ranges (bounded memory, resumable); checks sha256.

        A partial file from an earlier, broken attempt (``PATH.part``) is resumed where it
        stopped; the file appears at ``path`` only once complete and checked.
        """
        from medfed.federation.transfer.chunks import download_to

        _check_sha256(sha256)  # it may come from the coordinator: never a path or a URL part
        part = path.with_name(path.name + ".part")
        # not O_APPEND: ranges are written at their offsets (pwrite ignores them on O_APPEND)
        with open(os.open(part, os.O_RDWR | os.O_CREAT, 0o644), "r+b") as out:
            try:
                download_to(self, sha256, out, resume=True)
            except MedfedError as exc:
                if not isinstance(exc, TransportError):  # corrupt: start afresh next time
                    part.unlink(missing_ok=True)
                raise
        part.replace(path)
        return path

    def download_blob(self, sha256: str) -> bytes:
        """Download a (small) blob into memory, by the same checked ranges as to a file."""
        from medfed.federation.transfer.chunks import download_to

        _check_sha256(sha256)
        with tempfile.TemporaryFile() as out:
            size = download_to(self, sha256, out)
            out.seek(0)
            return out.read(size)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_sha256(sha256: object) -> None:
    """A blob is named by its sha256 (64 lowercase hex characters), nothing else."""
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise IntegrityError(
            f"{sha256!r:.80} is not a blob's sha256 (64 lowercase hex characters); "
            "it is not downloaded"
        )


def _detail(response: httpx.Response) -> str:
    """The one-sentence reason of a refusal."""
    try:
        return str(response.json().get("detail", response.text))
    except (ValueError, AttributeError):
        return response.text[:300]


def _pieces(body: bytes, on_sent: Callable[[int], None]) -> Iterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(view), _PIECE):
        yield bytes(view[start : start + _PIECE])
        on_sent(min(len(view), start + _PIECE))  # asked for the next piece: this one is out


def client_for_kit(
    kit: Any,
    *,
    insecure: bool = False,
    url: str | None = None,
    timeout: float = 60.0,
    stall_seconds: float = STALL_SECONDS,
    transport: Transport | None = None,
) -> FederationClient:
    """A client that signs with ``kit``'s identity and trusts only its federation's server
    (or that reaches it through ``transport``, e.g. in memory)."""
    from medfed.federation.identity.signing import Identity, sign_request

    identity = Identity.from_kit(kit)

    def signer(method: str, path: str, body: bytes) -> Mapping[str, str]:
        return sign_request(identity, method=method, path=path, body=body)

    base = url or kit.coordinator_url
    if insecure:
        base = base.replace("https://", "http://", 1)
    return FederationClient(
        base,
        signer=signer,
        ca_pem=None if insecure else kit.ca_pem,
        server_pin=None if insecure else kit.server_pin,
        insecure=insecure,
        timeout=timeout,
        stall_seconds=stall_seconds,
        transport=transport,
    )
