"""A hostile site against a real coordinator over TLS: it must not wreck the model nor get a 500.

The site holds a valid certificate and signs its requests: everything here is authenticated
input, refused (with an audited 4xx) or bounded by the coordinator itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from medfed.config import UpdateBounds
from medfed.federation.coordinator.jobs import JobConfig
from medfed.serde import params_from_bytes
from tests.federation.server import (
    SITES,
    LiveCoordinator,
    approve,
    assert_refused,
    breast_mlp,
    cancel,
    live_coordinator,
    reply_header,
    running_job,
    update_bytes,
    wait_for_task,
)

HONEST, HOSTILE = SITES[0], SITES[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoordinator]:
    # in memory: the same app and checks as over TLS, without the socket
    with live_coordinator(tmp_path_factory.mktemp("site-attacks"), in_memory=True) as running:
        yield running


def _reply(live: LiveCoordinator, site: str, task: dict[str, Any], body: dict[str, Any]) -> Any:
    return live.signed(site, "POST", f"/v1/tasks/{task['id']}/reply", body)


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h.update(seconds=10**400),
        lambda h: h["metrics"].update(loss=10**400),
        lambda h: h["metrics"].update(extra={"auprc": -(10**400)}),
    ],
    ids=["seconds", "metrics.loss", "metrics.extra"],
)
def test_an_integer_beyond_float_range_in_a_reply_is_an_audited_400(
    live: LiveCoordinator, change: Any
) -> None:
    job, task = running_job(live, HOSTILE)
    header = reply_header(task, HOSTILE)
    change(header)
    assert "10000000000" in json.dumps(header)  # the JSON holds the 401-digit integer itself
    assert_refused(
        live,
        lambda: _reply(live, HOSTILE, task, {"header": header}),
        400,
        contains="out of range",
        principal=HOSTILE,
    )
    cancel(live, job["id"])


def _deeply_nested_tensor_file(depth: int = 200_000) -> bytes:
    header = b"[" * depth + b"]" * depth
    return len(header).to_bytes(8, "little") + header


def test_a_tensor_header_nested_200k_deep_is_an_audited_400(live: LiveCoordinator) -> None:
    job, task = running_job(live, HOSTILE)
    sha = live.client(HOSTILE).upload_blob(_deeply_nested_tensor_file())
    body = {"header": reply_header(task, HOSTILE), "blob_sha256": sha}
    assert_refused(
        live, lambda: _reply(live, HOSTILE, task, body), 400, contains="nested too deeply"
    )
    cancel(live, job["id"])


def _job_of_two(live: LiveCoordinator, bounds: dict[str, Any] | None = None) -> dict[str, Any]:
    model = breast_mlp()
    client = live.client("bob")
    run: dict[str, Any] = {"rounds": 1, "strategy": {"min_sites": 2}, "round_timeout": 60}
    if bounds is not None:
        run["bounds"] = bounds
    config = JobConfig.from_json({**run, "data_spec": model.data_spec})
    job: dict[str, Any] = client.post_json(
        "/v1/jobs",
        {
            "name": "two-sites",
            "task_name": "breast_mlp",
            "bundle_sha256": client.upload_blob(model.task_bytes),
            "initial_sha256": client.upload_blob(model.initial_bytes),
            "config": config.to_json(),
        },
    )
    for site in (HONEST, HOSTILE):
        approve(live, site, job["id"])
    return job


def _train_reply(
    live: LiveCoordinator, site: str, job_id: str, value: float, num_examples: int
) -> None:
    task = wait_for_task(live, site, job_id)
    client = live.client(site)

    def fill(arrays: dict[str, np.ndarray]) -> None:
        for arr in arrays.values():
            arr[...] = value

    sha = client.upload_blob(update_bytes(change=fill))
    header = reply_header(task, site, num_examples=num_examples)
    body = {"header": header, "blob_sha256": sha}
    assert client.post_json(f"/v1/tasks/{task['id']}/reply", body) == {"status": "accepted"}


def _evaluate_reply(live: LiveCoordinator, site: str, job_id: str) -> None:
    task = wait_for_task(live, site, job_id, operation="evaluate")
    header = {**reply_header(task, site, num_examples=None), "operation": "evaluate"}
    live.client(site).post_json(f"/v1/tasks/{task['id']}/reply", {"header": header})


def _finished(live: LiveCoordinator, job_id: str) -> dict[str, Any]:
    for site in (HONEST, HOSTILE):
        _evaluate_reply(live, site, job_id)
    view: dict[str, Any] = {}
    for _ in range(200):
        view = live.client("bob").get_json(f"/v1/jobs/{job_id}")
        if view["status"] != "running":
            break
        time.sleep(0.05)
    return view


def test_a_huge_update_claiming_many_examples_is_bounded_and_the_model_stays_sane(
    live: LiveCoordinator,
) -> None:
    job = _job_of_two(live)
    honest_value, huge = 0.01, 3e38
    _train_reply(live, HONEST, job["id"], honest_value, num_examples=10)
    _train_reply(live, HOSTILE, job["id"], huge, num_examples=10**12)
    view = _finished(live, job["id"])
    assert view["status"] == "complete", view

    (record,) = view["rounds_detail"]
    assert set(record["trained"]) == {HONEST, HOSTILE}
    assert set(record["bounded"]) == {HOSTILE}, record["bounded"]
    note = record["bounded"][HOSTILE]
    assert "clipped" in note and "counted as 1000" in note  # 100 x the honest claim of 10

    # exactly the bounded weighted mean: the hostile update scaled to 10 x the honest norm,
    # its weight capped at 100 x the honest site's 10 examples
    start = breast_mlp().params
    got = params_from_bytes(live.client("bob").download_blob(record["params_sha256"]))[0]
    n_values = start.num_values
    honest_norm = honest_value * np.sqrt(n_values)
    factor = UpdateBounds().norm_factor
    hostile_per_value = factor * honest_norm / np.sqrt(n_values)  # same sign in every value
    expected_delta = (10 * honest_value + 1000 * hostile_per_value) / 1010
    for name, arr in got.items():
        assert np.all(np.isfinite(arr))
        np.testing.assert_allclose(arr - start[name], expected_delta, rtol=1e-4, atol=1e-6)
    assert record["update_norms"][HOSTILE] > 1e38


def test_without_bounds_the_same_attack_fails_the_round_instead_of_publishing_garbage(
    live: LiveCoordinator,
) -> None:
    """The last line of defence: a non-finite aggregate is never published."""
    job = _job_of_two(live, bounds={"norm_factor": 0, "examples_factor": 0})
    _train_reply(live, HONEST, job["id"], 0.01, num_examples=10)
    _train_reply(live, HOSTILE, job["id"], 3e38, num_examples=10**12)
    view: dict[str, Any] = {}
    for _ in range(400):
        view = live.client("bob").get_json(f"/v1/jobs/{job['id']}")
        if view["status"] != "running":
            break
        time.sleep(0.05)
    assert view["status"] == "failed", view
    assert "not finite" in view["error"]
    assert view["rounds_detail"] == []  # nothing was published


def test_upload_paths_are_not_a_way_around_the_json_limit(live: LiveCoordinator) -> None:
    """An upload chunk route takes a chunk's size; every JSON route a small body."""
    from medfed.federation.coordinator.auth import MAX_JSON_BODY

    just_over = b'{"sha256": "' + b"0" * MAX_JSON_BODY + b'", "size": 1}'
    headers = live.signed_headers(HOSTILE, "POST", "/v1/uploads", just_over)
    assert_refused(
        live,
        lambda: live.send("POST", "/v1/uploads", body=just_over, headers=headers),
        413,
        contains="too large",
    )
