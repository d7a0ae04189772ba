"""The final global model's calibration at each simulated site: ``calibration.json``.

Simulation only: the sites live in this process's reach (their data is loaded here), so the
final model's predicted probabilities on each site's held-out test set can be binned without
any site sending a prediction anywhere. In a real federation a site would have to compute
and release its bins itself; that is not done here. Binary classification only (a reliability
diagram needs one probability per patient); for other kinds nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from medfed.math.calibration import expected_calibration_error, reliability_bins
from medfed.records import Params
from medfed.serde import atomic_write

if TYPE_CHECKING:
    from medfed.orchestration.simulation import Simulation

__all__ = ["CALIBRATION_FILE", "N_BINS", "site_calibration", "write_calibration"]

CALIBRATION_FILE = "calibration.json"
N_BINS = 10
_CHUNK_ROWS = 4096


def _probabilities(simulation: Simulation, params: Params, x: npt.NDArray[Any]) -> np.ndarray:
    """The model's predicted probability of the outcome (sigmoid of its one logit) per row."""
    import torch

    from medfed.site.torch_app import as_tensor, load_params

    spec = simulation.dataset.spec
    with torch.random.fork_rng(devices=[]):  # building the model draws from the global RNG
        model = simulation.factory.task.build_model(spec).to("cpu")
    state = model.state_dict()
    # the model's own weights only (a strategy may send more, e.g. control variates)
    load_params(model, Params([(name, params[name]) for name in state]))
    model.eval()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(x), _CHUNK_ROWS):
            batch = as_tensor(
                x[start : start + _CHUNK_ROWS], dtype=dtype, device=torch.device("cpu")
            )
            logits = model(batch).reshape(-1).to(torch.float64)
            chunks.append(torch.sigmoid(logits).numpy())
    return np.concatenate(chunks) if chunks else np.zeros(0)


def site_calibration(simulation: Simulation, params: Params) -> dict[str, Any] | None:
    """Per site: its test patients, the ECE and :data:`N_BINS` reliability bins of ``params``
    on its test set. None when the task is not binary classification."""
    from medfed.data.base import TaskKind

    if simulation.dataset.spec.kind is not TaskKind.BINARY:
        return None
    sites: dict[str, Any] = {}
    for name in simulation.dataset.site_names:
        data = simulation.factory.site_data(name)  # harmonised as the site evaluates it
        probabilities = _probabilities(simulation, params, data.x_test)
        bins = reliability_bins(probabilities=probabilities, labels=data.y_test, n_bins=N_BINS)
        sites[name] = {
            "num_test": len(data.y_test),
            "ece": expected_calibration_error(bins),
            "bins": [b.as_dict() for b in bins],
        }
    return {
        "model": "final global model",
        "n_bins": N_BINS,
        "binning": "equal width over [0, 1]",
        "sites": sites,
    }


def write_calibration(folder: str | Path, simulation: Simulation, params: Params) -> Path | None:
    """Write ``calibration.json`` into the run folder; its path, or None (not binary)."""
    data = site_calibration(simulation, params)
    if data is None:
        return None
    path = Path(folder) / CALIBRATION_FILE
    atomic_write(path, json.dumps(data, indent=2) + "\n")
    return path
