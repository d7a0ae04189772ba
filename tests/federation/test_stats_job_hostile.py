"""A statistics job against a coordinator that asks more than was approved, in memory (the
real coordinator and node agent, signed requests, no sockets): the node refuses the exchange
and only its refusal leaves; a job whose bundle is not its query's text is refused at submit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from medfed.data.statistics import StatsQuery
from medfed.data.statistics.codec import query_to_json
from medfed.federation.coordinator.stats_job import query_document, stats_job_config
from medfed.federation.transfer.client import ApiError
from medfed.records import Instruction, Operation, Params
from medfed.serde import instruction_to_wire, params_to_bytes
from medfed.site.ledger import EgressLedger

FEATURES = ["mean radius", "mean texture"]


def _submit(fed: Any, *, bundle: bytes | None = None, min_sites: int = 3) -> str:
    config = stats_job_config(
        {
            "kind": "statistics",
            "query": query_to_json(StatsQuery(features=tuple(FEATURES))),
            "features": FEATURES,
            "min_sites": min_sites,  # more than will approve: the job stays running
        }
    )
    bob = fed.live.client("bob")
    sha = bob.upload_blob(bundle or query_document(config["query"], config["features"]))
    empty = bob.upload_blob(params_to_bytes(Params()))
    body = {"name": "s", "task_name": "statistics", "bundle_sha256": sha,
            "initial_sha256": empty, "config": config}  # fmt: skip
    return str(bob.post_json("/v1/jobs", body)["id"])


def test_a_node_refuses_an_exchange_beyond_the_approved_query(inmemory_federation: Any) -> None:
    fed = inmemory_federation
    job_id = _submit(fed)
    node = fed.start_node("academic-centre")
    store, blobs = fed.coordinator.store, fed.coordinator.blobs
    deadline = time.monotonic() + 60
    while store.approvals(job_id).get("academic-centre") != "approved":
        assert time.monotonic() < deadline, node.text
        time.sleep(0.1)
    # the coordinator (hostile, or compromised) asks about a feature nobody approved
    message = {
        "query": {"stage": "moments", "features": [*FEATURES, "mean area"]},
        "min_records": 10,
    }
    instruction = Instruction(Operation.STATS, 1, Params(), seed=0, message=message, run=job_id)
    task = store.ensure_task(
        job_id=job_id, round=1, operation="stats", site="academic-centre",
        instruction=instruction_to_wire(instruction), params_sha256=blobs.put_params(Params()),
    )  # fmt: skip
    fed.coordinator.wakeup.bump("tasks")
    while (row := store.tasks_by_id([task.id])[task.id]).status != "done":
        assert time.monotonic() < deadline, node.text
        time.sleep(0.1)
    assert row.reply is not None and row.reply_sha256 is None  # no sums came
    failure = row.reply["failure"]
    assert "refuses the statistics exchange" in failure["message"]
    assert "'mean area', not in the approved query" in failure["message"]
    kinds = [e.kind for e in EgressLedger.in_state(node.state).entries() if e.job == job_id]
    assert kinds == ["failure"]  # only the refusal left the site


def test_a_statistics_job_whose_bundle_is_not_its_query_is_refused(
    inmemory_federation: Any,
) -> None:
    with pytest.raises(ApiError) as caught:
        _submit(inmemory_federation, bundle=b'{"kind":"statistics","query":{}}')
    assert caught.value.status == 400
    assert "bundle is its query's JSON text" in caught.value.detail


def test_a_bad_statistics_query_is_refused_at_submit(inmemory_federation: Any, tmp_path: Path):
    bob = inmemory_federation.live.client("bob")
    empty = bob.upload_blob(params_to_bytes(Params()))
    bad = {"kind": "statistics", "query": {"min_count": 0}, "features": FEATURES}
    body = {"name": "s", "task_name": "statistics", "bundle_sha256": empty,
            "initial_sha256": empty, "config": bad}  # fmt: skip
    with pytest.raises(ApiError) as caught:
        bob.post_json("/v1/jobs", body)
    assert caught.value.status == 400 and "min_count must be between 1" in caught.value.detail
