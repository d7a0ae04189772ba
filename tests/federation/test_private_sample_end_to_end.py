"""Sample-level DP (DP-SGD at each site) with secure aggregation in a real federation: a
coordinator and three nodes over TLS, each a real process. Every node trains with DP-SGD and
pays for its optimizer steps out of its own privacy budget; a node whose budget is too small
refuses the job."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medfed.federation.coordinator.store import Store
from medfed.site.budget import SiteBudget
from tests.federation.conftest import SITES, Federation, medfed
from tests.federation.test_private_end_to_end import start_with_budgets

DATA = "breast-cancer"
BUDGET = 20.0
SMALL = 1.0  # far below what the job plans (ε = 4 at each site)


def test_a_node_reserves_a_sample_level_job_as_the_dp_sgd_it_will_run(tmp_path: Path) -> None:
    import warnings

    from medfed.config import TrainSettings
    from medfed.errors import UsageError
    from medfed.federation.node.privacy import protect_job
    from medfed.site.budget import BudgetExceeded
    from medfed.site.dp_sgd import DPSGD

    budget = SiteBudget.in_state(tmp_path)
    budget.set_budget(DATA, epsilon=BUDGET, delta=1e-5)
    train = {"batch_size": 16, "local_epochs": 2}
    job = {
        "rounds": 3,
        "min_sites": 2,
        "train": train,
        "privacy": {"dp": "sample", "target_epsilon": 4.0, "secure_aggregation": False},
    }
    protection = protect_job(
        "job-1", job, site="a", dataset=DATA, state_dir=tmp_path, identity_key=None, num_train=100
    )
    assert protection.dp is None and protection.secure is None  # DP-SGD runs in the site app
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Secure RNG turned off", UserWarning)
        dp_sgd = DPSGD.from_config(
            protection.config, settings=TrainSettings(**train), num_examples=100, rounds=3
        )
    (charge,) = budget.jobs(DATA)
    assert charge.noise_multiplier == dp_sgd.noise_multiplier == protection.sample_noise
    assert charge.sample_rate == 1 / 7  # 1/⌈100/16⌉, Opacus's Poisson rate
    assert charge.steps_per_round == 2 * 7 and charge.planned_rounds == 3
    assert budget.status(DATA).committed == pytest.approx(4.0, rel=1e-3)
    cost = protection.charge(1)
    assert cost is not None and 0 < cost.epsilon == cost.spent < 4.0

    with pytest.raises(BudgetExceeded, match="the node refuses it"):
        protect_job(
            "job-2",
            {**job, "privacy": {**job["privacy"], "target_epsilon": BUDGET}},
            site="a",
            dataset=DATA,
            state_dir=tmp_path,
            identity_key=None,
            num_train=100,
        )
    with pytest.raises(UsageError, match="training record"):
        protect_job("job-3", job, site="a", dataset=DATA, state_dir=tmp_path, identity_key=None)


@pytest.mark.integration
@pytest.mark.slow
def test_sample_level_dp_job_trains_with_dp_sgd_and_spends_each_sites_budget(
    federation: Federation,
) -> None:
    fed = federation
    # all three at once: the node whose budget is too small declines the job when it is
    # announced (it reserves a DP job's budget as it approves it), so no round asks it
    bob = start_with_budgets(fed, (BUDGET, BUDGET, SMALL))

    proc = medfed(
        "job", "submit", "examples/breast_mlp.py", "--kit", bob, "--data", DATA,
        "--rounds", "2", "--min-sites", "2", "--round-timeout", "60",
        "--dp", "sample", "--target-epsilon", "4", "--clip", "1.0",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job_id = re.search(r"(job-[0-9a-f]+)", proc.stdout).group(1)

    proc = medfed("job", "status", job_id, "--watch", "--kit", bob, timeout=120)
    assert proc.returncode == 0, proc.stderr
    logs = "\n".join(fed.log(k) for k in ("coordinator", *SITES))
    assert "complete" in proc.stdout, proc.stdout + logs
    assert re.search(rf"{SITES[2]}\s+\(rejected\)", proc.stdout), proc.stdout  # declined at once
    assert "waiting for approval" not in proc.stdout, proc.stdout  # it declined: not waited for
    assert "ε per site after round 2 (sample level, DP-SGD)" in proc.stdout, proc.stdout
    # Opacus's secure_mode warning is not printed by the nodes (they say it as an event)
    assert "Warning" not in logs and "Secure RNG" not in logs, logs
    assert "DP-SGD with noise multiplier" in fed.log(SITES[0])

    # each site's ε as its DP-SGD accountant reported it in its train metrics
    store = Store(f"sqlite:///{fed.kits / 'coordinator' / 'state' / 'coordinator.db'}")
    try:
        rounds = store.rounds(job_id)
    finally:
        store.close()
    assert [r["round"] for r in rounds] == [1, 2]
    # the declining site was never asked: no round has a failure
    assert all(not r["summary"]["failures"] for r in rounds), rounds
    reported = rounds[-1]["summary"]["epsilon_per_site"]
    assert sorted(reported) == sorted(SITES[:2]), rounds
    assert rounds[-1]["summary"]["privacy"] == {}  # no accountant at the coordinator
    reports = rounds[-1]["summary"]["reports"]  # held, masked updates: saturation counted
    assert sorted(reports) == sorted(SITES[:2])
    assert all(r["saturated"] is not None and r["epsilon"] > 0 for r in reports.values())

    for site in SITES[:2]:
        state = fed.kit("sites", site) / "state"
        status = SiteBudget.in_state(state).status(DATA)
        # the node's budget composed the same steps as the site's DP-SGD accountant
        # (two RDP libraries: the same ε up to their choice of Rényi orders, ~2e-4)
        assert 0 < status.spent <= BUDGET
        assert status.spent == pytest.approx(reported[site], rel=1e-3)
        assert status.spent == pytest.approx(4.0, rel=0.02)  # the job's target, all rounds
        (job,) = SiteBudget.in_state(state).jobs(DATA)
        assert job.steps_per_round > 1 and 0 < job.sample_rate < 1
        entries = [
            json.loads(line) for line in (state / "egress-ledger.jsonl").read_text().splitlines()
        ]
        costs = [e["epsilon"] for e in entries if e["epsilon"] is not None]
        assert len(costs) == 2 and all(c > 0 for c in costs)
        assert sum(costs) == pytest.approx(status.spent, rel=1e-6)  # per-round costs add up
        assert any(f"epsilon spent on {DATA}" in e["note"] for e in entries)
        proc = medfed("node", "ledger", "verify", "--state", str(state))
        assert proc.returncode == 0 and "intact" in proc.stdout, proc.stdout + proc.stderr

    # the node with the small budget refused the job, with the sentence, and spent nothing
    small = fed.kit("sites", SITES[2]) / "state"
    assert SiteBudget.in_state(small).status(DATA).spent == 0
    log = fed.log(SITES[2])
    assert "refuses" in log and "the node refuses it" in log, log
