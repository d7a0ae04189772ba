"""Client-level DP and secure aggregation in a whole federation: the real coordinator and three
node agents in this process, connected in memory (tests/federation/inmemory.py; the same
server code, signatures and checks as over TLS; real processes over TLS are the business of
test_end_to_end.py and test_robustness.py). The coordinator gets masked vectors only; every
node pays for its rounds out of its own privacy budget, and a node whose budget is too small
refuses."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from medfed.cli.main import cli
from medfed.site.budget import SiteBudget
from medfed.site.secure_aggregation import MASKED_TENSOR
from medfed.tensor_file import open_params
from tests.federation.conftest import SITES, Federation, medfed
from tests.federation.inmemory import InMemoryFederation

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = "breast-cancer"
BUDGET = 20.0
SMALL = 1.0  # far below what the job plans (ε = 8)


@pytest.fixture
def fed(inmemory_federation: InMemoryFederation) -> InMemoryFederation:
    return inmemory_federation


def medfed_local(*args: str) -> str:
    """A local ``medfed`` command (a node's budget or ledger: no coordinator involved)."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def start_with_budgets(
    fed: Federation, budgets: tuple[float, ...], sites: tuple[str, ...] = SITES
) -> str:
    """A coordinator (once), and one auto-approving node per site with its own budget on
    DATA, each a real process over TLS (test_private_sample_end_to_end.py); returns the
    researcher's kit."""
    if "coordinator" not in fed.procs:
        fed.start_coordinator()
    for site, epsilon in zip(sites, budgets, strict=True):
        state = fed.kit("sites", site) / "state"
        proc = medfed(
            "node", "budget", "set", DATA, "--epsilon", str(epsilon), "--state", str(state)
        )
        assert proc.returncode == 0, proc.stderr
        fed.start_node(site, "--auto-approve")
    return str(fed.kit("researchers", "bob"))


def start_nodes_with_budgets(
    fed: InMemoryFederation, budgets: tuple[float, ...], sites: tuple[str, ...] = SITES[:2]
) -> None:
    """One auto-approving node agent per site, in memory, each with its own budget on DATA."""
    for site, epsilon in zip(sites, budgets, strict=True):
        state = fed.live.kits / "sites" / site / "state"
        medfed_local(
            "node", "budget", "set", DATA, "--epsilon", str(epsilon), "--state", str(state)
        )
        fed.start_node(site)


def test_dp_job_with_secure_aggregation_spends_the_sites_budgets_and_sends_only_masked_vectors(
    fed: InMemoryFederation,
) -> None:
    start_nodes_with_budgets(fed, (BUDGET, BUDGET))

    started = time.monotonic()
    privacy = {"dp": "client", "secure_aggregation": True, "target_epsilon": 8}
    job_id = fed.submit(rounds=2, min_sites=2, round_timeout=60, privacy=privacy)["id"]
    # the node with the small budget joins once round 1 has its two sites: a round that
    # asked it and only one other could not finish (the process version left this to chance)
    for site in SITES[:2]:
        fed.nodes[site].wait_for("approved")
    start_nodes_with_budgets(fed, (SMALL,), sites=SITES[2:])
    view = fed.wait_for_job(job_id, timeout=120)
    assert view["status"] == "complete", f"{view.get('error')}\n{fed.logs()}"
    last = view["rounds_detail"][-1]["privacy"]  # what `job status` prints as ε
    assert last["epsilon"] is not None and last["epsilon"] > 0, view
    assert time.monotonic() - started < 90

    for site in SITES[:2]:
        state = fed.nodes[site].state
        status = SiteBudget.in_state(state).status(DATA)
        assert 0 < status.spent <= BUDGET
        entries = [
            json.loads(line) for line in (state / "egress-ledger.jsonl").read_text().splitlines()
        ]
        costs = [e["epsilon"] for e in entries if e["epsilon"] is not None]
        assert costs and all(c > 0 for c in costs)
        assert sum(costs) == pytest.approx(status.spent, rel=1e-6)  # per-round costs add up
        assert any(f"epsilon spent on {DATA}" in e["note"] for e in entries)
        assert "intact" in medfed_local("node", "ledger", "verify", "--state", str(state))

    # the node with the small budget refused the job, with the sentence, and spent nothing
    small = fed.nodes[SITES[2]]
    assert SiteBudget.in_state(small.state).status(DATA).spent == 0
    assert "refuses" in small.text and "the node refuses it" in small.text, small.text

    # the coordinator never stored a plain update: training replies carry none, and every
    # blob of a secure-aggregation reply is one masked uint32 vector
    from sqlalchemy import select

    from medfed.federation.coordinator.store import tasks

    store, blobs = fed.coordinator.store, fed.coordinator.blobs
    with store.engine.begin() as c:
        rows = c.execute(select(tasks).where(tasks.c.job_id == job_id)).all()
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
    fed: InMemoryFederation,
) -> None:
    fed.start_node(SITES[0], require=frozenset({"dp", "secagg"}))
    for site in SITES[1:]:
        fed.start_node(site)
    job_id = fed.submit(rounds=1, min_sites=2, round_timeout=60)["id"]
    view = fed.wait_for_job(job_id, timeout=120)
    assert view["status"] == "complete", (view, fed.logs())
    log = fed.nodes[SITES[0]].text
    assert "requires differential privacy" in log and "secure aggregation" in log, log
    assert "the node refuses it" in log, log
    assert view["declined"] == {SITES[0]: "the site requires dp and secagg"}, view
    ledger = fed.nodes[SITES[0]].state / "egress-ledger.jsonl"
    assert not ledger.exists() or all(
        json.loads(line)["kind"] != "update" for line in ledger.read_text().splitlines()
    )


