"""FedProx (Li et al. 2020) and FedAvgM (Hsu et al. 2019): the properties their papers state,
selected by name and options from the command line and the run file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from medfed.cli.main import cli
from medfed.config import RunConfig, StrategyConfig, TrainSettings
from medfed.errors import ConfigError
from medfed.orchestration.checkpoint import checkpoint_from_bytes, checkpoint_to_bytes
from medfed.orchestration.simulation import Simulation, make_backend, simulate
from medfed.records import Params, Update
from medfed.strategies import FedAvg, FedAvgM, FedProx, make_strategy

# heterogeneous hospitals and several local epochs: where local models drift apart
DRIFT = RunConfig(
    rounds=2,
    seed=2,
    train=TrainSettings(local_epochs=5, learning_rate=0.1),
).with_overrides(
    **{
        "data.name": "synthetic-ehr",
        "data.sites": 4,
        "data.options": {"alpha": 0.3, "num_patients": 1200},
    }
)


def _with(strategy: str, **options: float) -> RunConfig:
    return RunConfig(
        rounds=DRIFT.rounds,
        seed=DRIFT.seed,
        train=DRIFT.train,
        data=DRIFT.data,
        strategy=StrategyConfig(name=strategy, options=dict(options)),
    )


def test_fedprox_with_mu_zero_is_fedavg_bit_for_bit() -> None:
    assert simulate(_with("fedprox", mu=0.0)).params == simulate(_with("fedavg")).params


def test_the_proximal_term_keeps_each_site_near_the_global_model() -> None:
    """The larger μ, the smaller every site's update (its distance from the global model)."""
    norms = {}
    for mu in (0.0, 0.1, 1.0):
        sim = Simulation(_with("fedprox", mu=mu))
        result = sim.driver(make_backend(sim.config, sim.factory)).run_round(1, sim.initial)
        norms[mu] = result.update_norms
    for site in norms[0.0]:
        assert norms[1.0][site] < norms[0.1][site] < norms[0.0][site], (site, norms)


def _step(strategy: FedAvg | FedAvgM, params: Params, state, delta: Params):
    agg = strategy.aggregator(round=1, params=params, state=state)
    agg.add("a", Update(delta, num_examples=3))
    out = agg.finish()
    return out.params, out.state


def test_fedavgm_accumulates_momentum_and_without_it_is_fedavg() -> None:
    x0 = Params({"w": np.array([1.0, -2.0], np.float32), "n": np.array([3], np.int64)})
    d = Params({"w": np.array([0.5, 0.25], np.float32), "n": np.array([1], np.int64)})
    beta, lr = 0.5, 0.2
    m = FedAvgM(momentum=beta, server_lr=lr)
    params, state = x0, m.init_state(x0)
    for _ in range(3):  # v1 = Δ, v2 = (1+β)Δ, v3 = (1+β+β²)Δ
        params, state = _step(m, params, state, d)
        state = checkpoint_from_bytes(checkpoint_to_bytes(_as_checkpoint(state))).strategy
    total = 1 + (1 + beta) + (1 + beta + beta**2)
    np.testing.assert_allclose(params["w"], x0["w"] + lr * total * d["w"], rtol=1e-6)
    assert params["n"].tolist() == [6]  # a counter takes the plain mean step
    plain, _ = _step(FedAvgM(momentum=0.0), x0, FedAvgM(momentum=0.0).init_state(x0), d)
    fedavg, _ = _step(FedAvg(), x0, FedAvg().init_state(x0), d)
    assert plain == fedavg


def _as_checkpoint(state):
    from medfed.orchestration.checkpoint import RoundCheckpoint

    return RoundCheckpoint(1, state)


def test_bad_options_are_one_sentence() -> None:
    for name, options, match in (
        ("fedprox", {"mu": -1.0}, "mu = -1.0 must be a number >= 0"),
        ("fedavgm", {"momentum": 1.0}, r"momentum = 1.0 must be in \[0, 1\)"),
        ("fedprox", {"gamma": 1.0}, "does not accept these options"),
    ):
        with pytest.raises(ConfigError, match=match):
            make_strategy(name, fraction=1.0, min_sites=1, options=options)
    assert isinstance(make_strategy("FedProx", fraction=1.0, min_sites=1), FedProx)


def test_the_command_line_selects_a_strategy_and_its_options(tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["strategy", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0
    for name in ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"):
        assert name in listed.output
    assert "mu: proximal weight" in listed.output
    out = tmp_path / "run"
    args = ["simulate", "--rounds", "1", "--strategy", "fedprox", "--out", str(out)]
    result = runner.invoke(cli, [*args, "--strategy-option", "mu=0.5"])
    assert result.exit_code == 0, result.output
    saved = tomllib.loads((out / "config.toml").read_text())
    assert saved["strategy"] == {**saved["strategy"], "name": "fedprox", "options": {"mu": 0.5}}
    assert json.loads((out / "summary.json").read_text())["rounds_done"] == 1
    bad = runner.invoke(cli, [*args, "--overwrite", "--strategy-option", "mu"])
    assert bad.exit_code != 0 and "--strategy-option takes KEY=VALUE" in bad.output
    bad = runner.invoke(cli, [*args, "--overwrite", "--strategy-option", "mu=-2"])
    assert bad.exit_code != 0 and "mu = -2 must be a number >= 0" in bad.output
