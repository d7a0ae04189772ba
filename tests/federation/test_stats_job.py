"""Federated statistics over a real federation: a coordinator and nodes as processes, HTTPS
on 127.0.0.1. A statistics job gives the simulation's released figures over the same sites'
data (in the clear and under secure aggregation); only approving sites answer; small counts
stay suppressed across the wire; the steward sees what would leave with `medfed node inspect`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.federation.conftest import Federation, medfed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEATURES = ("mean radius", "mean texture")
QUERY = (
    *(a for f in FEATURES for a in ("--feature", f)),
    *("--statistic", "count", "--statistic", "mean", "--statistic", "variance"),
    *("--statistic", "histogram", "--statistic", "quantiles", "--quantile", "0.5"),
)


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _simulated(sites: list[str], *, secure: bool, min_count: int = 10) -> dict:
    """The simulation's result over ``sites`` of the bundled data set (the nodes' shares)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from medfed.config import DataConfig
    from medfed.data.statistics import Statistic, StatsQuery
    from medfed.orchestration.backends.inprocess import InProcessBackend
    from medfed.orchestration.secure_round import SecureAggregation
    from medfed.orchestration.statistics import StatsSites, run_statistics
    from medfed.secagg import ed25519_verifier

    query = StatsQuery(
        features=FEATURES,
        statistics=(Statistic.COUNT, Statistic.MEAN, Statistic.VARIANCE, Statistic.HISTOGRAM,
                    Statistic.QUANTILES),
        quantiles=(0.5,),
        min_count=min_count,
    )  # fmt: skip
    factory = StatsSites(data=DataConfig(name="breast-cancer"), seed=0, names=sites)
    protection = None
    if secure:
        factory.keys = {s: ed25519.Ed25519PrivateKey.generate().private_bytes_raw() for s in sites}
        public = {
            s: ed25519.Ed25519PrivateKey.from_private_bytes(k).public_key()
            for s, k in factory.keys.items()
        }
        protection = SecureAggregation(job="statistics", verify_identity=ed25519_verifier(public))
    backend = InProcessBackend(factory)
    try:
        return run_statistics(backend, query, features=FEATURES, secure=protection).to_json()
    finally:
        backend.close()


def _no_small_count(result: dict, min_count: int) -> None:
    """Every released count is suppressed (None), zero, or at least ``min_count``."""
    rows = [result["federation"], *result["per_site"].values()]
    for row in rows:
        counts = [row["records"]]
        for f in row["features"].values():
            counts += [f["count"], f["missing"], *(f["histogram"] or {"counts": []})["counts"]]
        assert all(c is None or c == 0 or c >= min_count for c in counts), counts


@pytest.mark.parametrize("secure", [False, True], ids=["clear", "secure-aggregation"])
def test_a_statistics_job_releases_the_simulations_figures(
    federation: Federation, tmp_path: Path, secure: bool
) -> None:
    fed = federation
    fed.start_coordinator()
    approving = ["academic-centre", "community-north"]
    for site in approving:
        fed.start_node(site, "--auto-approve")
    bob = str(fed.kit("researchers", "bob"))
    out = tmp_path / "result.json"
    flags = ["--secure"] if secure else []
    shown = _ok(
        medfed(
            "stats",
            "--kit",
            bob,
            "--data",
            "breast-cancer",
            *QUERY,
            *flags,
            "--min-sites",
            "2",
            "--round-timeout",
            "120",
            "--wait",
            "--json",
            str(out),
            timeout=300,
        )
    )
    got = json.loads(out.read_text())
    assert got["sites"] == approving, fed.log("coordinator")
    assert got == _simulated(approving, secure=secure)
    assert got["secure_aggregation"] is secure
    assert ("site academic-centre" in shown) is not secure  # per-site rows only in the clear
    assert "federation" in shown and "mean radius" in shown
    _no_small_count(got, 10)
    assert any(None in f["histogram"]["counts"] for f in got["federation"]["features"].values())
    # the stored result, again, by the job's id
    job_id = re.search(r"(job-[0-9a-f]+)", shown).group(1)
    again = tmp_path / "again.json"
    _ok(medfed("stats", "--kit", bob, "--job", job_id, "--json", str(again)))
    assert json.loads(again.read_text()) == got
    status = _ok(medfed("job", "status", job_id, "--kit", bob))
    assert "complete" in status and "mean radius" in status
    model = medfed("job", "download", job_id, "--kit", bob, cwd=tmp_path)
    assert model.returncode == 2 and "a statistics job: it has no model" in model.stderr


