"""A coordinator and three nodes over TLS, each a real process, train a job end to end."""

from __future__ import annotations

import json
import re
import time

import pytest

from medfed.serde import load_params
from tests.federation.conftest import SITES, Federation, medfed

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _status(fed: Federation, job_id: str) -> dict:
    proc = medfed("job", "status", job_id, "--kit", str(fed.kit("researchers", "bob")))
    assert proc.returncode == 0, proc.stderr
    return {"text": proc.stdout}


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_three_hospitals_train_a_job_with_one_steward_approving_by_hand(
    federation: Federation, tmp_path
) -> None:
    fed = federation
    fed.start_coordinator()
    fed.start_node(SITES[0], "--auto-approve")
    fed.start_node(SITES[1], "--auto-approve")
    fed.start_node(SITES[2])  # its data steward approves by hand
    bob = str(fed.kit("researchers", "bob"))

    proc = medfed(
        "job",
        "submit",
        "examples/breast_mlp.py",
        "--kit",
        bob,
        "--data",
        "breast-cancer",
        "--rounds",
        "3",
        "--min-sites",
        "3",
        "--round-timeout",
        "120",
    )
    assert proc.returncode == 0, proc.stderr
    job_id = re.search(r"(job-[0-9a-f]+)", proc.stdout).group(1)
    sha = re.search(r"task sha256 ([0-9a-f]{64})", proc.stdout).group(1)

    state = fed.kit("sites", SITES[2]) / "state"
    _wait_for(
        lambda: medfed("node", "pending", "--state", str(state)).stdout.count(sha[:12]) > 0,
        60,
        "the job to reach the third steward",
    )
    assert "waiting for approval at" in _status(fed, job_id)["text"]
    proc = medfed("node", "approve", sha[:12], "--state", str(state), "--by", "steward")
    assert proc.returncode == 0, proc.stderr

    proc = medfed("job", "status", job_id, "--watch", "--kit", bob, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "complete" in proc.stdout, proc.stdout + fed.log("coordinator")

    model = tmp_path / "model.safetensors"
    proc = medfed("job", "download", job_id, "--kit", bob, "--out", str(model))
    assert proc.returncode == 0, proc.stderr
    params, meta = load_params(model)
    assert meta["round"] == "3" and "0.weight" in params

    for site in SITES:
        st = fed.kit("sites", site) / "state"
        proc = medfed("node", "ledger", "verify", "--state", str(st))
        assert proc.returncode == 0 and "intact" in proc.stdout, proc.stdout + proc.stderr
        lines = (st / "egress-ledger.jsonl").read_text().splitlines()
        kinds = [json.loads(line)["kind"] for line in lines]
        assert kinds.count("update") == 3  # one update per round left this site, recorded

    proc = medfed("job", "logs", job_id, "--kit", bob)
    assert "job.submit" in proc.stdout and "task.reply" in proc.stdout
