"""Who may do what at the coordinator: every request proves its sender, and nobody acts as,
or reads anything of, another participant. Each refusal is a 4xx with a sentence, recorded in
the audit log (read back through the admin's ``/v1/audit``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medfed.federation.identity.kits import load_kit
from medfed.federation.identity.pki import provision
from medfed.federation.identity.signing import Identity, sign_request
from medfed.federation.transfer.client import FederationClient, TransportError
from tests.federation.server import (
    SITES,
    LiveCoordinator,
    approve,
    assert_refused,
    cancel,
    live_coordinator,
    reply_header,
    sha256,
    submit_job,
    update_bytes,
    wait_for_task,
    write_consortium,
)

A, B = SITES[0], SITES[1]  # two hospitals of the same consortium


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoordinator]:
    """The coordinator in memory: the same app, gate and checks as over TLS, no socket."""
    with live_coordinator(tmp_path_factory.mktemp("federation"), in_memory=True) as running:
        yield running


@pytest.fixture(scope="module")
def tls_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoordinator]:
    """The coordinator over TLS on 127.0.0.1, for what the transport itself must refuse."""
    with live_coordinator(tmp_path_factory.mktemp("federation-tls")) as running:
        yield running


@pytest.fixture
def job(live: LiveCoordinator) -> Iterator[dict[str, Any]]:
    """A job of bob's that is waiting for its sites (nobody approved yet)."""
    submitted = submit_job(live, "bob")
    yield submitted
    cancel(live, submitted["id"])


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """A site of a consortium with the same name but another CA."""
    root = tmp_path_factory.mktemp("other-ca")
    provision(write_consortium(root / "consortium.toml", 9), root / "kits")
    return Identity.from_kit(load_kit(root / "kits" / "sites" / A))


def approval(job_id: str) -> tuple[str, bytes]:
    return f"/v1/jobs/{job_id}/approval", json.dumps({"status": "approved"}).encode()


# -- identity: forged, replayed, stale, unknown ---------------------------------------------


def test_health_needs_no_identity(live: LiveCoordinator) -> None:
    assert live.send("GET", "/v1/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/work", b""),
        ("GET", "/v1/jobs", b""),
        ("GET", "/v1/audit", b""),
        ("POST", "/v1/uploads", b'{"sha256": "' + b"0" * 64 + b'", "size": 1}'),
        ("POST", "/v1/participants/alice/revoke", b'{"reason": "x"}'),
        ("POST", "/v1/tasks/1/reply", b"{not json"),  # refused for who sent it, not for its form
        ("PUT", "/v1/uploads/abcdefgh/chunks/0", b"\x00\x01"),
    ],
)
def test_unsigned_requests_are_401(
    live: LiveCoordinator, method: str, path: str, body: bytes
) -> None:
    assert_refused(
        live,
        lambda: live.send(method, path, body=body),
        401,
        contains="missing",
        principal="anonymous",
    )


def test_a_tampered_body_is_refused(live: LiveCoordinator, job: dict[str, Any]) -> None:
    path, body = approval(job["id"])
    headers = live.signed_headers(A, "POST", path, body)
    forged = json.dumps({"status": "rejected"}).encode()
    assert_refused(
        live,
        lambda: live.send("POST", path, body=forged, headers=headers),
        401,
        contains="body does not match",
    )
    # the attacker also rewrites the declared body hash: the signature no longer matches
    headers = {
        **live.signed_headers(A, "POST", path, body),
        "X-Medfed-Content-SHA256": sha256(forged),
    }
    assert_refused(
        live,
        lambda: live.send("POST", path, body=forged, headers=headers),
        401,
        contains="bad signature",
    )
    assert live.coordinator.store.approvals(job["id"]) == {}  # nothing was recorded


def test_a_tampered_path_or_query_is_refused(live: LiveCoordinator, job: dict[str, Any]) -> None:
    other = submit_job(live, "bob", name="other")
    try:
        path, body = approval(job["id"])
        headers = live.signed_headers(A, "POST", path, body)
        assert_refused(
            live,
            lambda: live.send(
                "POST", f"/v1/jobs/{other['id']}/approval", body=body, headers=headers
            ),
            401,
            contains="bad signature",
        )
        headers = live.signed_headers(A, "GET", "/v1/work?wait=0")
        assert_refused(
            live, lambda: live.send("GET", "/v1/work?wait=1", headers=headers), 401, contains="bad"
        )
        headers = live.signed_headers("bob", "GET", "/v1/jobs")  # signed a GET, sent a POST
        assert_refused(
            live, lambda: live.send("POST", "/v1/jobs", headers=headers), 401, contains="bad"
        )
        assert live.coordinator.store.approvals(other["id"]) == {}
    finally:
        cancel(live, other["id"])


