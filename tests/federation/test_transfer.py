"""Chunked transfers against a real coordinator on 127.0.0.1, through a proxy that breaks things.

A cut connection (in the middle of a chunk) is resumed: an upload sends only the chunks the
coordinator does not hold, a download fetches again only the range that broke. A corrupted
range is fetched again alone. A coordinator that stops answering fails the transfer once
nothing moved for the stall window, with one sentence, and not before.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from medfed.errors import IntegrityError
from medfed.federation.transfer.chunks import TransferStalled
from medfed.federation.transfer.client import FederationClient, client_for_kit
from tests.federation.proxy import Proxy, proxy_to
from tests.federation.server import (
    SITES,
    LiveCoordinator,
    assert_refused,
    breast_mlp,
    live_coordinator,
)

pytestmark = pytest.mark.slow  # ~15 s: tens of MB through TLS, and two stall windows

SITE, ADMIN = SITES[0], "alice"  # a site uploads; the admin may read any blob
MiB = 1 << 20
SIZE = 20 * MiB  # three 8 MiB chunks: 8 + 8 + 4


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoordinator]:
    with live_coordinator(tmp_path_factory.mktemp("transfer")) as running:
        yield running


@pytest.fixture
def proxy(live: LiveCoordinator) -> Iterator[Proxy]:
    with proxy_to(live.port) as p:
        yield p


@contextmanager
def via(live: LiveCoordinator, proxy: Proxy, who: str, stall: float = 30) -> Iterator[Any]:
    """``who``'s own signed, pinned client, connected through the proxy."""
    client = client_for_kit(live.kit(who), url=proxy.url, timeout=30, stall_seconds=stall)
    try:
        yield client
    finally:
        client.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_file(tmp_path: Path, size: int = SIZE) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    return path, data


def record_ranges(client: FederationClient, corrupt: dict[int, int] | None = None) -> list[int]:
    """Wrap ``client.stream``: note where each download range starts (and the index of each
    upload chunk sent), and flip a byte of the first part of the range at offset ``o`` for
    the next ``corrupt[o]`` fetches."""
    starts: list[int] = []
    corrupt = corrupt if corrupt is not None else {}
    original = client.stream

    @contextmanager
    def stream(method: str, path: str, **kwargs: Any) -> Iterator[Any]:
        if method == "PUT":
            starts.append(int(path.rsplit("/", 1)[1]))
        with original(method, path, **kwargs) as response:
            wanted = (kwargs.get("headers") or {}).get("range", "")
            if wanted:
                start = int(wanted.split("=")[1].split("-")[0])
                starts.append(start)
                if corrupt.get(start, 0) > 0:
                    corrupt[start] -= 1
                    parts = response.iter_bytes

                    def damaged() -> Iterator[bytes]:
                        for i, part in enumerate(parts()):
                            yield bytes([part[0] ^ 1]) + part[1:] if i == 0 else part

                    response.iter_bytes = damaged
            yield response

    client.stream = stream  # type: ignore[method-assign]
    return starts


# -- cut connections ---------------------------------------------------------------------------


def test_an_upload_cut_in_the_middle_of_a_chunk_resumes_and_completes(
    live: LiveCoordinator, proxy: Proxy, tmp_path: Path
) -> None:
    path, data = blob_file(tmp_path)
    proxy.cut_after(12 * MiB, "up")  # in the middle of chunk 1
    with via(live, proxy, SITE) as client:
        chunks = record_ranges(client)
        assert client.upload_file(path) == sha(data)
    assert proxy.cuts == 1
    assert live.coordinator.blobs.read(sha(data)) == data
    assert chunks == [0, 1, 1, 2]  # chunk 0 went once; only the broken chunk 1 went again
    assert proxy.sent["up"] < SIZE + 6 * MiB


def test_a_download_cut_in_the_middle_of_a_range_resumes_and_completes(
    live: LiveCoordinator, proxy: Proxy, tmp_path: Path
) -> None:
    _, data = blob_file(tmp_path)
    digest = live.client(SITE).upload_blob(data)
    proxy.cut_after(12 * MiB, "down")
    with via(live, proxy, ADMIN) as client:
        starts = record_ranges(client)
        target = client.download_blob_to(digest, tmp_path / "model.safetensors")
    assert proxy.cuts == 1
    assert target.read_bytes() == data
    assert not (tmp_path / "model.safetensors.part").exists()
    assert starts == [0, 8 * MiB, 8 * MiB, 16 * MiB]  # only the broken range again
    assert proxy.sent["down"] < SIZE + 5 * MiB


