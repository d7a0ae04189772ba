"""Client-level DP and secure aggregation in a real federation: a coordinator and three nodes
over TLS, each a real process. The coordinator gets masked vectors only; every node pays for
its rounds out of its own privacy budget, and a node whose budget is too small refuses."""

from __future__ import annotations

import json
import re
import time

import pytest

from medfed.federation.coordinator.blobs import BlobStore
from medfed.federation.coordinator.store import Store
from medfed.site.budget import SiteBudget
from medfed.site.secure_aggregation import MASKED_TENSOR
from medfed.tensor_file import open_params
from tests.federation.conftest import SITES, Federation, medfed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = "breast-cancer"
BUDGET = 20.0
SMALL = 1.0  # far below what the job plans (ε = 8)


def start_with_budgets(fed: Federation, budgets: tuple[float, ...]) -> str:
    """A coordinator, and one auto-approving node per site with its own budget on DATA;
    returns the researcher's kit."""
    fed.start_coordinator()
    for site, epsilon in zip(SITES, budgets, strict=True):
        state = fed.kit("sites", site) / "state"
        proc = medfed(
            "node", "budget", "set", DATA, "--epsilon", str(epsilon), "--state", str(state)
        )
        assert proc.returncode == 0, proc.stderr
        fed.start_node(site, "--auto-approve")
    return str(fed.kit("researchers", "bob"))


def test_dp_job_with_secure_aggregation_spends_the_sites_budgets_and_sends_only_masked_vectors(
    federation: Federation,
) -> None:
    fed = federation
    bob = start_with_budgets(fed, (BUDGET, BUDGET, SMALL))

    started = time.monotonic()
    proc = medfed(
        "job", "submit", "examples/breast_mlp.py", "--kit", bob, "--data", DATA,
        "--rounds", "2", "--min-sites", "2", "--round-timeout", "60",
        "--dp", "client", "--target-epsilon", "8",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job_id = re.search(r"(job-[0-9a-f]+)", proc.stdout).group(1)

    proc = medfed("job", "status", job_id, "--watch", "--kit", bob, timeout=120)
    assert proc.returncode == 0, proc.stderr
    logs = "\n".join(fed.log(k) for k in ("coordinator", *SITES))
    assert "complete" in proc.stdout, proc.stdout + logs
    assert "ε" in proc.stdout and "privacy: ε =" in proc.stdout, proc.stdout
    assert time.monotonic() - started < 90

    for site in SITES[:2]:
        state = fed.kit("sites", site) / "state"
        status = SiteBudget.in_state(state).status(DATA)
        assert 0 < status.spent <= BUDGET
        entries = [
            json.loads(line) for line in (state / "egress-ledger.jsonl").read_text().splitlines()
        ]
        costs = [e["epsilon"] for e in entries if e["epsilon"] is not None]
        assert costs and all(c > 0 for c in costs)
        assert sum(costs) == pytest.approx(status.spent, rel=1e-6)  # per-round costs add up
        assert any(f"epsilon spent on {DATA}" in e["note"] for e in entries)
        proc = medfed("node", "ledger", "verify", "--state", str(state))
        assert proc.returncode == 0 and "intact" in proc.stdout, proc.stdout + proc.stderr

    # the node with the small budget refused the job, with the sentence, and spent nothing
    small = fed.kit("sites", SITES[2]) / "state"
    assert SiteBudget.in_state(small).status(DATA).spent == 0
    log = fed.log(SITES[2])
    assert "refuses" in log and "the node refuses it" in log, log

    # the coordinator never stored a plain update: training replies carry none, and every
    # blob of a secure-aggregation reply is one masked uint32 vector
    coordinator_state = fed.kits / "coordinator" / "state"
    store = Store(f"sqlite:///{coordinator_state / 'coordinator.db'}")
    blobs = BlobStore(coordinator_state)
    try:
        from sqlalchemy import select

        from medfed.federation.coordinator.store import tasks

        with store.engine.begin() as c:
            rows = c.execute(select(tasks).where(tasks.c.job_id == job_id)).all()
    finally:
        store.close()
    done = [r._mapping for r in rows if r._mapping["status"] == "done"]
    train = [m for m in done if m["operation"] == "train"]
    secagg = [m for m in done if m["operation"].startswith("secagg/")]
    assert train and secagg
    assert all(m["reply_sha256"] is None for m in train)
    masked = [m["reply_sha256"] for m in secagg if m["reply_sha256"] is not None]
    assert len(masked) >= 4  # two sites, two rounds
    for sha in masked:
        params, _ = open_params(blobs.path(sha))
        assert list(params) == [MASKED_TENSOR]
        vector = params[MASKED_TENSOR]
        assert vector.ndim == 1 and vector.dtype.name == "uint32"
    refused = [m for m in done if m["site"] == SITES[2] and m["operation"] == "train"]
    assert all(json.loads(m["reply"])["failure"] is not None for m in refused)


def test_a_site_that_requires_dp_refuses_a_job_without_it_and_the_others_finish(
    federation: Federation,
) -> None:
    fed = federation
    fed.start_coordinator()
    fed.start_node(SITES[0], "--auto-approve", "--require", "dp", "--require", "secagg")
    for site in SITES[1:]:
        fed.start_node(site, "--auto-approve")
    bob = str(fed.kit("researchers", "bob"))
    proc = medfed(
        "job", "submit", "examples/breast_mlp.py", "--kit", bob, "--data", DATA,
        "--rounds", "1", "--min-sites", "2", "--round-timeout", "60",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job_id = re.search(r"(job-[0-9a-f]+)", proc.stdout).group(1)
    proc = medfed("job", "status", job_id, "--watch", "--kit", bob, timeout=120)
    logs = "\n".join(fed.log(k) for k in ("coordinator", *SITES))
    assert proc.returncode == 0 and "complete" in proc.stdout, proc.stdout + logs
    log = fed.log(SITES[0])
    assert "requires differential privacy" in log and "secure aggregation" in log, log
    assert "the node refuses it" in log, log
    ledger = fed.kit("sites", SITES[0]) / "state" / "egress-ledger.jsonl"
    assert not ledger.exists() or all(
        json.loads(line)["kind"] != "update" for line in ledger.read_text().splitlines()
    )