def test_only_approving_sites_answer_and_small_sites_decline(
    federation: Federation, tmp_path: Path
) -> None:
    fed = federation
    fed.start_coordinator()
    fed.start_node("academic-centre", "--auto-approve")
    fed.start_node("community-north", "--auto-approve")
    fed.start_node("oncology-clinic")  # its steward has not approved anything
    bob = str(fed.kit("researchers", "bob"))
    out = tmp_path / "result.json"
    # community-north holds 114 records: under a minimum count of 200 it sends nothing
    shown = _ok(
        medfed(
            "stats",
            "--kit",
            bob,
            "--data",
            "breast-cancer",
            *QUERY,
            "--min-count",
            "200",
            "--min-sites",
            "2",
            "--round-timeout",
            "120",
            "--wait",
            "--json",
            str(out),
            timeout=300,
        )
    )
    got = json.loads(out.read_text())
    assert got["sites"] == ["academic-centre"]
    assert (
        "community-north" in got["failures"]
        and "fewer records than the minimum count 200" in (got["failures"]["community-north"])
    )
    assert "114" not in got["failures"]["community-north"]  # its count stays at the site
    assert "oncology-clinic" not in got["failures"]  # never asked: it did not approve
    _no_small_count(got, 200)
    assert got["federation"]["records"] == 284
    job_id = re.search(r"(job-[0-9a-f]+)", shown).group(1)

    # the unapproving site: the query waits for its steward, and nothing left it
    onc = str(fed.kit("sites", "oncology-clinic"))
    pending = _ok(medfed("node", "pending", "--kit", onc))
    assert job_id in pending and "statistics.query.min_count = 200" in pending, pending
    ledger = medfed("node", "ledger", "show", "--kit", onc)
    assert "nothing has left this node yet" in ledger.stderr, ledger.stdout + ledger.stderr
    sent = _ok(medfed("node", "ledger", "show", "--kit", str(fed.kit("sites", "community-north"))))
    assert job_id in sent  # a site that declined the exchange sent its failure, recorded

    # and its steward sees what would leave before deciding: here, only a refusal (95 < 200)
    seen = _ok(medfed("node", "inspect", "breast-cancer", "--kit", onc, "--job", job_id))
    assert "would send no statistics" in seen and "fewer than the minimum count 200" in seen
    raw = json.loads(
        _ok(medfed("node", "inspect", "breast-cancer", "--kit", onc, "--job", job_id, "--json"))
    )
    assert raw["message"]["min_records"] == 200 and "blocks" not in raw["reply"]
    assert raw["reply"]["failure"]["kind"] == "DataError"


