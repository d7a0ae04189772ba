"""A hostile (or careless) researcher against a real coordinator over TLS.

The researcher holds a valid certificate: every request here is authenticated, and each must be
refused with an audited 4xx that says what is wrong, never accepted nor answered with a 500.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.federation.server import (
    ADMINS,
    SITES,
    LiveCoordinator,
    approve,
    assert_refused,
    breast_mlp,
    cancel,
    live_coordinator,
    wait_for_task,
)

RESEARCHER = "bob"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoordinator]:
    """In memory: the same app and checks as over TLS, without the socket."""
    with live_coordinator(tmp_path_factory.mktemp("researcher-attacks"), in_memory=True) as lc:
        yield lc


@pytest.fixture(scope="module")
def tls_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoordinator]:
    """Over TLS, for the raw bytes of a request on a socket.

    A short stall timeout: the test of a body that never arrives waits for it."""
    with live_coordinator(
        tmp_path_factory.mktemp("researcher-attacks-tls"), body_stall_seconds=1
    ) as lc:
        yield lc


def _submit(live: LiveCoordinator, config: dict[str, Any], initial: bytes | None = None) -> Any:
    model = breast_mlp()
    client = live.client(RESEARCHER)
    body = {
        "name": "hostile",
        "task_name": "breast_mlp",
        "bundle_sha256": client.upload_blob(model.task_bytes),
        "initial_sha256": client.upload_blob(initial or model.initial_bytes),
        "config": config,
    }
    return live.signed(RESEARCHER, "POST", "/v1/jobs", body)


def _good_config() -> dict[str, Any]:
    return {"rounds": 1, "min_sites": 1, "round_timeout": 60.0, "data_spec": breast_mlp().data_spec}


def test_a_job_config_with_every_bad_key_is_one_400_that_lists_them_all(
    live: LiveCoordinator,
) -> None:
    config = {
        "rounds": 1,
        "min_sites": True,  # once read as 1: a round ran with one site
        "seed": -1,
        "round_timeout": 60.0,
        "train": {"local_epochs": 10**9, "batch_size": 10**18, "weight_decay": 1e308},
        "data_spec": {"kind": "telepathy", "input_shape": [10**12], "n_classes": 2},
    }
    jobs_before = len(live.coordinator.store.jobs())
    detail = assert_refused(
        live, lambda: _submit(live, config), 400, contains="problems", principal=RESEARCHER
    )
    for key in (
        "min_sites",
        "seed",
        "train.local_epochs",
        "train.batch_size",
        "train.weight_decay",
        "data_spec.kind",
        "data_spec.input_shape",
    ):
        assert key in detail, f"{key} missing from {detail!r}"
    assert len(live.coordinator.store.jobs()) == jobs_before  # nothing was created


def test_unknown_job_settings_are_named(live: LiveCoordinator) -> None:
    config = {**_good_config(), "rouds": 3}
    assert_refused(live, lambda: _submit(live, config), 400, contains="rouds")


def test_an_initial_model_nested_200k_deep_is_an_audited_400(live: LiveCoordinator) -> None:
    header = b"[" * 200_000 + b"]" * 200_000
    initial = len(header).to_bytes(8, "little") + header
    assert_refused(
        live,
        lambda: _submit(live, _good_config(), initial),
        400,
        contains="initial model",
        principal=RESEARCHER,
    )


def _raw_request(live: LiveCoordinator, head: bytes, body: bytes, *, wait: float) -> bytes:
    """Send ``head`` and ``body`` over a raw TLS connection; the first bytes of the answer."""
    ca = live.kit(ADMINS[0]).ca_pem.decode()
    context = ssl.create_default_context(cadata=ca)
    plain = socket.create_connection(("127.0.0.1", live.port), timeout=wait)
    with plain, context.wrap_socket(plain, server_hostname="127.0.0.1") as tls:
        tls.sendall(head + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < _expected(answer):
            part = tls.recv(4096)
            if not part:
                break
            answer += part
        return answer


def _expected(answer: bytes) -> int:
    head, _, _ = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(head) + 4 + int(line.split(b":")[1])
    return len(answer)


def _head(live: LiveCoordinator, length: int, body: bytes) -> bytes:
    headers = live.signed_headers(RESEARCHER, "POST", "/v1/jobs", body)
    lines = [
        "POST /v1/jobs HTTP/1.1",
        f"Host: 127.0.0.1:{live.port}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_declared_2_gib_body_is_refused_at_once(tls_live: LiveCoordinator) -> None:
    live = tls_live
    body = b"{}"
    started = time.monotonic()
    answer = _raw_request(live, _head(live, 2 << 30, body), body, wait=10)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 5  # the declared length is refused, not waited for
    assert b"too large" in answer


def test_a_body_shorter_than_declared_is_a_408_not_a_hang(tls_live: LiveCoordinator) -> None:
    live = tls_live
    body = b'{"name": "x"'
    started = time.monotonic()
    answer = _raw_request(live, _head(live, 1000, body), body, wait=15)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 10
    assert b"stopped arriving" in answer
    rows = [r for r in live.audit(limit=20) if r["outcome"] == "refused"]
    assert any("stopped arriving" in r["detail"] for r in rows)


def test_a_job_cancelled_mid_round_ends_cancelled(live: LiveCoordinator) -> None:
    response = _submit(live, {**_good_config(), "rounds": 3})
    assert response.status_code == 200, response.text
    job = response.json()
    approve(live, SITES[0], job["id"])
    wait_for_task(live, SITES[0], job["id"])  # round 1 is running: a task is out
    cancel(live, job["id"], RESEARCHER)
    runner = live.coordinator.runners.get(job["id"])
    if runner is not None:
        runner.join(timeout=30)
    status = live.client(RESEARCHER).get_json(f"/v1/jobs/{job['id']}")
    assert status["status"] == "cancelled", status
    assert "cancelled by bob" in json.dumps(status)


def test_revoking_a_name_never_seen_says_so(live: LiveCoordinator) -> None:
    answer = live.client(ADMINS[0]).post_json(
        "/v1/participants/comunity-north/revoke", {"reason": "typo"}
    )
    assert answer == {"name": "comunity-north", "status": "revoked", "known": False}
    rows = [r for r in live.audit(limit=20) if r["action"] == "participant.revoke"]
    assert "never seen here" in rows[-1]["detail"]
