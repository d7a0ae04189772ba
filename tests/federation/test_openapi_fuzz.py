"""Schemathesis fuzzes the coordinator's served OpenAPI schema: no request gets a 5xx.

Unsigned requests are refused (401) before anything else runs, so most requests here are signed,
each by a participant drawn at random (a site, a researcher, the admin), to the coordinator's
app served in memory (the same app, gate and checks as over TLS, without the socket; what the
TLS server itself refuses is tested in test_api_security.py and tests/attacks): the signature
covers the method, the request target exactly as sent (query string included) and the body's
sha256. Cases are generated both to match the schema and to violate it, and also against real
ids (an open task, a running job, an upload, a blob) so that the checks behind authentication
and routing are reached.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from medfed.federation.identity.signing import sign_request
from tests.federation.server import (
    SITES,
    LiveCoordinator,
    approve,
    assert_refused,
    live_coordinator,
    submit_job,
    update_bytes,
    wait_for_task,
)

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402

pytestmark = pytest.mark.slow

SIGNERS = (SITES[0], SITES[1], "bob", "alice", None)  # None: an unsigned request
EXAMPLES = 8  # per operation and mode: ~30 s for each database


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveCoordinator]:
    """The coordinator on SQLite, and on PostgreSQL when the CI provides one."""
    db_url = None
    if request.param == "postgresql":
        db_url = os.environ.get("MEDFED_TEST_POSTGRES_URL")
        if not db_url:
            pytest.skip("set MEDFED_TEST_POSTGRES_URL to fuzz the coordinator on PostgreSQL")
    root = tmp_path_factory.mktemp("fuzz")
    with live_coordinator(root, max_upload_bytes=1 << 20, db_url=db_url, in_memory=True) as running:
        yield running


@pytest.fixture(scope="module")
def real_ids(live: LiveCoordinator) -> dict[str, Any]:
    """Ids that exist: a running job with an open train task, an upload, a reply blob."""
    job = submit_job(live, "bob")
    approve(live, SITES[0], job["id"])
    task = wait_for_task(live, SITES[0], job["id"])
    blob = update_bytes()
    site = live.client(SITES[0])
    upload = site.post_json("/v1/uploads", {"sha256": "b" * 64, "size": 100})
    return {
        "job_id": job["id"],
        "task_id": task["id"],
        "sha256": site.upload_blob(blob),
        "upload_id": upload["id"],
        "name": SITES[3],
    }


def send(live: LiveCoordinator, case: Any, signer: str | None) -> httpx.Response | None:
    """Send a generated case as it would go on the wire, signed by ``signer``."""
    kwargs = case.as_transport_kwargs(base_url=live.url)
    content = kwargs.get("data") if isinstance(kwargs.get("data"), bytes | str) else None
    if "json" in kwargs:  # also a JSON null, which httpx's json=None would drop
        content = json.dumps(kwargs["json"]).encode()
    try:
        request = live.raw.build_request(
            kwargs["method"],
            kwargs["url"],
            params=kwargs.get("params") or None,
            headers={k: v for k, v in kwargs.get("headers", {}).items() if k != "Connection"},
            content=content,
        )
        body = request.read()
    except (httpx.InvalidURL, UnicodeError, ValueError, TypeError):
        return None  # not something an HTTP client can send
    if signer is not None:
        target = request.url.raw_path.decode("ascii")
        try:
            identity = live.identity(signer)
            request.headers.update(
                sign_request(identity, method=request.method, path=target, body=body)
            )
        except ValueError:  # a target that cannot be signed goes unsigned
            pass
    return live.raw.send(request)


def operations(live: LiveCoordinator) -> list[Any]:
    schema = schemathesis.openapi.from_dict(live.coordinator.app.openapi())
    return [result.ok() for result in schema.get_all_operations()]


def test_no_request_gets_a_server_error(live: LiveCoordinator, real_ids: dict[str, Any]) -> None:
    failures: list[str] = []
    ops = operations(live)
    assert len(ops) >= 15  # every route is in the schema

    for op in ops:
        names = {p.name for p in op.path_parameters} if op.path_parameters else set()
        known = {k: v for k, v in real_ids.items() if k in names}
        cases = st.one_of(
            op.as_strategy(generation_mode=GenerationMode.POSITIVE),
            op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            *([op.as_strategy(path_parameters=known)] if known else []),
            *(
                [op.as_strategy(path_parameters=known, generation_mode=GenerationMode.NEGATIVE)]
                if known
                else []
            ),
        )

        @settings(
            max_examples=EXAMPLES * (4 if known else 2),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases, signer=st.sampled_from(SIGNERS))
        def fuzz(case: Any, signer: str | None) -> None:
            response = send(live, case, signer)
            if response is None:
                return
            where = f"{case.method} {case.formatted_path} as {signer}"
            if response.status_code >= 500:
                failures.append(f"{where}: {response.status_code} {response.text[:200]}")
            elif response.status_code >= 400 and response.content:
                detail = response.json().get("detail")
                if not isinstance(detail, str) or not detail.strip():
                    failures.append(f"{where}: {response.status_code}, no sentence: {detail!r}")

        fuzz()

    assert not failures, "\n".join(failures[:20])
    assert live.send("GET", "/v1/health").status_code == 200


@pytest.mark.parametrize(
    ("who", "method", "path", "payload", "status"),
    [
        ("bob", "GET", "/v1/jobs/a%00b", None, 404),
        ("bob", "GET", "/v1/jobs/x%00/logs", None, 404),
        (SITES[0], "GET", "/v1/uploads/a%00b", None, 404),
        (SITES[0], "GET", "/v1/blobs/a%00b", None, 404),
        (SITES[0], "POST", "/v1/jobs/a%00/approval", {"status": "approved"}, 404),
        ("alice", "POST", "/v1/participants/a%00/revoke", {"reason": "x"}, 404),
        ("alice", "POST", f"/v1/participants/{SITES[2]}/revoke", {"reason": "x\u0000y"}, 422),
        ("bob", "POST", "/v1/jobs", {"name": "a\u0000", "task_name": "t", "config": {},
                                     "bundle_sha256": "a" * 64, "initial_sha256": "b" * 64}, 422),
        (SITES[0], "POST", f"/v1/tasks/{2**31}/reply", {"header": {}}, 404),
        (SITES[0], "POST", f"/v1/tasks/{-(2**63)}/reply", {"header": {}}, 404),
        (SITES[0], "POST", f"/v1/tasks/{2**70}/reply", {"header": {}}, (404, 422)),
        (SITES[0], "POST", "/v1/tasks/1/reply", {"header": {"site": "\ud800\u0000"}}, (400, 404)),
    ],
)  # fmt: skip
def test_what_a_database_cannot_store_is_refused_not_a_5xx(
    live: LiveCoordinator, who: str, method: str, path: str, payload: Any, status: Any
) -> None:
    """Text with NUL characters and ids beyond 32 bits: PostgreSQL refuses both."""
    raw = None if payload is None else json.dumps(payload).encode()
    assert_refused(live, lambda: live.signed(who, method, path, body=raw), status)
    assert not live.coordinator.store.is_revoked(SITES[2])  # the fuzzing above revokes SITES[3]