def test_a_node_reserves_a_dp_job_s_budget_when_it_approves_and_releases_it_if_never_run(
    fed: InMemoryFederation,
) -> None:
    """A DP job is paid for when the site approves it (a node that cannot pay declines at
    once, so no round asks it); a job cancelled before its first round gives the budget back."""
    from tests.federation.server import cancel

    start_nodes_with_budgets(fed, (BUDGET,), sites=SITES[:1])
    privacy = {"dp": "client", "secure_aggregation": True, "target_epsilon": 8}
    # two sites needed, one there: the job is approved and waits, no task is ever sent
    job_id = fed.submit(rounds=2, min_sites=2, round_timeout=60, privacy=privacy)["id"]
    fed.nodes[SITES[0]].wait_for("approved")
    state = fed.live.kits / "sites" / SITES[0] / "state"
    assert SiteBudget.in_state(state).status(DATA).committed == pytest.approx(8.0, rel=0.02)
    cancel(fed.live, job_id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and SiteBudget.in_state(state).status(DATA).committed > 0:
        time.sleep(0.1)
    status = SiteBudget.in_state(state).status(DATA)
    assert status.committed == 0 and status.spent == 0, fed.logs()


def test_a_node_keeps_each_job_s_site_state_on_its_own_disk(fed: InMemoryFederation) -> None:
    """A DP-SGD job's accountant history is the site's state: kept under the node's state
    folder, by job, after every round (a restarted node goes on accounting from it)."""
    from medfed.site.state import DirectoryStateStore

    start_nodes_with_budgets(fed, (BUDGET, BUDGET))
    job_id = fed.submit(
        rounds=2,
        min_sites=2,
        privacy={"dp": "sample", "noise_multiplier": 1.0, "clip_norm": 1.0},
    )["id"]
    view = fed.wait_for_job(job_id, timeout=180)
    assert view["status"] == "complete", (view, fed.logs())
    for site in SITES[:2]:
        node = fed.nodes[site]
        store = DirectoryStateStore(node.state / "site-state")
        files = sorted(store.folder(job_id, site).glob("round-*.safetensors"))
        assert [f.name for f in files] == ["round-000001.safetensors", "round-000002.safetensors"]
        history = store.latest(job_id, site)["medfed.dp_sgd.history"]
        first = store.load(job_id, site, before=2)["medfed.dp_sgd.history"]
        assert history[:, 2].sum() == 2 * first[:, 2].sum() > 0  # two rounds' steps
