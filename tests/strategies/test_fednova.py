"""FedNova (Wang et al. 2020): sites taking different numbers of local steps no longer pull
the federation towards their own optimum; the site trainers report their steps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfed.config import RunConfig, StrategyConfig, check_run
from medfed.errors import ConfigError, RoundFailed
from medfed.orchestration.simulation import Simulation, make_backend
from medfed.privacy.config import PrivacyConfig
from medfed.records import Params, Update
from medfed.strategies import FedAvg, FedNova, Strategy

# three sites, f_i(x) = ½(x − a_i)², equal data; local gradient descent with step η
TARGETS = np.array([0.0, 4.0, 10.0])
STEPS = (1, 10, 50)
ETA = 0.01


def _local_update(x: float, a: float, tau: int) -> float:
    """τ steps of gradient descent on ½(x − a)² from x: the exact update."""
    return (1 - (1 - ETA) ** tau) * (a - x)


def _fixed_point(strategy: Strategy, rounds: int = 3000) -> float:
    x = Params({"w": np.zeros(1, np.float64)})
    state = strategy.init_state(x)
    for _ in range(rounds):
        agg = strategy.aggregator(round=1, params=x, state=state)
        for i, (a, tau) in enumerate(zip(TARGETS, STEPS, strict=True)):
            d = _local_update(float(x["w"][0]), float(a), tau)
            agg.add(f"s{i}", Update(Params({"w": np.array([d])}), 100), steps=tau)
        out = agg.finish()
        x, state = out.params, out.state
    return float(x["w"][0])


def test_fednova_converges_to_the_true_objective_where_fedavg_drifts() -> None:
    true = float(TARGETS.mean())  # the optimum of Σ p_i f_i with equal p_i
    fedavg, fednova = _fixed_point(FedAvg()), _fixed_point(FedNova())
    # FedAvg's fixed point weights each site by (1 − (1 − η)^τ_i): towards the 50-step site
    c = np.array([1 - (1 - ETA) ** t for t in STEPS])
    assert fedavg == pytest.approx(float((c * TARGETS).sum() / c.sum()), rel=1e-6)
    assert abs(fedavg - true) > 3.0
    # FedNova's weights (1 − (1 − η)^τ_i) / τ_i are equal up to O(ητ_i): a tenth of the drift
    w = c / np.array(STEPS)
    assert fednova == pytest.approx(float((w * TARGETS).sum() / w.sum()), rel=1e-6)
    assert abs(fednova - true) < abs(fedavg - true) / 10


def test_with_equal_steps_fednova_is_fedavg() -> None:
    x = Params({"w": np.array([1.0, 2.0], np.float32)})
    ups = [(Params({"w": np.array([0.5, -1.0], np.float32)}), 30),
           (Params({"w": np.array([2.0, 1.0], np.float32)}), 10)]  # fmt: skip
    out = {}
    for s in (FedAvg(), FedNova()):
        agg = s.aggregator(round=1, params=x, state=s.init_state(x))
        for i, (d, n) in enumerate(ups):
            agg.add(f"s{i}", Update(d, n), steps=7)
        out[s.name] = agg.finish().params["w"]
    np.testing.assert_allclose(out["fednova"], out["fedavg"], rtol=1e-6)


def test_sites_report_their_steps_and_fednova_trains_a_simulation() -> None:
    config = RunConfig(rounds=2, strategy=StrategyConfig(name="fednova"))
    config = config.with_overrides(**{"data.name": "breast-cancer", "train.batch_size": 16})
    sim = Simulation(config)
    result = sim.driver(make_backend(sim.config, sim.factory)).run_round(1, sim.initial)
    for site in sim.dataset.sites:
        batches = math.ceil(site.num_train / 16)
        if site.num_train % 16 == 1:  # a last batch of one is merged into the one before
            batches -= 1
        assert result.reports[site.name].local_steps == batches, site.name
    assert result.params != sim.initial


def test_missing_steps_and_secure_aggregation_are_refused() -> None:
    x = Params({"w": np.zeros(1, np.float32)})
    agg = FedNova().aggregator(round=1, params=x, state=FedNova().init_state(x))
    with pytest.raises(RoundFailed, match="FedNova needs each site's local steps"):
        agg.add("s0", Update(Params({"w": np.ones(1, np.float32)}), 3), steps=None)
    config = RunConfig(
        strategy=StrategyConfig(name="fednova", min_sites=2),
        privacy=PrivacyConfig(secure_aggregation=True),
    )
    with pytest.raises(ConfigError, match="needs each site's update"):
        check_run(config, "simulation")


def test_under_dp_the_step_count_stays_at_the_site() -> None:
    """The steps tell a site's record count (n / batch size): DP withholds them."""
    config = RunConfig(rounds=1, privacy=PrivacyConfig(dp="client", secure_aggregation=False))
    config = config.with_overrides(**{"data.name": "breast-cancer", "strategy.min_sites": 2})
    sim = Simulation(config)
    result = sim.driver(make_backend(sim.config, sim.factory)).run_round(1, sim.initial)
    assert result.reports and all(r.local_steps is None for r in result.reports.values())
