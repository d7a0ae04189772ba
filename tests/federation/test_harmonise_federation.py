"""``[data] harmonise`` in a real federation: the coordinator learns the federation's figures
in one statistics exchange the stewards approved, every node trains on its records
harmonised with them, and the job trains the simulation's model bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfed.config import DataConfig, RunConfig, StrategyConfig, config_from_dict
from medfed.data.base import SiteData
from medfed.data.statistics import SiteQuery
from medfed.errors import ConfigError
from medfed.federation.coordinator.job_config import JobConfig
from medfed.federation.node.checks import ProtocolError
from medfed.federation.node.harmonise import node_harmonise
from medfed.messages import HarmoniseSettings, RoundSettings
from medfed.records import Instruction, Operation, Params
from tests.federation.conftest import medfed
from tests.federation.test_same_model import assert_same_model, federated_model, trained_job
from tests.federation.test_task_kinds_federation import _federation

EHR = DataConfig(
    name="synthetic-ehr", sites=2, options={"standardize": False}, harmonise="standardise"
)


@pytest.mark.integration
@pytest.mark.slow
def test_a_harmonised_job_trains_the_simulations_model(tmp_path: Path) -> None:
    from medfed.data import load_dataset
    from medfed.orchestration.simulation import Simulation

    config = RunConfig(rounds=2, seed=0, data=EHR, strategy=StrategyConfig(min_sites=2))
    simulation = Simulation(config)
    assert simulation.harmonisation is not None
    simulated = simulation.run()
    sites = load_dataset(EHR.name, num_sites=2, options=EHR.options).site_names
    fed = _federation(tmp_path, sites, EHR.name)
    try:
        federated = federated_model(fed, config, tmp_path)
        for site in sites:  # the node said what it does, and the exchange is in its ledger
            assert "features harmonised with the federation's figures" in fed.log(site)
    finally:
        fed.close()
    assert_same_model(simulated.params, federated)


def _hospital(folder: Path, name: str, shift: float, rng: np.random.Generator) -> Path:
    """A hospital's train and test tables, in its own units, with gaps in one lab."""
    for part, n in (("train", 90), ("test", 30)):
        z = rng.standard_normal((n, 2))
        y = (z[:, 0] - z[:, 1] + 0.5 * rng.standard_normal(n) > 0).astype(int)
        frame = pd.DataFrame({"crp": shift + 5 * z[:, 0], "lactate": 2 + z[:, 1], "outcome": y})
        frame.loc[frame.index[: n // 5], "lactate"] = np.nan
        frame.to_csv(folder / f"{name}_{part}.csv", index=False)
    return folder


@pytest.mark.integration
@pytest.mark.slow
def test_registered_tables_with_gaps_under_secure_aggregation(tmp_path: Path) -> None:
    """Each steward registers the hospital's own tables (gaps, other units); the job, with
    secure aggregation, harmonises them as the simulation over the same tables does."""
    from medfed.orchestration.simulation import Simulation

    rng = np.random.default_rng(5)
    tables = tmp_path / "tables"
    tables.mkdir()
    sites = ["academic-centre", "community-north"]
    head = 'task = "binary"\nlabel = "outcome"\nstandardize = "none"\n'
    both = head
    for site, shift in zip(sites, (0.0, 40.0), strict=True):
        _hospital(tables, site, shift, rng)
        entry = f'[sites.{site}]\ntrain = "{site}_train.csv"\ntest = "{site}_test.csv"\n'
        (tables / f"{site}.toml").write_text(head + entry)
        both += entry
    (tables / "consortium.toml").write_text(both)
    run = config_from_dict(
        {
            "rounds": 2,
            "data": {"name": str(tables / "consortium.toml"), "harmonise": "combat"},
            "strategy": {"min_sites": 2},
            "privacy": {"secure_aggregation": True, "secagg_bound": 10.0},
        }
    )
    simulated = Simulation(run).run()
    fed = _federation(tmp_path, sites, "hospital")
    try:
        fed.start_coordinator()
        for site in sites:
            kit = str(fed.kit("sites", site))
            proc = medfed("node", "dataset", "add", "hospital", str(tables / f"{site}.toml"),
                          "--kit", kit)  # fmt: skip
            assert proc.returncode == 0, proc.stdout + proc.stderr
            fed.spawn(site, "node", "start", "--kit", kit, "--data", "hospital", "--auto-approve")
        federated = trained_job(fed, run, tmp_path, sites)
    finally:
        fed.close()
    assert_same_model(simulated.params, federated)


def _raw() -> SiteData:
    x = np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]], np.float32)
    y = np.array([0, 1, 0])
    return SiteData("h", x, y, x[:1], y[:1])


