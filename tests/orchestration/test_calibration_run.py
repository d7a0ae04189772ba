"""calibration.json: the final global model's reliability bins at each simulated site."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medfed.config import RunConfig
from medfed.orchestration.calibration_run import _probabilities, site_calibration, write_calibration
from medfed.orchestration.simulation import Simulation, SimulationResult

CONFIG = RunConfig(rounds=2, seed=3).with_overrides(**{"data.name": "breast-cancer"})


@pytest.fixture(scope="module")
def trained() -> tuple[Simulation, SimulationResult]:
    sim = Simulation(CONFIG)
    return sim, sim.run()


def test_the_bins_are_the_final_models_on_each_sites_test_set(
    tmp_path: Path, trained: tuple[Simulation, SimulationResult]
) -> None:
    sim, result = trained
    path = write_calibration(tmp_path, sim, result.params)
    assert path == tmp_path / "calibration.json"
    data = json.loads(path.read_text())
    assert data["n_bins"] == 10 and set(data["sites"]) == set(sim.dataset.site_names)
    final = result.history[-1].eval_metrics
    for site in sim.dataset.sites:
        entry = data["sites"][site.name]
        assert entry["num_test"] == site.num_test
        assert sum(b["count"] for b in entry["bins"]) == site.num_test
        assert 0.0 <= entry["ece"] <= 1.0
        # the same model the round evaluated: its accuracy at 0.5 is the site's own figure
        p = _probabilities(sim, result.params, site.x_test)
        assert np.mean((p > 0.5) == site.y_test) == final[site.name].accuracy
        below = sum(b["count"] for b in entry["bins"][:5])
        assert below == int(np.sum(p < 0.5))


def test_the_initial_model_is_calibrated_differently_from_the_final_one(
    trained: tuple[Simulation, SimulationResult],
) -> None:
    sim, result = trained
    before = site_calibration(sim, sim.initial)
    after = site_calibration(sim, result.params)
    assert before is not None and after is not None
    assert before["sites"] != after["sites"]


def test_nothing_is_written_for_a_task_that_is_not_binary(tmp_path: Path) -> None:
    sim = Simulation(CONFIG.with_overrides(**{"data.name": "diabetes"}))
    assert site_calibration(sim, sim.initial) is None
    assert write_calibration(tmp_path, sim, sim.initial) is None
    assert not (tmp_path / "calibration.json").exists()
