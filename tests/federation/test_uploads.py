"""What a site sends back is checked before it can reach a round: every bad upload or reply is
refused with a 4xx sentence that the audit log records, and the round is unharmed (the task
stays open and a valid reply is still accepted). Nothing on the network path is unpickled."""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medfed.records import Params
from medfed.serde import params_to_bytes
from tests.federation.server import (
    SITES,
    LiveCoordinator,
    approve,
    assert_refused,
    breast_mlp,
    cancel,
    live_coordinator,
    reply_header,
    sha256,
    submit_job,
    update_bytes,
    wait_for_task,
)

SITE = SITES[0]

pytestmark = pytest.mark.slow  # ~20 s: one job per test


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoordinator]:
    """One federation for the module, with uploads limited to 256 KiB (the model is ~10 KiB),
    served in memory (the same app and checks as over TLS, without the socket)."""
    with live_coordinator(
        tmp_path_factory.mktemp("uploads"), max_upload_bytes=256 << 10, in_memory=True
    ) as running:
        yield running


@pytest.fixture
def task(live: LiveCoordinator) -> Iterator[dict[str, Any]]:
    """A fresh job that SITE approved, and the open train task SITE fetched for it."""
    job = submit_job(live, "bob")
    approve(live, SITE, job["id"])
    try:
        yield wait_for_task(live, SITE, job["id"])
    finally:
        cancel(live, job["id"])


def reply_path(task: dict[str, Any]) -> str:
    return f"/v1/tasks/{task['id']}/reply"


def send_reply(
    live: LiveCoordinator, task: dict[str, Any], header: dict[str, Any], blob_sha: str | None
) -> Any:
    body = {"header": header, "blob_sha256": blob_sha}
    return live.signed(SITE, "POST", reply_path(task), body)


def assert_round_unharmed(live: LiveCoordinator, task: dict[str, Any]) -> None:
    """The task is still open, and the site's valid reply is accepted."""
    assert live.coordinator.store.task(task["id"]).status in ("pending", "delivered")
    again = live.client(SITE).get_json("/v1/work")["task"]  # handed out again, unchanged
    assert again is not None and again["id"] == task["id"]
    sha = live.client(SITE).upload_blob(update_bytes())
    ok = {"header": reply_header(task, SITE), "blob_sha256": sha}
    assert live.client(SITE).post_json(reply_path(task), ok) == {"status": "accepted"}