def test_the_node_answers_only_the_approved_exchange_and_checks_the_figures() -> None:
    from medfed.data.base import DataSpec, TaskKind

    spec = DataSpec(kind=TaskKind.BINARY, input_shape=(2,), feature_names=("a", "b"))
    built: list[SiteData] = []
    h = node_harmonise(
        "standardise",
        raw=_raw(),
        spec=spec,
        announced_features=["a", "b"],
        make_runtime=lambda d: built.append(d) or object(),  # type: ignore[func-returns-value]
    )

    def stats(query: SiteQuery, min_records: int = 10) -> Instruction:
        message = {"query": query.to_json(), "min_records": min_records}
        return Instruction(Operation.STATS, 1, Params(), seed=0, message=message)

    h.check(stats(SiteQuery("moments", ("a", "b"), split="train", within=True)))
    for asked in (
        stats(SiteQuery("moments", ("a", "b"), split="all", within=True)),  # the test records
        stats(SiteQuery("moments", ("a",), split="train", within=True)),  # other features
        stats(SiteQuery("shapes", ("a", "b"), split="train", within=True)),  # histograms
        stats(SiteQuery("moments", ("a", "b"), split="train", within=True), min_records=2),
    ):
        with pytest.raises(ProtocolError):
            h.check(asked)
    figures = HarmoniseSettings("standardise", (2.0, 4.0), (1.0, 2.0))
    train = Instruction(Operation.TRAIN, 1, Params(), seed=0,
                        settings=RoundSettings(harmonise=figures))  # fmt: skip
    h.runtime(train, base=None)  # type: ignore[arg-type]
    np.testing.assert_allclose(built[0].x_train, [[-1, 0], [0, -0.5], [2, 0.5]])  # gap: 0
    h.runtime(train, base=None)  # type: ignore[arg-type]
    assert len(built) == 1  # rebuilt only when the figures change
    for wrong in (
        RoundSettings(),  # none sent
        RoundSettings(harmonise=HarmoniseSettings("combat", (2.0, 4.0), (1.0, 2.0))),
        RoundSettings(harmonise=HarmoniseSettings("standardise", (2.0,), (1.0,))),
    ):
        bad = Instruction(Operation.TRAIN, 1, Params(), seed=0, settings=wrong)
        with pytest.raises(ProtocolError):
            h.runtime(bad, base=None)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="features other than this site's"):
        node_harmonise("standardise", raw=_raw(), spec=spec, announced_features=["a", "c"],
                       make_runtime=lambda d: None)  # type: ignore[arg-type,return-value]  # fmt: skip


def test_a_harmonised_job_on_images_or_with_dp_is_refused_at_submit() -> None:
    images = {"kind": "binary", "input_shape": [1, 32, 32]}
    with pytest.raises(ConfigError, match="harmonise is for tables"):
        JobConfig(run=RunConfig(data=DataConfig(harmonise="combat")), data_spec=images)
    run = config_from_dict({"data": {"harmonise": "standardise"}, "privacy": {"dp": "client"}})
    with pytest.raises(ConfigError, match="not covered by the run's ε"):
        JobConfig(run=run, data_spec={"kind": "binary", "input_shape": [3]})
