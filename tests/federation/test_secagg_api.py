"""The coordinator's secure-aggregation routes and checks: the peers' certificates go only to
sites of the job, and a secure-aggregation reply carries one masked uint vector at most."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from medfed.federation.coordinator.jobs import JobConfig
from medfed.federation.identity.certificates import PeerCertificateError, peer_keys
from medfed.records import Params
from medfed.serde import params_to_bytes
from medfed.site.secure_aggregation import MASKED_TENSOR
from tests.federation.server import (
    SITES,
    LiveCoordinator,
    approve,
    assert_refused,
    breast_mlp,
    cancel,
    live_coordinator,
    reply_header,
    update_bytes,
    wait_for_task,
)

A, B, C = SITES[0], SITES[1], SITES[2]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoordinator]:
    # in memory: the same app and checks as over TLS, without the socket
    with live_coordinator(tmp_path_factory.mktemp("federation"), in_memory=True) as running:
        yield running


def submit_secure_job(live: LiveCoordinator) -> dict[str, Any]:
    model = breast_mlp()
    client = live.client("bob")
    config = JobConfig.from_json(
        {
            "rounds": 1,
            "strategy": {"min_sites": 2},
            "round_timeout": 60,
            "data_spec": model.data_spec,
            "privacy": {"secure_aggregation": True},
        }
    )
    job: dict[str, Any] = client.post_json(
        "/v1/jobs",
        {
            "name": "secure",
            "task_name": "breast_mlp",
            "bundle_sha256": client.upload_blob(model.task_bytes),
            "initial_sha256": client.upload_blob(model.initial_bytes),
            "config": config.to_json(),
        },
    )
    return job


@pytest.fixture
def secure_job(live: LiveCoordinator) -> Iterator[dict[str, Any]]:
    """A secure job that A and B approved (C did not)."""
    job = submit_secure_job(live)
    approve(live, A, job["id"])
    approve(live, B, job["id"])
    yield job
    cancel(live, job["id"])


def test_a_site_of_the_job_gets_its_peers_certificates_and_trusts_them(
    live: LiveCoordinator, secure_job: dict[str, Any]
) -> None:
    live.client(C).get_json("/v1/work")  # C is known to the coordinator, but not in the job
    got = live.client(A).get_json(f"/v1/jobs/{secure_job['id']}/certificates?sites={A},{B},{C}")
    assert sorted(got["certificates"]) == [A, B]  # C takes no part: its certificate stays
    kit = live.kit(A)
    keys = peer_keys(got["certificates"], [A, B], ca_pem=kit.ca_pem, consortium=kit.consortium)
    assert keys[B].public_bytes_raw() == live.kit(B).identity_key.public_key().public_bytes_raw()
    # a certificate sent for another site's name is not trusted
    swapped = {A: got["certificates"][B]}
    with pytest.raises(PeerCertificateError, match="certificate of"):
        peer_keys(swapped, [A], ca_pem=kit.ca_pem, consortium=kit.consortium)


def test_the_certificates_are_refused_to_a_site_of_another_job_and_to_other_roles(
    live: LiveCoordinator, secure_job: dict[str, Any]
) -> None:
    path = f"/v1/jobs/{secure_job['id']}/certificates?sites={A},{B}"
    assert_refused(live, lambda: live.client(C).get_json(path), 404, contains="no such job")
    assert_refused(live, lambda: live.client("bob").get_json(path), 403, contains="site")
    assert_refused(live, lambda: live.client("alice").get_json(path), 403, contains="site")
    bad = f"/v1/jobs/{secure_job['id']}/certificates?sites=Not_A_Name"
    assert_refused(live, lambda: live.client(A).get_json(bad), 400, contains="sites")


def _post(live: LiveCoordinator, site: str, task: dict[str, Any], header: dict, blob: bytes | None):
    client = live.client(site)
    sha = None if blob is None else client.upload_blob(blob)
    return lambda: client.post_json(
        f"/v1/tasks/{task['id']}/reply", {"header": header, "blob_sha256": sha}
    )


def _secagg_task(live: LiveCoordinator, site: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task = live.client(site).get_json("/v1/work?wait=1")["task"]
        if task is not None and task["job_id"] == job_id and task["operation"] != "train":
            return dict(task)
    raise AssertionError(f"{site} got no secure-aggregation task of {job_id}")


def test_secure_aggregation_replies_carry_one_masked_uint_vector_at_most(
    live: LiveCoordinator, secure_job: dict[str, Any]
) -> None:
    job_id = secure_job["id"]
    trains = {s: wait_for_task(live, s, job_id) for s in (A, B)}
    held = {**reply_header(trains[A], A), "message": {"secagg": "held"}}
    # a training reply of a secure job holds its update back
    assert_refused(
        live, _post(live, A, trains[A], held, update_bytes()), 422, contains="secure aggregation"
    )
    for s in (A, B):
        header = {**reply_header(trains[s], s, num_examples=None), "message": {"secagg": "held"}}
        assert live.client(s).post_json(
            f"/v1/tasks/{trains[s]['id']}/reply", {"header": header, "blob_sha256": None}
        ) == {"status": "accepted"}

    task = _secagg_task(live, A, job_id)
    assert task["operation"].startswith("secagg/")
    header = {
        "site": A,
        "round": task["round"],
        "operation": "secagg",
        "seconds": 0.1,
        "metrics": None,
        "failure": None,
        "num_examples": 0,
        "message": {"type": "anything"},
    }
    n = breast_mlp().params.num_values

    def blob(name: str, array: np.ndarray) -> bytes:
        return params_to_bytes(Params({name: array}))

    cases = [
        (blob("weights", np.zeros(n, np.uint32)), "exactly one tensor"),
        (blob(MASKED_TENSOR, np.zeros((2, n // 2), np.uint32)), "1-D"),
        (blob(MASKED_TENSOR, np.zeros(n, np.float32)), "uint32 or uint64"),
        (blob(MASKED_TENSOR, np.zeros(n + 17, np.uint64)), "at most"),
    ]
    for data, words in cases:
        assert_refused(live, _post(live, A, task, header, data), 422, contains=words)
    no_message = {**header, "message": None}
    assert_refused(live, _post(live, A, task, no_message, None), 422, contains="message")
    ok = _post(live, A, task, header, blob(MASKED_TENSOR, np.zeros(n, np.uint32)))
    assert ok() == {"status": "accepted"}


def test_a_job_s_privacy_is_validated_and_off_by_default() -> None:
    from medfed.errors import ConfigError

    def job(privacy: dict[str, Any] | None = None, min_sites: int = 1) -> JobConfig:
        raw: dict[str, Any] = {"strategy": {"min_sites": min_sites}}
        if privacy is not None:
            raw["privacy"] = privacy
        return JobConfig.from_json(raw)

    none = job().privacy_config()
    assert none.dp == "none" and not none.secure_aggregation
    # a [privacy] table turns secure aggregation on, as in a simulation's run file
    dp = job({"dp": "client", "target_epsilon": 8.0}, min_sites=2).privacy_config()
    assert dp.target_epsilon == 8.0 and dp.noise_multiplier is None and dp.secure_aggregation
    assert JobConfig.from_json(job({"dp": "client"}, min_sites=2).to_json())
    # sample-level DP (DP-SGD at each site, each node's budget pays) is a federation job too
    sample = job(
        {"dp": "sample", "secure_aggregation": True, "target_epsilon": 4.0}, min_sites=2
    ).privacy_config()
    assert sample.dp == "sample" and sample.secure_aggregation
    plain = job({"dp": "sample", "secure_aggregation": False})
    assert JobConfig.from_json(plain.to_json()) == plain
    for privacy, words in [
        ({"dp": "sample", "adaptive_clip": True}, "adaptive"),
        ({"dp": "client", "clip": 1.0}, "unknown setting"),
        ({"secure_aggregation": True}, "min_sites"),
        ({"dp": "client", "adaptive_clip": True, "secure_aggregation": False}, "clip_count_stddev"),
    ]:
        with pytest.raises(ConfigError, match=words):
            job(privacy)
