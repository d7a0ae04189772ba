"""The data-quality report over a real federation: `medfed data quality --kit` submits the
report's statistics query as a job (a coordinator and nodes as processes, HTTPS on
127.0.0.1); the released figures give the simulation's report over the same sites' data; a
node whose steward has not approved sends nothing; the stored result gives the same report
again by the job's id."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medfed.data.base import DataSpec, TaskKind
from medfed.data.statistics import StatsQuery
from medfed.errors import ConfigError
from medfed.orchestration.quality import quality_query, quality_spec
from tests.federation.conftest import Federation, medfed

FEATURES = ("mean radius", "mean texture", "worst area")


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _simulated(sites: list[str]) -> dict:
    """`simulate_quality`'s report over ``sites`` of the bundled data set (the nodes' shares),
    without the note on bundled data the simulation adds."""
    from medfed.config import DataConfig
    from medfed.orchestration.backends.inprocess import InProcessBackend
    from medfed.orchestration.quality import quality_report
    from medfed.orchestration.quality_simulation import quality_dataset
    from medfed.orchestration.statistics import StatsSites

    data = DataConfig(name="breast-cancer")
    spec = quality_dataset(data).spec
    backend = InProcessBackend(StatsSites(data=data, seed=0, names=sites))
    try:
        return quality_report(backend, spec, features=FEATURES).to_json()
    finally:
        backend.close()


@pytest.mark.integration
@pytest.mark.slow
def test_a_quality_job_gives_the_simulations_report(federation: Federation, tmp_path: Path) -> None:
    from medfed.cli.data_quality import SERVED_DATA_NOTE

    fed = federation
    fed.start_coordinator()
    approving = ["academic-centre", "community-north"]
    for site in approving:
        fed.start_node(site, "--auto-approve")
    fed.start_node("oncology-clinic")  # its steward has approved nothing
    bob = str(fed.kit("researchers", "bob"))
    out, md = tmp_path / "quality.json", tmp_path / "quality.md"
    shown = _ok(
        medfed(
            "data", "quality", "--kit", bob, "--data", "breast-cancer",
            *(a for f in FEATURES for a in ("--feature", f)),
            "--min-sites", "2", "--round-timeout", "120", "--wait",
            "--json", str(out), "--markdown", str(md),
            timeout=300,
        )
    )  # fmt: skip
    got = json.loads(out.read_text())
    assert got["notes"][-1] == SERVED_DATA_NOTE
    assert {**got, "notes": got["notes"][:-1]} == _simulated(approving), fed.log("coordinator")
    assert sorted(got["sites"]) == approving and "oncology-clinic" not in got["not_shown"]
    assert got["federation"]["records"] == 284 + 114  # the approving sites' records only
    # the same tables as the simulation's command
    assert ("Flags (missingness" in shown) is bool(got["flags"]) is not ("No flags" in shown)
    assert "site academic-centre" in shown and "SMD" in shown and "worst area" in shown
    assert md.read_text().startswith("# Data quality")
    job_id = re.search(r"(job-[0-9a-f]+)", shown).group(1)
    assert f"medfed data quality --kit KIT --job {job_id}" in shown

    # the stored result, again by the job's id: the same report
    again = tmp_path / "again.json"
    _ok(medfed("data", "quality", "--kit", bob, "--job", job_id, "--json", str(again)))
    assert json.loads(again.read_text()) == got

    # the unapproving node: the query waits for its steward, and nothing left it
    onc = str(fed.kit("sites", "oncology-clinic"))
    pending = _ok(medfed("node", "pending", "--kit", onc))
    assert job_id in pending and "statistics.query" in pending, pending
    ledger = medfed("node", "ledger", "show", "--kit", onc)
    assert "nothing has left this node yet" in ledger.stderr, ledger.stdout + ledger.stderr
    sent = _ok(medfed("node", "ledger", "show", "--kit", str(fed.kit("sites", "academic-centre"))))
    assert job_id in sent

    # a user's mistake is one line
    bad = medfed("data", "quality", "--kit", bob, "--data", "breast-cancer", "--feature", "nope")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "'nope'" in bad.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_a_researcher_without_data_gets_the_secure_report_of_registered_data_sets(
    federation: Federation, tmp_path: Path
) -> None:
    from medfed.federation.node.statistics import StatisticsOnly
    from medfed.orchestration.backends.inprocess import InProcessBackend
    from medfed.orchestration.quality import quality_report
    from medfed.site.datasets import DatasetRegistry
    from medfed.site.runtime import SiteRuntime
    from medfed.site.statistics import SiteDataSource

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
    shown = _ok(
        medfed(
            "data", "quality", "--kit", str(fed.kit("researchers", "bob")), "--data", "bc",
            "--contract", str(contract), *(a for f in FEATURES for a in ("--feature", f)),
            "--secure", "--min-sites", "2", "--round-timeout", "120", "--wait",
            "--json", "out.json", cwd=researcher, timeout=300,
        )
    )  # fmt: skip
    assert sorted(researcher.iterdir()) == [researcher / "out.json"]  # no data came here
    got = json.loads((researcher / "out.json").read_text())
    assert "site community-north" not in shown and "secure aggregation" in shown
    assert got["secure_aggregation"] is True and got["sites"] == {}
    # the report over the nodes' served data sets, in memory (each site's runtime as at its node)
    served = {
        site: DatasetRegistry.in_state(fed.kit("sites", site) / "state").load("bc")
        for site in sites
    }

    class Served:
        site_names = sites

        def make(self, name: str) -> SiteRuntime:
            data = served[name]  # the node answers from its records as recorded
            raw = DatasetRegistry.in_state(fed.kit("sites", name) / "state").load_raw("bc")
            return SiteRuntime(name, StatisticsOnly(), stats=SiteDataSource(raw, data.spec))

    backend = InProcessBackend(Served())
    try:
        spec = served[sites[0]].spec
        expected = quality_report(backend, spec, features=FEATURES).to_json()
    finally:
        backend.close()
    # under secure aggregation: the federation's row only, its sums to fixed-point precision
    assert (got["kind"], got["features"], got["not_shown"]) == (
        expected["kind"], expected["features"], expected["not_shown"],
    )  # fmt: skip
    assert got["flags"] == [f for f in expected["flags"] if f["site"] == "federation"]
    have, want = got["federation"], expected["federation"]
    assert have["records"] == want["records"] > 0
    assert (have["label"]["kind"], have["label"]["count"]) == ("binary", want["label"]["count"])
    assert have["label"]["classes"] == pytest.approx(want["label"]["classes"])
    for name in FEATURES:
        h, w = have["features"][name], want["features"][name]
        assert (h["count"], h["missing"]) == (w["count"], w["missing"]), name
        for key in ("mean", "sd", "missing_fraction"):
            assert h[key] == pytest.approx(w[key], rel=1e-6, abs=1e-9), (name, key)
        assert h["quantiles"] == pytest.approx(w["quantiles"], rel=1e-6), name


def test_a_quality_query_tells_its_data_shape_and_no_other_query_passes() -> None:
    specs = [
        DataSpec(TaskKind.BINARY, (2,), feature_names=("a", "b")),
        DataSpec(TaskKind.MULTICLASS, (2,), n_classes=4, feature_names=("a", "label")),
        DataSpec(TaskKind.REGRESSION, (1,), feature_names=("a",)),
        DataSpec(TaskKind.SURVIVAL, (2,), feature_names=("a", "b")),
    ]
    for spec in specs:
        query = quality_query(spec, spec.feature_names, min_count=25)
        got, features = quality_spec(query)
        assert features == spec.feature_names
        assert (got.kind, got.n_classes) == (spec.kind, spec.n_classes)
        assert quality_query(got, features, min_count=25) == query
    for other in (StatsQuery(features=("a", "label")), StatsQuery(features=("a",))):
        with pytest.raises(ConfigError, match="not a data-quality report's"):
            quality_spec(other)


def test_quality_at_a_federation_needs_a_kit_and_says_so_in_one_line(tmp_path: Path) -> None:
    run = medfed("data", "quality", "--job", "job-1234")
    assert run.returncode != 0 and "Traceback" not in run.stderr and "--kit" in run.stderr
    kit = tmp_path / "kit"
    kit.mkdir()
    run = medfed("data", "quality", "--kit", str(kit), "--data", "no-such-set")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "--contract FILE" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    run = medfed("data", "quality", "--kit", str(kit), "--data", "synthetic-imaging")
    assert run.returncode != 0 and "Traceback" not in run.stderr and "for tables" in run.stderr