def test_a_dp_query_is_paid_from_the_sites_budget_or_declined(
    federation: Federation, tmp_path: Path
) -> None:
    fed = federation
    fed.start_coordinator()
    rich = str(fed.kit("sites", "academic-centre"))
    _ok(medfed("node", "budget", "set", "breast-cancer", "--epsilon", "10", "--kit", rich))
    fed.start_node("academic-centre", "--auto-approve")
    fed.start_node("community-north", "--auto-approve")  # no budget set: it must decline
    bob = str(fed.kit("researchers", "bob"))
    out = tmp_path / "result.json"
    shown = _ok(
        medfed(
            "stats",
            "--kit",
            bob,
            "--data",
            "breast-cancer",
            "--feature",
            "mean radius",
            "--statistic",
            "count",
            "--statistic",
            "mean",
            "--epsilon",
            "1",
            "--range",
            "mean radius=-5:5",
            "--min-sites",
            "1",
            "--round-timeout",
            "120",
            "--wait",
            "--json",
            str(out),
            timeout=300,
        )
    )
    got = json.loads(out.read_text())
    assert got["sites"] == ["academic-centre"] and got["epsilon"] == pytest.approx(1.0, rel=0.05)
    job_id = re.search(r"(job-[0-9a-f]+)", shown).group(1)
    budget = _ok(medfed("node", "budget", "show", "breast-cancer", "--kit", rich))
    row = next(line for line in budget.splitlines() if "breast-cancer" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[-1].rstrip("…") in job_id, budget  # the job, reserved and charged
    assert 0 < float(cells[3]) <= 1.0, budget  # spent: the query's ε (at the budget's δ)
    status = _ok(medfed("job", "status", job_id, "--kit", bob))
    assert "community-north declined" in status, status


def test_a_researcher_without_data_asks_registered_data_sets_under_a_contract(
    federation: Federation, tmp_path: Path
) -> None:
    from medfed.data.statistics import StatsQuery, answer_tables, site_table
    from medfed.site.datasets import DatasetRegistry

    fed = federation
    data = tmp_path / "my-data"
    _ok(medfed("data", "export", "breast-cancer", "--out", str(data)))
    contract = data / "bc.contract.toml"
    _ok(medfed("data", "contract", str(data / "data.toml"), "--out", str(contract)))
    sites = ["academic-centre", "community-north"]
    fed.start_coordinator()
    for site in sites:
        kit = str(fed.kit("sites", site))
        table = str(data / f"{site}_train.csv")
        _ok(
            medfed("node", "dataset", "add", "bc", table, "--contract", str(contract), "--kit", kit)
        )
        fed.spawn(site, "node", "start", "--kit", kit, "--data", "bc", "--auto-approve")
    researcher = tmp_path / "researcher"
    researcher.mkdir()
    bob = str(fed.kit("researchers", "bob"))
    shown = _ok(
        medfed(
            "stats",
            "--kit",
            bob,
            "--data",
            "bc",
            "--contract",
            str(contract),
            "--secure",
            "--min-sites",
            "2",
            "--round-timeout",
            "120",
            "--wait",
            "--json",
            "out.json",
            cwd=researcher,
            timeout=300,
        )
    )
    got = json.loads((researcher / "out.json").read_text())
    assert sorted(researcher.iterdir()) == [researcher / "out.json"]  # no data came here
    assert "the coordinator learnt only the sums over sites" in shown
    assert got["sites"] == sites and got["secure_aggregation"] is True
    # the same query over the nodes' registered data sets, in memory (the simulation's flow)
    tables = {}
    for site in sites:
        registry = DatasetRegistry.in_state(fed.kit("sites", site) / "state")
        served = registry.load("bc")  # the node answers from its records as recorded
        tables[site] = site_table(registry.load_raw("bc"), served.spec, split="all")
    expected = answer_tables(tables, StatsQuery()).to_json()["federation"]
    # the same counts; the same means and variances up to secure aggregation's fixed point
    assert got["federation"]["features"].keys() == expected["features"].keys()
    for name, want in expected["features"].items():
        have = got["federation"]["features"][name]
        assert (have["count"], have["missing"]) == (want["count"], want["missing"]), name
        assert have["mean"] == pytest.approx(want["mean"], rel=1e-6, abs=1e-9), name
        assert have["variance"] == pytest.approx(want["variance"], rel=1e-6), name
    assert got["federation"]["records"] == sum(t.rows for t in tables.values())


def test_a_kaplan_meier_curve_over_the_federation_is_the_simulations(
    federation: Federation, tmp_path: Path
) -> None:
    from medfed.config import DataConfig
    from medfed.data.statistics import Statistic, StatsQuery
    from medfed.orchestration.backends.inprocess import InProcessBackend
    from medfed.orchestration.statistics import StatsSites, run_statistics

    fed = federation
    fed.start_coordinator()
    shares = {"academic-centre": "other-institutions", "community-north": "inst-1"}
    for site, share in shares.items():
        kit = str(fed.kit("sites", site))
        fed.spawn(site, "node", "start", "--kit", kit, "--data", "lung", "--site", share,
                  "--auto-approve")  # fmt: skip
    bob = str(fed.kit("researchers", "bob"))
    out = tmp_path / "km.json"
    shown = _ok(
        medfed(
            "stats",
            "--kit",
            bob,
            "--data",
            "lung",
            "--statistic",
            "count",
            "--statistic",
            "survival",
            "--feature",
            "age",
            "--no-per-site",
            "--min-sites",
            "2",
            "--round-timeout",
            "120",
            "--wait",
            "--json",
            str(out),
            timeout=300,
        )
    )
    got = json.loads(out.read_text())
    assert "Kaplan–Meier (federation)" in shown
    query = StatsQuery(features=("age",), statistics=(Statistic.COUNT, Statistic.SURVIVAL),
                       per_site=False)  # fmt: skip
    backend = InProcessBackend(
        StatsSites(data=DataConfig(name="lung"), seed=0, names=sorted(shares.values()))
    )
    try:
        simulated = run_statistics(backend, query, features=("age",)).to_json()
    finally:
        backend.close()
    assert got["federation"] == simulated["federation"]
    curve = got["federation"]["survival"]
    assert curve is not None and len(curve["times"]) > 1
    assert all(n == 0 or n >= 10 for n in curve["at_risk"])
