"""A signed HTTPS client for the coordinator's API, used by nodes, researchers and admins.

Every request is signed with the participant's identity key; the server's certificate must
chain to the federation CA *and* match the pinned fingerprint from the startup kit. Tensors
move in chunks: uploads resume where they stopped, downloads fetch byte ranges and check the
whole blob's sha256.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from medfed.errors import IntegrityError, MedfedError

__all__ = ["ApiError", "FederationClient", "TransportError", "client_for_kit"]

Signer = Callable[[str, str, bytes], Mapping[str, str]]

DOWNLOAD_CHUNK = 8 << 20
RETRIES = 5


class TransportError(MedfedError):
    """The coordinator could not be reached (network, TLS, timeout); worth retrying."""


class ApiError(MedfedError):
    """The coordinator refused a request (4xx/5xx); the message is its one-sentence reason."""

    exit_code = 2

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"the coordinator refused the request ({status}): {detail}")
        self.status = status
        self.detail = detail


class FederationClient:
    def __init__(
        self,
        base_url: str,
        *,
        signer: Signer,
        ca_pem: bytes | None,
        server_pin: str | None = None,
        insecure: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._sign = signer
        self._pin = server_pin
        verify: ssl.SSLContext | bool
        if insecure:
            verify = False
        else:
            if ca_pem is None:
                raise ValueError("a CA certificate is needed unless insecure")
            verify = ssl.create_default_context(cadata=ca_pem.decode())
        self._http = httpx.Client(
            base_url=self.base_url,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

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
            response = self._http.request(
                method,
                path,
                content=body or None,
                headers=all_headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        self._check_pin(response)
        if response.status_code >= 400:
            try:
                detail = str(response.json().get("detail", response.text))
            except (ValueError, AttributeError):
                detail = response.text[:300]
            raise ApiError(response.status_code, detail)
        return response

    def _check_pin(self, response: httpx.Response) -> None:
        if self._pin is None:
            return
        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        der = ssl_object.getpeercert(True) if ssl_object is not None else None
        if der is None or hashlib.sha256(der).hexdigest() != self._pin:
            raise TransportError(
                "the coordinator's certificate does not match the pin in your startup kit; "
                "do not proceed and ask your federation admin"
            )

    def get_json(self, path: str, *, timeout: float | None = None) -> Any:
        return self.request("GET", path, timeout=timeout).json()

    def post_json(self, path: str, payload: Any) -> Any:
        return self.post_bytes(path, json.dumps(payload).encode())

    def post_bytes(self, path: str, body: bytes) -> Any:
        return self.request("POST", path, body=body).json()

    def get_bytes(self, path: str) -> bytes:
        return self.request("GET", path).content

    # -- chunked, resumable transfers ------------------------------------------------------

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        delay = 0.5
        for attempt in range(RETRIES):
            try:
                return fn()
            except TransportError:
                if attempt == RETRIES - 1:
                    raise
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def upload_blob(self, data: bytes) -> str:
        """Upload bytes in chunks (resuming after a broken connection); returns the sha256."""
        sha = hashlib.sha256(data).hexdigest()
        start = self._retrying(
            lambda: self.post_json("/v1/uploads", {"sha256": sha, "size": len(data)})
        )
        if start.get("complete"):
            return sha
        upload_id, chunk = start["id"], int(start["chunk_size"])
        received = set(start.get("received", []))
        n_chunks = max(1, -(-len(data) // chunk)) if data else 0
        for index in range(n_chunks):
            if index in received:
                continue
            piece = data[index * chunk : (index + 1) * chunk]
            self._retrying(
                lambda i=index, p=piece: self.request(  # type: ignore[misc]
                    "PUT",
                    f"/v1/uploads/{upload_id}/chunks/{i}",
                    body=p,
                    headers={"content-type": "application/octet-stream"},
                )
            )
        self._retrying(lambda: self.post_json(f"/v1/uploads/{upload_id}/complete", {}))
        return sha

    def download_blob_to(self, sha256: str, path: Path) -> Path:
        """Stream a blob into a file by byte ranges (bounded memory, resumable); checks sha256.

        A partial file from an earlier, broken attempt is resumed where it stopped.
        """
        part = path.with_name(path.name + ".part")
        digest = hashlib.sha256()
        offset = 0
        if part.exists():
            with open(part, "rb") as fh:
                while chunk := fh.read(DOWNLOAD_CHUNK):
                    digest.update(chunk)
                    offset += len(chunk)
        size: int | None = None
        with open(part, "ab") as out:
            while size is None or offset < size:
                end = offset + DOWNLOAD_CHUNK - 1
                response = self._retrying(
                    lambda o=offset, e=end: self.request(  # type: ignore[misc]
                        "GET", f"/v1/blobs/{sha256}", headers={"range": f"bytes={o}-{e}"}
                    )
                )
                size = int(response.headers.get("x-blob-size", len(response.content)))
                if size == 0:
                    break
                if not response.content:
                    raise TransportError("the coordinator sent an empty chunk")
                out.write(response.content)
                digest.update(response.content)
                offset += len(response.content)
        if digest.hexdigest() != sha256:
            part.unlink(missing_ok=True)
            raise IntegrityError("the downloaded blob does not match its sha256; try again")
        part.replace(path)
        return path

    def download_blob(self, sha256: str) -> bytes:
        """Download a blob by byte ranges (resuming after a broken connection); checks sha256."""
        parts: list[bytes] = []
        offset = 0
        size: int | None = None
        while size is None or offset < size:
            end = offset + DOWNLOAD_CHUNK - 1
            response = self._retrying(
                lambda o=offset, e=end: self.request(  # type: ignore[misc]
                    "GET", f"/v1/blobs/{sha256}", headers={"range": f"bytes={o}-{e}"}
                )
            )
            size = int(response.headers.get("x-blob-size", len(response.content)))
            if not response.content and offset < size:
                raise TransportError("the coordinator sent an empty chunk")
            parts.append(response.content)
            offset += len(response.content)
            if size == 0:
                break
        data = b"".join(parts)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError("the downloaded blob does not match its sha256; try again")
        return data


def client_for_kit(
    kit: Any, *, insecure: bool = False, url: str | None = None, timeout: float = 60.0
) -> FederationClient:
    """A client that signs with ``kit``'s identity and trusts only its federation's server."""
    from medfed.federation.signing import Identity, sign_request

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
    )
