"""Strategies as functions over explicit state: FedAvg, FedAdam/FedYogi/FedAdagrad (Reddi et al.).

Properties from the paper, the secure-sum seam, and a restart from a checkpoint that ends with
the model of the uninterrupted run, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from medfed.config import RunConfig, StrategyConfig
from medfed.errors import ConfigError
from medfed.orchestration.checkpoint import checkpoint_from_bytes, checkpoint_to_bytes
from medfed.orchestration.driver import RoundDriver
from medfed.orchestration.simulation import Simulation
from medfed.privacy.config import PrivacyConfig
from medfed.records import Params, Update
from medfed.strategies import (
    STRATEGIES,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedYogi,
    SecureSum,
    Strategy,
    StrategyState,
    make_strategy,
)
from medfed.strategies.base import Aggregator


def _params(*values: float) -> Params:
    return Params({"w": np.array(values, np.float32), "n": np.array([3], np.int64)})


def _round(strategy: Strategy, params: Params, state: StrategyState, *deltas: Params):
    agg = strategy.aggregator(round=1, params=params, state=state)
    for i, d in enumerate(deltas):
        agg.add(f"s{i}", Update(d, num_examples=1))
    return agg.finish()


def test_fedadam_first_step_is_the_papers_update() -> None:
    # Reddi et al. 2021, Algorithm 2 with m₋₁ = 0, v₋₁ = τ²: one step of size η·m/(√v + τ)
    s = FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    x = _params(1.0, -2.0)
    d = Params({"w": np.array([0.5, -0.25], np.float32), "n": np.array([1], np.int64)})
    out = _round(s, x, s.init_state(x), d)
    m = 0.1 * d["w"].astype(np.float64)
    v = 0.99 * 1e-6 + 0.01 * d["w"].astype(np.float64) ** 2
    want = x["w"] + 0.1 * m / (np.sqrt(v) + 1e-3)
    np.testing.assert_allclose(out.params["w"], want, rtol=1e-5)
    assert out.params["n"].tolist() == [4]  # a counter takes the plain mean step
    assert out.state.values["rounds"] == 1


def test_adaptive_optimisers_differ_only_in_the_second_moment() -> None:
    x = _params(0.0, 0.0)
    d = Params({"w": np.array([1.0, -1.0], np.float32), "n": np.array([0], np.int64)})
    v = {}
    for cls in (FedAdam, FedYogi, FedAdagrad):
        s = cls(beta2=0.5, tau=0.1)
        out = _round(s, x, _round(s, x, s.init_state(x), d).state, d)
        v[cls.name] = out.state.tensors["v.w"][0]
    tau2, g2 = 0.01, 1.0
    adagrad = tau2 + g2 + g2
    adam1 = 0.5 * tau2 + 0.5 * g2
    yogi1 = tau2 - 0.5 * g2 * np.sign(tau2 - g2)
    assert v["fedadagrad"] == pytest.approx(adagrad, rel=1e-6)
    assert v["fedadam"] == pytest.approx(0.5 * adam1 + 0.5 * g2, rel=1e-6)
    assert v["fedyogi"] == pytest.approx(yogi1 - 0.5 * g2 * np.sign(yogi1 - g2), rel=1e-6)


def test_a_secure_sum_aggregates_like_the_updates_it_sums() -> None:
    x = _params(1.0, 2.0)
    deltas = [
        Params({"w": np.array(v, np.float32), "n": np.array([1], np.int64)})
        for v in ([0.1, 0.2], [0.3, -0.4], [-0.2, 0.0])
    ]
    mean = Params(
        {
            "w": np.mean([d["w"] for d in deltas], axis=0).astype(np.float32),
            "n": np.array([1], np.int64),
        }
    )
    for s in (FedAvg(), FedAdam()):
        one = _round(s, x, s.init_state(x), *deltas)
        agg = s.aggregator(round=1, params=x, state=s.init_state(x))
        agg.add_sum(SecureSum(mean, weight=3.0, sites=("s0", "s1", "s2")))
        two = agg.finish()
        np.testing.assert_allclose(one.params["w"], two.params["w"], rtol=1e-6)
        assert one.state == two.state or s.name == "fedadam"


def test_state_round_trips_through_its_bytes() -> None:
    s = FedYogi()
    x = _params(1.0, 2.0)
    state = _round(s, x, s.init_state(x), _params(0.5, 0.5)).state
    assert StrategyState.from_bytes(state.to_bytes()) == state


class _Median(Strategy):
    """A strategy that needs each site's update (like a coordinate-wise median)."""

    name = "median-for-test"
    needs = "updates"

    def aggregator(self, *, round: int, params: Params, state: StrategyState) -> Aggregator:
        raise AssertionError("never reached: the run is refused first")


def test_a_strategy_needing_each_update_is_refused_with_secure_aggregation_up_front(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(STRATEGIES, _Median.name, _Median)
    config = RunConfig(
        rounds=1,
        strategy=StrategyConfig(name=_Median.name, min_sites=2),
        privacy=PrivacyConfig(secure_aggregation=True),
    )
    with pytest.raises(ConfigError, match=r"median-for-test.*secure_aggregation"):
        Simulation(config)
    from medfed.federation.coordinator.job_config import JobConfig

    with pytest.raises(ConfigError, match=r"median-for-test.*secure_aggregation"):
        JobConfig.from_json(
            {
                "strategy": {"name": _Median.name, "min_sites": 2},
                "privacy": {"secure_aggregation": True},
            }
        )
    assert make_strategy(_Median.name, fraction=1.0, min_sites=2).needs == "updates"


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_a_run_resumed_from_its_checkpoint_ends_with_the_uninterrupted_model(name: str) -> None:
    """Stop after round 2, rebuild everything, restore the checkpoint: rounds 3-4 are identical."""
    config = RunConfig(rounds=4, seed=3, strategy=StrategyConfig(name=name, min_sites=2))
    config = config.with_overrides(**{"data.sites": 3})

    def driver(sim: Simulation) -> RoundDriver:
        from medfed.orchestration.simulation import make_backend

        return sim.driver(make_backend(config, sim.factory))

    whole = Simulation(config)
    final = driver(whole).run(whole.initial, rounds=4)

    first = Simulation(config)
    d1 = driver(first)
    params = first.initial
    for r in (1, 2):
        result = d1.run_round(r, params, last=False)
        params = result.params
    saved = checkpoint_to_bytes(result.checkpoint)
    assert result.strategy_state.values["rounds"] == 2

    again = Simulation(config)  # a new process would start like this
    d2 = driver(again)
    d2.restore(checkpoint_from_bytes(saved), rounds_done=2)
    resumed = d2.run(params, rounds=4, first_round=3)
    assert resumed == final

    fresh = driver(Simulation(config))  # without the state: a different model
    assert fresh.run(params, rounds=4, first_round=3) != final