def test_a_partial_download_from_an_earlier_attempt_is_resumed(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    _, data = blob_file(tmp_path)
    digest = live.client(SITE).upload_blob(data)
    target = tmp_path / "model.safetensors"
    (tmp_path / "model.safetensors.part").write_bytes(data[: 5 * MiB])
    client = live.client(ADMIN)
    starts = record_ranges(client)
    try:
        assert client.download_blob_to(digest, target).read_bytes() == data
    finally:
        del client.stream  # the instance's wrapper; the class's method again
    assert starts == [5 * MiB, 13 * MiB]


def test_an_upload_whose_completion_conflicts_starts_again_and_completes(
    live: LiveCoordinator,
) -> None:
    """The coordinator loses an upload's file between the last chunk and the completion (a
    crash while completing it): completing is refused as a conflict, the client starts over."""
    data = os.urandom(3 * MiB)
    client = live.client(SITES[1])
    original, chunks = client.stream, []

    @contextmanager
    def stream(method: str, path: str, **kwargs: Any) -> Iterator[Any]:
        with original(method, path, **kwargs) as response:
            yield response
        if method == "PUT":
            chunks.append(path)
            if len(chunks) == 1:
                live.coordinator.blobs.discard_upload(path.split("/")[3])

    client.stream = stream  # type: ignore[method-assign]
    try:
        assert client.upload_blob(data) == sha(data)
    finally:
        del client.stream
    assert len(chunks) == 2 and chunks[0] != chunks[1]  # a fresh upload, sent whole again
    assert live.coordinator.blobs.read(sha(data)) == data


def test_an_upload_whose_file_the_coordinator_lost_starts_afresh(live: LiveCoordinator) -> None:
    """Chunks recorded, file gone: starting the upload again must not claim those chunks."""
    data = os.urandom(3 * MiB)
    client = live.client(SITES[1])
    up = client.post_json("/v1/uploads", {"sha256": sha(data), "size": len(data)})
    headers = {"X-Chunk-Sha256": sha(data), "content-type": "application/octet-stream"}
    client.request("PUT", f"/v1/uploads/{up['id']}/chunks/0", body=data, headers=headers)
    live.coordinator.blobs.discard_upload(up["id"])
    again = client.post_json("/v1/uploads", {"sha256": sha(data), "size": len(data)})
    assert again["id"] != up["id"] and again["received"] == []
    assert client.upload_blob(data) == sha(data)
    assert live.coordinator.blobs.read(sha(data)) == data


# -- per-chunk hashes -------------------------------------------------------------------------


def test_a_corrupted_range_is_fetched_again_and_only_that_range(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    _, data = blob_file(tmp_path)
    digest = live.client(SITE).upload_blob(data)
    client = live.client(ADMIN)
    starts = record_ranges(client, corrupt={8 * MiB: 1})
    try:
        assert client.download_blob(digest) == data
        assert starts == [0, 8 * MiB, 8 * MiB, 16 * MiB]
        # corrupted every time: the download ends with a sentence and leaves no partial file
        record_ranges(client, corrupt={16 * MiB: 99})
        target = tmp_path / "model.safetensors"
        with pytest.raises(IntegrityError, match="arrived corrupted 3 times in a row"):
            client.download_blob_to(digest, target)
        assert not target.exists() and not (tmp_path / "model.safetensors.part").exists()
    finally:
        del client.stream


def test_an_upload_chunk_refused_for_its_hash_is_sent_again(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    """The coordinator refuses a chunk whose bytes do not match X-Chunk-Sha256 (here: a wrong
    header on the first try); the client sends that chunk again, and the upload completes."""
    data = os.urandom(10 * MiB)
    client = client_for_kit(live.kit(SITES[1]), timeout=30)
    original, puts = client.stream, []

    @contextmanager
    def stream(method: str, path: str, **kwargs: Any) -> Iterator[Any]:
        if method == "PUT":
            puts.append(path.rsplit("/", 1)[1])
            if len(puts) == 2:  # chunk 1, first try
                kwargs["headers"] = {"X-Chunk-Sha256": "0" * 64}
        with original(method, path, **kwargs) as response:
            yield response

    client.stream = stream  # type: ignore[method-assign]
    try:
        assert client.upload_blob(data) == sha(data)
    finally:
        client.close()
    assert puts == ["0", "1", "1"]
    rows = live.audit(limit=20)
    assert any(
        r["outcome"] == "refused" and "does not match its X-Chunk-Sha256" in r["detail"]
        for r in rows
    )


def test_ranges_carry_their_sha256_and_are_at_most_one_chunk(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    _, data = blob_file(tmp_path)
    digest = live.client(SITE).upload_blob(data)
    path = f"/v1/blobs/{digest}"

    def get(rng: str | None) -> Any:
        headers = live.signed_headers(ADMIN, "GET", path)
        if rng is not None:
            headers["range"] = rng
        return live.send("GET", path, headers=headers)

    whole = get(None)  # no range: the whole blob, streamed from disk
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["x-chunk-sha256"] == digest
    big = get("bytes=1000-")  # more than a chunk asked: one chunk served, and said so
    assert big.status_code == 206
    assert big.headers["content-range"] == f"bytes 1000-{1000 + 8 * MiB - 1}/{SIZE}"
    assert big.content == data[1000 : 1000 + 8 * MiB]
    assert big.headers["x-chunk-sha256"] == sha(big.content)
    small = get("bytes=5-9")
    assert small.content == data[5:10] and small.headers["x-chunk-sha256"] == sha(data[5:10])


def test_an_empty_blob_goes_both_ways(live: LiveCoordinator) -> None:
    assert live.client(SITE).upload_blob(b"") == sha(b"")
    assert live.client(ADMIN).download_blob(sha(b"")) == b""


# -- stalls ------------------------------------------------------------------------------------


def test_an_upload_to_a_coordinator_that_stops_answering_fails_after_the_stall_window(
    live: LiveCoordinator, proxy: Proxy, tmp_path: Path
) -> None:
    path, data = blob_file(tmp_path)
    proxy.freeze_after(10 * MiB, "up")
    with via(live, proxy, SITES[2], stall=2.0) as client:
        began = time.monotonic()
        with pytest.raises(TransferStalled) as failure:
            client.upload_file(path)
        elapsed = time.monotonic() - began
    message = str(failure.value)
    assert "made no progress for 2 s" in message and "\n" not in message, message
    assert message.endswith("check the connection to the coordinator and run it again")
    assert 2.0 <= elapsed < 10, elapsed
    # the coordinator answers again: a new attempt sends only the chunks it does not hold
    proxy.thaw()
    with via(live, proxy, SITES[2]) as client:
        chunks = record_ranges(client)
        assert client.upload_file(path) == sha(data)
    assert chunks == [1, 2]
    assert live.coordinator.blobs.read(sha(data)) == data


def test_a_download_from_a_coordinator_that_stops_answering_fails_after_the_stall_window(
    live: LiveCoordinator, proxy: Proxy, tmp_path: Path
) -> None:
    _, data = blob_file(tmp_path)
    digest = live.client(SITE).upload_blob(data)
    proxy.freeze_after(10 * MiB, "down")
    with via(live, proxy, ADMIN, stall=2.0) as client:
        began = time.monotonic()
        with pytest.raises(TransferStalled, match="made no progress for 2 s"):
            client.download_blob_to(digest, tmp_path / "model.safetensors")
        elapsed = time.monotonic() - began
    assert 2.0 <= elapsed < 10, elapsed
    assert (tmp_path / "model.safetensors.part").exists()  # kept, to be resumed


def test_a_slow_transfer_that_keeps_moving_does_not_fail(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    """Longer than the stall window in all, but never stalled: it completes."""
    data = os.urandom(3 * MiB)
    client = client_for_kit(live.kit(SITES[3]), timeout=30, stall_seconds=1.0)
    original = client.stream

    @contextmanager
    def slow(method: str, path: str, **kwargs: Any) -> Iterator[Any]:
        sent = kwargs.get("on_sent")
        if sent is not None:

            def dawdle(n: int) -> None:
                time.sleep(0.1)  # 12 pieces of 256 KiB per chunk: 1.2 s for each chunk
                sent(n)

            kwargs["on_sent"] = dawdle
        with original(method, path, **kwargs) as response:
            yield response

    client.stream = slow  # type: ignore[method-assign]
    began = time.monotonic()
    try:
        assert client.upload_blob(data) == sha(data)
    finally:
        client.close()
    assert time.monotonic() - began > 1.0


def test_a_job_whose_task_bundle_is_huge_is_refused(live: LiveCoordinator) -> None:
    """A task bundle is served whole: its size is checked when the job is submitted."""
    bob = live.client("bob")
    body = {
        "name": "huge",
        "task_name": "breast_mlp",
        "bundle_sha256": bob.upload_blob(b"#" * (16 * MiB + 1)),
        "initial_sha256": bob.upload_blob(breast_mlp().initial_bytes),
        "config": {},
    }
    assert_refused(
        live, lambda: live.signed("bob", "POST", "/v1/jobs", body), 413, contains="at most 16 MiB"
    )


def test_a_transfer_to_a_server_that_does_not_match_the_pin_fails_at_once(
    live: LiveCoordinator,
) -> None:
    """Not retried until the stall window runs out: no retry can make the pin match."""
    from medfed.federation.identity.signing import sign_request
    from medfed.federation.transfer.client import PinMismatch

    identity = live.identity(SITE)

    def signer(method: str, path: str, body: bytes) -> dict[str, str]:
        return sign_request(identity, method=method, path=path, body=body)

    kit = live.kit(SITE)
    began = time.monotonic()
    with (
        FederationClient(
            live.url, signer=signer, ca_pem=kit.ca_pem, server_pin="0" * 64, stall_seconds=60
        ) as client,
        pytest.raises(PinMismatch, match="pin"),
    ):
        client.upload_blob(b"an update")
    assert time.monotonic() - began < 10
