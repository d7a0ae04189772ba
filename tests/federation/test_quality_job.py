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


def _simulated(sites: list[str], *, secure: bool = False) -> dict:
    """`simulate_quality`'s report over ``sites`` of the bundled data set (the nodes' shares),
    without the note on bundled data the simulation adds."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from medfed.config import DataConfig
    from medfed.orchestration.backends.inprocess import InProcessBackend
    from medfed.orchestration.quality import quality_report
    from medfed.orchestration.quality_simulation import QualitySites, quality_dataset
    from medfed.orchestration.secure_round import SecureAggregation
    from medfed.secagg import ed25519_verifier

    data = DataConfig(name="breast-cancer")
    spec = quality_dataset(data).spec
    factory = QualitySites(data=data, seed=0, names=sites)
    protection = None
    if secure:
        factory.keys = {s: ed25519.Ed25519PrivateKey.generate().private_bytes_raw() for s in sites}
        public = {
            s: ed25519.Ed25519PrivateKey.from_private_bytes(k).public_key()
            for s, k in factory.keys.items()
        }
        protection = SecureAggregation(job="quality", verify_identity=ed25519_verifier(public))
    backend = InProcessBackend(factory)
    try:
        return quality_report(backend, spec, features=FEATURES, secure=protection).to_json()
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
def test_a_secure_quality_job_gives_the_simulations_federation_only_report(
    federation: Federation, tmp_path: Path
) -> None:
    fed = federation
    fed.start_coordinator()
    sites = ["academic-centre", "community-north"]
    for site in sites:
        fed.start_node(site, "--auto-approve")
    out = tmp_path / "quality.json"
    shown = _ok(
        medfed(
            "data", "quality", "--kit", str(fed.kit("researchers", "bob")),
            "--data", "breast-cancer", *(a for f in FEATURES for a in ("--feature", f)),
            "--secure", "--min-sites", "2", "--round-timeout", "120", "--wait",
            "--json", str(out),
            timeout=300,
        )
    )  # fmt: skip
    got = json.loads(out.read_text())
    assert {**got, "notes": got["notes"][:-1]} == _simulated(sites, secure=True)
    assert got["secure_aggregation"] is True and got["sites"] == {}
    assert "site academic-centre" not in shown and "secure aggregation" in shown


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