def safetensors(header: dict[str, Any], data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + data


def rename(arrays: dict[str, np.ndarray]) -> None:
    arrays["0.kernel"] = arrays.pop("0.weight")


def reshape(arrays: dict[str, np.ndarray]) -> None:
    arrays["0.weight"] = arrays["0.weight"].reshape(-1)


def retype(arrays: dict[str, np.ndarray]) -> None:
    arrays["0.weight"] = arrays["0.weight"].astype(np.float64)


def extra(arrays: dict[str, np.ndarray]) -> None:
    arrays["backdoor"] = np.zeros(3, np.float32)


def missing(arrays: dict[str, np.ndarray]) -> None:
    del arrays[next(reversed(arrays))]


def poison(value: float) -> Callable[[dict[str, np.ndarray]], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays["0.bias"] = arrays["0.bias"].copy()
        arrays["0.bias"][3] = value

    return change


def reordered() -> bytes:
    arrays = {k: np.zeros_like(v) for k, v in breast_mlp().params.items()}
    return params_to_bytes(Params(reversed(list(arrays.items()))))


def bfloat16() -> bytes:
    meta = {"medfed.format": "1", "medfed.order": '["0.weight"]'}
    return safetensors(
        {"__metadata__": meta, "0.weight": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}},
        b"\0" * 4,
    )


def no_medfed_header() -> bytes:
    arrays = {k: np.zeros_like(v) for k, v in breast_mlp().params.items()}
    from safetensors.numpy import save

    return save(arrays)


class Trap:
    """Unpickling this opens (creates) a file: the proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


# -- bad updates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "status", "reason"),
    [
        (lambda: update_bytes(change=rename), 422, "unexpected tensor '0.kernel'"),
        (lambda: update_bytes(change=reshape), 422, "tensor '0.weight' is float32"),
        (lambda: update_bytes(change=retype), 422, "float64"),
        (lambda: update_bytes(change=extra), 422, "unexpected tensor 'backdoor'"),
        (lambda: update_bytes(change=missing), 422, "missing tensor"),
        (lambda: update_bytes(change=poison(float("nan"))), 422, "nan or infinite"),
        (lambda: update_bytes(change=poison(float("inf"))), 422, "nan or infinite"),
        (lambda: update_bytes(change=poison(float("-inf"))), 422, "nan or infinite"),
        (reordered, 422, "order"),
        (lambda: b"these bytes are not tensors at all", 400, "malformed reply"),
        (lambda: b"", 400, "malformed reply"),
        (bfloat16, 400, "malformed reply"),
        (no_medfed_header, 400, "malformed reply"),
    ],
    ids=[
        "wrong-name",
        "wrong-shape",
        "wrong-dtype",
        "extra-tensor",
        "missing-tensor",
        "nan",
        "inf",
        "-inf",
        "wrong-order",
        "not-safetensors",
        "empty",
        "bf16",
        "no-medfed-header",
    ],
)
def test_a_bad_update_is_refused_and_the_round_goes_on(
    live: LiveCoordinator, task: dict[str, Any], make: Callable[[], bytes], status: int, reason: str
) -> None:
    blob = make()
    sha = live.client(SITE).upload_blob(blob)  # any bytes may be uploaded; a reply is checked
    assert_refused(
        live,
        lambda: send_reply(live, task, reply_header(task, SITE), sha),
        status,
        contains=reason,
        principal=SITE,
    )
    assert_round_unharmed(live, task)


def test_a_pickle_is_refused_and_never_loaded(
    live: LiveCoordinator, task: dict[str, Any], tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"0.weight": Trap(marker)})
    sha = live.client(SITE).upload_blob(payload)
    assert_refused(
        live,
        lambda: send_reply(live, task, reply_header(task, SITE), sha),
        400,
        contains="malformed reply",
    )
    # nor as a job's initial model
    bob = live.client("bob")
    submit = {
        "name": "pickled",
        "task_name": "breast_mlp",
        "bundle_sha256": bob.upload_blob(breast_mlp().task_bytes),
        "initial_sha256": bob.upload_blob(payload),
        "config": {},
    }
    assert_refused(live, lambda: live.signed("bob", "POST", "/v1/jobs", submit), 400)
    assert not marker.exists()
    assert_round_unharmed(live, task)


# -- replies that do not match their task ------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        (lambda h: h.update(site=SITES[1]), 400, "does not match its task"),
        (lambda h: h.update(round=h["round"] + 1), 400, "does not match its task"),
        (lambda h: h.update(operation="evaluate"), 400, "does not match its task"),
        (lambda h: h.update(num_examples=-1), (400, 422), "num_examples"),
        (lambda h: h.update(num_examples=10**13), 422, "num_examples"),
        (lambda h: h.update(num_examples="10"), 400, "num_examples"),
        (lambda h: h.update(num_examples=True), 400, "num_examples"),
        (lambda h: h.pop("num_examples"), 400, "malformed reply"),
        (lambda h: h.update(seconds="nan"), 400, "seconds must be a number"),
        (lambda h: h.update(seconds=float("inf")), 422, "seconds"),
        (lambda h: h["metrics"].update(loss=float("nan")), 422, "finite"),
        (lambda h: h["metrics"].update(extra={"f1": float("-inf")}), 422, "finite"),
        (lambda h: h.update(metrics="good"), 400, "malformed reply"),
        (lambda h: h.update(failure={"kind": "x", "message": "y"}), 400, "only a successful"),
    ],
    ids=[
        "other-site",
        "other-round",
        "other-operation",
        "negative-examples",
        "absurd-examples",
        "string-examples",
        "bool-examples",
        "no-examples",
        "nan-seconds",
        "inf-seconds",
        "nan-metric",
        "inf-extra-metric",
        "metrics-not-an-object",
        "failure-with-an-update",
    ],
)
def test_a_reply_that_does_not_match_its_task_is_refused(
    live: LiveCoordinator,
    task: dict[str, Any],
    change: Callable[[dict[str, Any]], Any],
    status: int,
    reason: str,
) -> None:
    sha = live.client(SITE).upload_blob(update_bytes())
    header = reply_header(task, SITE)
    change(header)
    assert_refused(
        live, lambda: send_reply(live, task, header, sha), status, contains=reason, principal=SITE
    )
    assert_round_unharmed(live, task)


def test_a_train_reply_without_an_update_or_with_an_unknown_one_is_refused(
    live: LiveCoordinator, task: dict[str, Any]
) -> None:
    header = reply_header(task, SITE)
    assert_refused(
        live, lambda: send_reply(live, task, header, None), 422, contains="carries no update"
    )
    assert_refused(
        live, lambda: send_reply(live, task, header, "e" * 64), 400, contains="upload the update"
    )
    assert_refused(
        live,
        lambda: live.signed(SITE, "POST", reply_path(task), body=b'{"header": {}, "blob_sha256'),
        422,
        contains="not valid JSON",
        principal=SITE,
    )
    assert_refused(
        live,
        lambda: send_reply(live, task, header, "not a sha"),
        422,
        contains="blob_sha256",
    )
    body = json.dumps({"header": header, "blob_sha256": None}).encode("utf-16")
    assert_refused(live, lambda: live.signed(SITE, "POST", reply_path(task), body=body), (400, 422))
    assert_round_unharmed(live, task)


def test_a_site_may_report_a_failure(live: LiveCoordinator, task: dict[str, Any]) -> None:
    header = reply_header(task, SITE, num_examples=None)
    header.update(metrics=None, failure={"kind": "OSError", "message": "disk full", "detail": ""})
    assert live.client(SITE).post_json(reply_path(task), {"header": header}) == {
        "status": "accepted"
    }


# -- idempotence, and replies to a closed round ---------------------------------------------


def test_a_repeated_reply_is_idempotent_and_a_different_one_is_refused(
    live: LiveCoordinator, task: dict[str, Any]
) -> None:
    site = live.client(SITE)
    blob = update_bytes()
    assert site.upload_blob(blob) == site.upload_blob(blob)  # a repeated upload is a no-op
    body = {"header": reply_header(task, SITE), "blob_sha256": sha256(blob)}
    assert site.post_json(reply_path(task), body) == {"status": "accepted"}
    assert site.post_json(reply_path(task), body) == {"status": "duplicate"}
    other = update_bytes(change=lambda a: a["0.bias"].fill(0.5))
    changed = {"header": reply_header(task, SITE), "blob_sha256": site.upload_blob(other)}
    assert_refused(
        live, lambda: live.signed(SITE, "POST", reply_path(task), changed), 409, contains="closed"
    )
    stored = live.coordinator.store.task(task["id"])
    assert stored.status == "done" and stored.reply_sha256 == sha256(blob)


def test_a_reply_after_the_job_was_cancelled_is_refused(
    live: LiveCoordinator, task: dict[str, Any]
) -> None:
    sha = live.client(SITE).upload_blob(update_bytes())
    cancel(live, task["job_id"])
    assert_refused(
        live,
        lambda: send_reply(live, task, reply_header(task, SITE), sha),
        409,
        contains="closed",
        principal=SITE,
    )
    assert live.coordinator.store.task(task["id"]).reply is None


def test_a_reply_after_the_round_expired_is_refused(live: LiveCoordinator) -> None:
    job = submit_job(live, "bob", round_timeout=3)
    try:
        approve(live, SITE, job["id"])
        task = wait_for_task(live, SITE, job["id"])
        sha = live.client(SITE).upload_blob(update_bytes())
        deadline = time.monotonic() + 20
        while live.coordinator.store.task(task["id"]).status != "expired":
            assert time.monotonic() < deadline, "the round never expired"
            time.sleep(0.1)
        assert_refused(
            live,
            lambda: send_reply(live, task, reply_header(task, SITE), sha),
            409,
            contains="late",
        )
    finally:
        cancel(live, job["id"])


def test_only_approving_sites_get_the_jobs_tasks(live: LiveCoordinator) -> None:
    job = submit_job(live, "bob")
    try:
        approve(live, SITES[1], job["id"], "rejected")
        approve(live, SITES[2], job["id"], "pending")
        approve(live, SITE, job["id"])
        task = wait_for_task(live, SITE, job["id"])
        for site in (SITES[1], SITES[2], SITES[3]):  # rejected, pending, never answered
            work = live.client(site).get_json("/v1/work?wait=0.5")
            assert work["task"] is None
            assert job["id"] in [j["id"] for j in work["jobs"]]  # they do see it to decide
            header = reply_header(task, site)
            sha = live.client(site).upload_blob(update_bytes())
            assert_refused(
                live,
                lambda s=site, h=header, b=sha: live.signed(
                    s, "POST", reply_path(task), {"header": h, "blob_sha256": b}
                ),
                404,
                contains="no such task",
                principal=site,
            )
            assert_refused(
                live,
                lambda s=site: live.signed(s, "GET", f"/v1/blobs/{task['params_sha256']}"),
                404,
                principal=site,
            )
        rows = live.coordinator.store.tasks_by_id(list(range(1, task["id"] + 1)))
        assert {t.site for t in rows.values() if t.job_id == job["id"]} == {SITE}
        assert_round_unharmed(live, task)
        # the researcher sees who has not approved: rejected, pending and never-answered sites
        view = live.client("bob").get_json(f"/v1/jobs/{job['id']}")
        assert SITE not in view["pending_sites"]
        assert {SITES[1], SITES[2], SITES[3]} <= set(view["pending_sites"])
    finally:
        cancel(live, job["id"])


# -- the chunked upload protocol -------------------------------------------------------------


def start(live: LiveCoordinator, data: bytes, sha: str | None = None) -> str:
    up = live.client(SITE).post_json(
        "/v1/uploads", {"sha256": sha or sha256(data), "size": len(data)}
    )
    assert up["complete"] is False
    return str(up["id"])


def put(
    live: LiveCoordinator, upload_id: str, index: int, data: bytes, chunk_sha: str | None = None
) -> Any:
    """One chunk, signed, with its X-Chunk-Sha256 (``chunk_sha`` to claim another one)."""
    path = f"/v1/uploads/{upload_id}/chunks/{index}"
    headers = live.signed_headers(SITE, "PUT", path, data)
    headers["X-Chunk-Sha256"] = chunk_sha or sha256(data)
    return live.send("PUT", path, body=data, headers=headers)


def complete(live: LiveCoordinator, upload_id: str) -> Any:
    return live.signed(SITE, "POST", f"/v1/uploads/{upload_id}/complete", {})


def test_an_upload_larger_than_the_limit_is_refused(live: LiveCoordinator) -> None:
    assert_refused(
        live,
        lambda: live.signed(
            SITE, "POST", "/v1/uploads", {"sha256": "a" * 64, "size": 256 << 10 | 1}
        ),
        413,
        contains="limited to 262144 bytes",
        principal=SITE,
    )
    assert_refused(
        live,
        lambda: live.signed(SITE, "POST", "/v1/uploads", {"sha256": "a" * 64, "size": -1}),
        422,
    )


def test_chunks_of_the_wrong_length_or_place_are_refused(live: LiveCoordinator) -> None:
    data = b"x" * 1000 + bytes(range(256))
    upload_id = start(live, data)
    for index, chunk in [(0, data[:-1]), (0, data + b"!"), (1, data), (-1, data), (0, b"")]:
        assert_refused(
            live, lambda i=index, c=chunk: put(live, upload_id, i, c), 400, contains="must hold"
        )
    assert put(live, upload_id, 0, data).status_code == 200
    assert complete(live, upload_id).json() == {"sha256": sha256(data)}


def test_a_chunk_that_does_not_match_its_sha256_is_refused_and_not_recorded(
    live: LiveCoordinator,
) -> None:
    data = b"v" * 900
    upload_id = start(live, data)
    status = f"/v1/uploads/{upload_id}"
    assert_refused(
        live,
        lambda: put(live, upload_id, 0, data, chunk_sha=sha256(b"other bytes")),
        400,
        contains="does not match its X-Chunk-Sha256",
        principal=SITE,
    )
    path = f"/v1/uploads/{upload_id}/chunks/0"
    unlabelled = live.signed_headers(SITE, "PUT", path, data)  # no X-Chunk-Sha256 at all
    assert_refused(
        live,
        lambda: live.send("PUT", path, body=data, headers=unlabelled),
        400,
        contains="needs an X-Chunk-Sha256 header",
    )
    assert_refused(live, lambda: put(live, upload_id, 0, data, chunk_sha="Z" * 64), 422)
    assert live.client(SITE).get_json(status)["received"] == []  # nothing recorded
    assert_refused(live, lambda: complete(live, upload_id), 409, contains="missing")
    assert put(live, upload_id, 0, data).status_code == 200
    assert live.client(SITE).get_json(status)["received"] == [0]
    assert complete(live, upload_id).json() == {"sha256": sha256(data)}


def test_completing_before_every_chunk_arrived_is_refused(live: LiveCoordinator) -> None:
    data = b"y" * 777
    upload_id = start(live, data)
    assert_refused(live, lambda: complete(live, upload_id), 409, contains="missing")
    assert put(live, upload_id, 0, data).status_code == 200
    assert complete(live, upload_id).json() == {"sha256": sha256(data)}
    # completing again (a retry whose answer was lost) is idempotent
    assert complete(live, upload_id).json() == {"sha256": sha256(data)}
    assert live.client(SITE).get_json(f"/v1/uploads/{upload_id}")["done"] is True


def test_bytes_that_do_not_match_the_announced_sha256_are_refused(live: LiveCoordinator) -> None:
    data, claimed = b"z" * 500, sha256(b"something else entirely")
    upload_id = start(live, data, sha=claimed)
    assert put(live, upload_id, 0, data).status_code == 200
    assert_refused(live, lambda: complete(live, upload_id), 400, contains="do not match")
    assert_refused(live, lambda: complete(live, upload_id), 409, contains="refused")
    assert_refused(live, lambda: put(live, upload_id, 0, data), 404, contains="no such upload")
    assert not live.coordinator.blobs.exists(claimed)
    assert live.client(SITE).upload_blob(data) == sha256(data)  # a fresh upload still works


def test_a_job_needs_a_finite_valid_model(live: LiveCoordinator) -> None:
    bob = live.client("bob")
    model = breast_mlp()
    nan = {k: v.copy() for k, v in model.params.items()}
    nan["0.bias"][0] = np.nan
    cases = [
        (params_to_bytes(Params(nan.items())), "NaN"),
        (bfloat16(), "not a valid model"),
        (b"not a model", "safetensors"),
    ]
    for initial, reason in cases:
        body = {
            "name": "bad",
            "task_name": "breast_mlp",
            "bundle_sha256": bob.upload_blob(model.task_bytes),
            "initial_sha256": bob.upload_blob(initial),
            "config": {},
        }
        assert_refused(
            live, lambda b=body: live.signed("bob", "POST", "/v1/jobs", b), 400, contains=reason
        )
    body["initial_sha256"] = bob.upload_blob(model.initial_bytes)
    for config, reason in [
        ({"rounds": 0}, "rounds"),
        ({"surprise": 1}, "unknown setting surprise"),
        ({"train": "fast"}, "[train] must be a table"),
        ({"round_timeout": "soon"}, "job configuration is refused: round_timeout must be"),
        ({"strategy": "fedavg", "min_sites": True}, "strategy.min_sites must be int"),
        ({"learning": {"rate": 1}}, "unknown setting learning"),
    ]:
        assert_refused(
            live,
            lambda c=config: live.signed("bob", "POST", "/v1/jobs", {**body, "config": c}),
            400,
            contains=reason,
        )


def test_an_interrupted_completion_ends_that_upload_and_a_new_one_works(
    live: LiveCoordinator,
) -> None:
    data = b"w" * 300
    upload_id = start(live, data)
    assert put(live, upload_id, 0, data).status_code == 200
    # what a crash between moving the bytes into place and recording it leaves: no part file
    live.coordinator.blobs.discard_upload(upload_id)
    assert_refused(live, lambda: complete(live, upload_id), 409, contains="start it again")
    assert_refused(live, lambda: complete(live, upload_id), 409)
    assert live.client(SITE).upload_blob(data) == sha256(data)
