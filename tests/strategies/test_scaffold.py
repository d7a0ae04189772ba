"""SCAFFOLD (Karimireddy et al. 2020): on a heterogeneous quadratic with many local steps
FedAvg's sites drift to a point away from the federation's optimum; SCAFFOLD's control
variates remove the drift and it converges to the optimum. Trained by the real site app
(the drift correction is a hook on torch's optimiser), the variates kept in site state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfed.config import RunConfig, check_run, config_from_dict
from medfed.errors import ConfigError
from medfed.messages import CONTROL_PREFIX
from medfed.orchestration.simulation import Simulation, make_backend
from medfed.privacy.config import PrivacyConfig
from medfed.records import Params
from medfed.strategies import Scaffold, make_strategy
from medfed.strategies.base import SecureSum

# three sites, y = a_i·x, x ~ N(0, s_i²): each site's least-squares optimum is a_i and its
# curvature s_i²; the federation's optimum weighs each a_i by its site's Σx²
SLOPES = (-2.0, 1.0, 4.0)
SCALES = (0.3, 1.0, 2.0)
LR = 1.0  # the most curved site is stable; the flattest still learns

TASK = """
from torch import nn
from medfed.site.task import Task

def linear(spec):
    return nn.Linear(spec.input_shape[0], 1, bias=False)

task = Task(linear)
"""


def _quadratic(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = ['task = "regression"', 'label = "y"', 'standardize = "none"']
    for i, (a, s) in enumerate(zip(SLOPES, SCALES, strict=True)):
        x = s * rng.standard_normal(200)
        pd.DataFrame({"x": x, "y": a * x}).to_csv(folder / f"s{i}.csv", index=False)
        lines += [f"[sites.s{i}]", f'train = "s{i}.csv"']
    (folder / "quadratic.toml").write_text("\n".join(lines) + "\n")
    (folder / "linear_task.py").write_text(TASK)
    return folder


def _run(folder: Path, strategy: str, rounds: int) -> tuple[float, float]:
    config = config_from_dict(
        {
            "rounds": rounds,
            "task": str(folder / "linear_task.py"),
            "data": {"name": str(folder / "quadratic.toml")},
            "strategy": {"name": strategy},
            # full-batch gradient descent, 10 steps a round
            "train": {
                "batch_size": 1000,
                "local_epochs": 10,
                "learning_rate": LR,
                "optimizer": "sgd",
                "momentum": 0.0,
                "weight_decay": 0.0,
            },
            "evaluation": {"baselines": False, "quality": False},
        }
    )
    sim = Simulation(config)
    x = np.concatenate([s.x_train[:, 0] for s in sim.dataset.sites]).astype(np.float64)
    y = np.concatenate([s.y_train for s in sim.dataset.sites]).astype(np.float64)
    optimum = float(x @ y / (x @ x))  # the pooled least squares: what the federation minimises
    params = sim.driver(make_backend(sim.config, sim.factory)).run(sim.initial, rounds=rounds)
    [w] = params.values()
    return float(w.reshape(-1)[0]), optimum


def test_scaffold_converges_where_fedavg_drifts(tmp_path: Path) -> None:
    folder = _quadratic(tmp_path)
    fedavg, optimum = _run(folder, "fedavg", rounds=30)
    fedavg_later, _ = _run(folder, "fedavg", rounds=40)
    scaffold, _ = _run(folder, "scaffold", rounds=30)
    # FedAvg has settled (more rounds do not help) away from the optimum, towards the flat
    # sites' own optima: their local steps move less, so they pull the average harder
    assert fedavg_later == pytest.approx(fedavg, abs=1e-5)
    assert abs(fedavg - optimum) > 0.5
    assert abs(scaffold - optimum) < 1e-3


def test_the_control_variate_travels_with_the_model_and_sums_securely() -> None:
    strategy = Scaffold()
    x = Params({"w": np.array([1.0, 2.0], np.float32), "n": np.array([3], np.int64)})
    state = strategy.init_state(x)
    sent = strategy.payload(x, state)
    assert list(sent) == ["w", "n", CONTROL_PREFIX + "w"]  # counters carry no variate
    strategy.configure_train(
        round=1, params=x, sites=["a", "b", "c", "d"], rng=np.random.default_rng(0)
    )
    agg = strategy.aggregator(round=1, params=x, state=state)
    mean = Params(
        {
            "w": np.array([0.5, -1.0], np.float32),
            "n": np.array([0], np.int64),
            CONTROL_PREFIX + "w": np.array([2.0, 4.0], np.float32),
        }
    )
    agg.add_sum(SecureSum(mean, 10.0, ("a", "b")))  # two of four sites: c moves by half
    out = agg.finish()
    np.testing.assert_allclose(out.params["w"], [1.5, 1.0])
    assert list(out.params) == ["w", "n"]  # the variate is state, never the model
    np.testing.assert_allclose(out.state.tensors["c.w"], [1.0, 2.0])


def test_scaffold_is_refused_with_dp() -> None:
    config = RunConfig(privacy=PrivacyConfig(dp="client", noise_multiplier=1.0, clip_norm=1.0))
    config = config.with_overrides(**{"strategy.name": "scaffold"})
    with pytest.raises(ConfigError, match="control-variate"):
        check_run(config, "simulation")
    assert make_strategy("scaffold", fraction=1.0, min_sites=1).dp_covered is False
