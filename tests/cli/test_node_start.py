"""``medfed node start`` loads its site's records as the simulation of the same run does."""

from __future__ import annotations

import numpy as np
import pytest

from medfed.cli.node_start import site_dataset
from medfed.config import DataConfig, TrainSettings
from medfed.errors import DataError
from medfed.orchestration.simulation import SimulationSites


def _simulated(name: str, sites: int, seed: int, options: dict) -> SimulationSites:
    data = DataConfig(name=name, sites=sites, options=options)
    return SimulationSites(data=data, seed=seed, settings=TrainSettings())


@pytest.mark.parametrize(
    ("name", "sites", "seed", "options"),
    [
        ("breast-cancer", 2, 0, {}),
        ("breast-cancer", 5, 3, {}),
        ("synthetic-ehr", 3, 7, {"alpha": 0.3, "num_patients": 600}),
    ],
)
def test_a_node_holds_the_records_its_site_holds_in_the_simulation(
    name: str, sites: int, seed: int, options: dict
) -> None:
    """The node's --sites, --data-seed and --option (text, as typed) give the same records."""
    typed = [f"{k}={v}" for k, v in options.items()]
    node = site_dataset(name, sites=sites, seed=seed, options=typed)
    simulated = _simulated(name, sites, seed, options).dataset
    assert node.site_names == simulated.site_names and node.spec == simulated.spec
    for site in simulated.site_names:
        a, b = node.site(site), simulated.site(site)
        for part in ("x_train", "y_train", "x_test", "y_test"):
            assert np.array_equal(getattr(a, part), getattr(b, part)), (site, part)


def test_a_generated_data_set_needs_the_runs_seed_to_hold_its_sites() -> None:
    simulated = _simulated("synthetic-ehr", 2, 7, {"num_patients": 400}).dataset
    node = site_dataset("synthetic-ehr", sites=2, options=["num_patients=400"])  # seed 0
    site = simulated.site_names[0]
    assert not np.array_equal(node.site(site).x_train, simulated.site(site).x_train)


@pytest.mark.parametrize("bad", ["alpha", "=3", "alhpa=3"])
def test_a_bad_data_option_is_refused(bad: str) -> None:
    with pytest.raises(DataError):
        site_dataset("synthetic-ehr", sites=2, options=[bad])