def test_a_valid_certificate_with_another_participants_key_is_refused(
    live: LiveCoordinator, job: dict[str, Any]
) -> None:
    victim, thief = live.identity(A), live.identity(B)
    forged = Identity(private_key=thief.private_key, cert_der=victim.cert_der)
    path, body = approval(job["id"])
    headers = sign_request(forged, method="POST", path=path, body=body)
    assert_refused(
        live,
        lambda: live.send("POST", path, body=body, headers=headers),
        401,
        contains="bad signature",
        principal="anonymous",
    )
    assert live.coordinator.store.approvals(job["id"]) == {}


def test_a_replayed_request_is_refused(live: LiveCoordinator, job: dict[str, Any]) -> None:
    path, body = approval(job["id"])
    headers = live.signed_headers(A, "POST", path, body)
    assert live.send("POST", path, body=body, headers=headers).status_code == 200
    live.coordinator.store.set_approval(job["id"], A, "rejected")  # the steward changed her mind
    assert_refused(
        live, lambda: live.send("POST", path, body=body, headers=headers), 401, contains="replay"
    )
    assert live.coordinator.store.approvals(job["id"]) == {A: "rejected"}
    headers = live.signed_headers(A, "GET", "/v1/work")
    assert live.send("GET", "/v1/work", headers=headers).status_code == 200
    assert_refused(live, lambda: live.send("GET", "/v1/work", headers=headers), 401)


@pytest.mark.parametrize(("skew", "reason"), [(-400, "stale"), (400, "future")])
def test_stale_and_future_timestamps_are_refused(
    live: LiveCoordinator, skew: float, reason: str
) -> None:
    headers = live.signed_headers(A, "GET", "/v1/work", now=time.time() + skew)
    assert_refused(
        live, lambda: live.send("GET", "/v1/work", headers=headers), 401, contains=reason
    )


def test_a_certificate_from_another_ca_is_refused(
    live: LiveCoordinator, stranger: Identity
) -> None:
    headers = sign_request(stranger, method="GET", path="/v1/work")
    assert_refused(
        live,
        lambda: live.send("GET", "/v1/work", headers=headers),
        401,
        contains="not issued by the federation CA",
    )


def test_malformed_identity_headers_are_refused(live: LiveCoordinator) -> None:
    good = live.signed_headers(A, "GET", "/v1/work")
    for name, value in [
        ("X-Medfed-Cert", "not base64!"),
        ("X-Medfed-Cert", "AAAA"),
        ("X-Medfed-Signature", "AAAA"),
        ("X-Medfed-Nonce", "xyz"),
        ("X-Medfed-Timestamp", "-1"),
        ("X-Medfed-Cert", "A" * 5000),
    ]:
        headers = {**good, name: value}
        assert_refused(live, lambda h=headers: live.send("GET", "/v1/work", headers=h), 401)


def test_an_oversized_body_is_refused_before_it_is_read(live: LiveCoordinator) -> None:
    body = b"{" + b" " * (9 << 20) + b"}"
    headers = live.signed_headers(A, "POST", "/v1/uploads", body)
    assert_refused(live, lambda: live.send("POST", "/v1/uploads", body=body, headers=headers), 413)


def test_a_chunked_body_without_a_length_is_bounded_too(live: LiveCoordinator) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * (1 << 20)

    headers = live.signed_headers(A, "POST", "/v1/uploads", b"")
    assert_refused(
        live,
        lambda: live.raw.post("/v1/uploads", content=body(), headers=headers),
        413,
        principal="anonymous",
    )


# -- roles -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "method", "path", "payload"),
    [
        (A, "POST", "/v1/participants/oncology-clinic/revoke", {"reason": "I say so"}),
        ("bob", "POST", "/v1/participants/oncology-clinic/revoke", {"reason": "I say so"}),
        (A, "GET", "/v1/audit", None),
        ("bob", "GET", "/v1/participants", None),
        (A, "GET", "/v1/jobs", None),
        (A, "POST", "/v1/jobs", {}),
        ("alice", "POST", "/v1/jobs", {}),
        ("bob", "GET", "/v1/work", None),
        ("bob", "POST", "/v1/jobs/job-000000000000/approval", {"status": "approved"}),
        ("alice", "POST", "/v1/uploads", {"sha256": "0" * 64, "size": 1}),
        ("bob", "POST", "/v1/tasks/1/reply", {"header": {}}),
    ],
)
def test_each_role_may_only_do_its_own_work(
    live: LiveCoordinator, who: str, method: str, path: str, payload: Any
) -> None:
    assert_refused(
        live,
        lambda: live.signed(who, method, path, payload),
        403,
        contains="identity",
        principal=who,
    )
    assert not live.coordinator.store.is_revoked("oncology-clinic")


def test_a_revoked_site_is_refused(live: LiveCoordinator, job: dict[str, Any]) -> None:
    site = "rural-hospital"
    approve(live, site, job["id"])
    # the job's runner hands out its first task once it sees the approval: wait for it
    assert wait_for_task(live, site, job["id"])["job_id"] == job["id"]
    revoked = live.client("alice").post_json(
        f"/v1/participants/{site}/revoke", {"reason": "laptop stolen"}
    )
    assert revoked == {"name": site, "status": "revoked", "known": True}
    for method, path, payload in [
        ("GET", "/v1/work", None),
        ("POST", f"/v1/jobs/{job['id']}/approval", {"status": "approved"}),
        ("POST", "/v1/uploads", {"sha256": "0" * 64, "size": 1}),
    ]:
        assert_refused(
            live,
            lambda m=method, p=path, b=payload: live.signed(site, m, p, b),
            403,
            contains="revoked",
            principal=site,
        )
    row = next(p for p in live.client("alice").get_json("/v1/participants") if p["name"] == site)
    assert row["revoked"] and row["revoked_reason"] == "laptop stolen"


def test_revoking_needs_a_participant_name(live: LiveCoordinator) -> None:
    assert_refused(
        live,
        lambda: live.signed(
            "alice", "POST", "/v1/participants/Not%20A%20Name/revoke", {"reason": "x"}
        ),
        400,
    )
    assert_refused(
        live,
        lambda: live.signed("alice", "POST", "/v1/participants/bob%0A/revoke", {"reason": "x"}),
        400,
    )
    assert not live.coordinator.store.is_revoked("bob")


# -- nobody reads or acts for another participant -----------------------------------------


def test_a_site_cannot_see_touch_or_copy_another_sites_work(
    live: LiveCoordinator, job: dict[str, Any]
) -> None:
    job_id = job["id"]
    approve(live, A, job_id)
    task_a = wait_for_task(live, A, job_id)
    # B has not approved: its polls never carry A's task
    assert live.client(B).get_json("/v1/work")["task"] is None
    a = live.client(A)
    blob = update_bytes(change=lambda arrays: arrays["0.weight"].fill(0.25))
    up = a.post_json("/v1/uploads", {"sha256": sha256(blob), "size": len(blob)})
    # B cannot write into, finish or look at A's upload
    assert_refused(
        live,
        lambda: live.signed(B, "PUT", f"/v1/uploads/{up['id']}/chunks/0", body=blob),
        404,
        principal=B,
    )
    assert_refused(live, lambda: live.signed(B, "GET", f"/v1/uploads/{up['id']}"), 404, principal=B)
    assert_refused(
        live, lambda: live.signed(B, "POST", f"/v1/uploads/{up['id']}/complete", {}), 404
    )
    sha = a.upload_blob(blob)
    reply = {"header": reply_header(task_a, A), "blob_sha256": sha}
    # B cannot answer A's task, neither as itself nor by claiming to be A in the header
    for header in (reply_header(task_a, B), reply_header(task_a, A)):
        assert_refused(
            live,
            lambda h=header: live.signed(
                B, "POST", f"/v1/tasks/{task_a['id']}/reply", {"header": h, "blob_sha256": sha}
            ),
            404,
            principal=B,
        )
    assert a.post_json(f"/v1/tasks/{task_a['id']}/reply", reply) == {"status": "accepted"}
    # B cannot read A's update, nor learn that it exists, nor pass it off as its own
    assert_refused(live, lambda: live.signed(B, "GET", f"/v1/blobs/{sha}"), 404, principal=B)
    started = live.client(B).post_json("/v1/uploads", {"sha256": sha, "size": len(blob)})
    assert started["complete"] is False and started["id"]
    job2 = submit_job(live, "bob", name="second")
    try:
        approve(live, B, job2["id"])
        task_b = wait_for_task(live, B, job2["id"])
        header = reply_header(task_b, B)
        assert_refused(
            live,
            lambda: live.signed(
                B, "POST", f"/v1/tasks/{task_b['id']}/reply", {"header": header, "blob_sha256": sha}
            ),
            400,
            contains="upload",
            principal=B,
        )
        assert live.coordinator.store.task(task_b["id"]).status == "delivered"
        # having uploaded the same bytes itself, B may use them (identical updates happen)
        assert live.client(B).upload_blob(blob) == sha
        body = {"header": header, "blob_sha256": sha}
        assert live.client(B).post_json(f"/v1/tasks/{task_b['id']}/reply", body) == {
            "status": "accepted"
        }
    finally:
        cancel(live, job2["id"])
    # A still reads its own update and the model it was sent
    assert a.download_blob(sha) == blob
    assert a.download_blob(task_a["params_sha256"])


def test_a_researcher_cannot_see_another_researchers_job(
    live: LiveCoordinator, job: dict[str, Any]
) -> None:
    job_id, carol = job["id"], "carol"
    assert job_id not in [j["id"] for j in live.client(carol).get_json("/v1/jobs")]
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/logs"),
        ("GET", f"/v1/jobs/{job_id}/bundle"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("GET", f"/v1/blobs/{job['params_sha256']}"),
        ("GET", f"/v1/blobs/{job['task_sha256']}"),
    ]:
        assert_refused(
            live,
            lambda m=method, p=path: live.signed(carol, m, p, {} if m == "POST" else None),
            404,
            contains="no such",
            principal=carol,
        )
    assert live.client("bob").get_json(f"/v1/jobs/{job_id}")["status"] == "running"
    # nor start a job on bob's uploads without holding the bytes herself
    assert_refused(
        live,
        lambda: live.signed(
            carol,
            "POST",
            "/v1/jobs",
            {
                "name": "borrowed",
                "task_name": "breast_mlp",
                "bundle_sha256": job["task_sha256"],
                "initial_sha256": job["params_sha256"],
                "config": {},
            },
        ),
        400,
        contains="upload",
        principal=carol,
    )


def test_plain_reads_of_jobs_and_participants_are_audited(
    live: LiveCoordinator, job: dict[str, Any]
) -> None:
    job_id = job["id"]
    bob = live.client("bob")
    bob.get_json(f"/v1/jobs/{job_id}")
    bob.get_json(f"/v1/jobs/{job_id}/logs")
    bob.get_json("/v1/jobs")
    live.client("alice").get_json("/v1/participants")
    rows = live.audit(limit=20)
    seen = {(r["principal"], r["action"], r["target"], r["outcome"]) for r in rows}
    for who, action, target in [
        ("bob", "job.status", job_id),
        ("bob", "job.logs", job_id),
        ("bob", "job.list", ""),
        ("alice", "participant.list", ""),
    ]:
        assert (who, action, target, "ok") in seen, (who, action, sorted(seen))


# -- the transport ---------------------------------------------------------------------------


def test_a_client_refuses_a_server_that_does_not_match_its_pin(tls_live: LiveCoordinator) -> None:
    live = tls_live
    kit = live.kit(A)
    identity = live.identity(A)

    def signer(method: str, path: str, body: bytes) -> dict[str, str]:
        return sign_request(identity, method=method, path=path, body=body)

    with (
        FederationClient(live.url, signer=signer, ca_pem=kit.ca_pem, server_pin="0" * 64) as client,
        pytest.raises(TransportError, match="pin"),
    ):
        client.get_json("/v1/work")


def test_a_client_refuses_a_server_of_another_ca(tls_live: LiveCoordinator, tmp_path: Path) -> None:
    live = tls_live
    provision(write_consortium(tmp_path / "consortium.toml", live.port), tmp_path / "kits")
    other = load_kit(tmp_path / "kits" / "sites" / A)
    from medfed.federation.transfer.client import client_for_kit

    with client_for_kit(other) as client, pytest.raises(TransportError):
        client.get_json("/v1/health")
