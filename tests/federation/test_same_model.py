"""The same run gives the same global model, bit for bit, simulated and federated.

One run (breast-cancer in 2 hospitals, 2 rounds, seed 0, the default task, FedAvg, no DP, no
secure aggregation) is simulated in this process (``medfed.orchestration.simulation.simulate``)
and trained by a real federation: a coordinator and two nodes, each a process, over TLS, the
job submitted with ``medfed job submit --config`` and the simulation's own run file. Every
tensor of the two final models is equal.

What has to agree for that (and does): each node loads its site's share with ``--sites`` the
run's site count (the split of breast-cancer depends on it) and ``--data-seed`` its seed, its
kit named after the data's hospital (the driver keys each site's seed by the name the
coordinator knows); the initial model is built from the same model function and seed (in the
researcher's process for a job); the driver derives every site's seed from the run seed, the
round and the site's name, and aggregates the replies in request order (never in arrival
order), its sites in name order (a simulation lists them in the data set's order, the
coordinator in name order); a round of the job starts once both sites approved (``min_sites``),
so both take part in every round, as in the simulation.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medfed.config import (
    DataConfig,
    RunConfig,
    StrategyConfig,
    TrainSettings,
    UpdateBounds,
    check_run,
    save_config,
)
from medfed.records import Params
from medfed.serde import load_params
from tests.federation.conftest import Federation, medfed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# the simulation's default task for tabular data (medfed.site.task.default_task), as a task file
DEFAULT_TASK = '''"""The default task for tabular data: medfed's default model, default training."""

from medfed.site.models import default_model
from medfed.site.task import Task

task = Task(model=default_model, name="default-mlp")
'''

# min_sites = both sites: a job's round starts once that many stewards approved
RUN = RunConfig(
    rounds=2,
    seed=0,
    data=DataConfig(name="breast-cancer", sites=2),
    strategy=StrategyConfig(min_sites=2),
)


def submit_as_job(fed: Federation, config: RunConfig, task_file: Path) -> str:
    """Submit ``config`` as a job: the run file the simulation ran, given to ``medfed job
    submit --config`` (with the task file named in it); returns the job's id."""
    run_file = task_file.parent / "run.toml"
    run = replace(check_run(config, "simulation"), task=str(task_file), round_timeout=120.0)
    save_config(run, run_file)
    proc = medfed(
        "job", "submit", "--config", str(run_file), "--kit", str(fed.kit("researchers", "bob"))
    )
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"(job-[0-9a-f]+)", proc.stdout)
    assert match is not None, proc.stdout
    return match.group(1)


def federated_model(fed: Federation, config: RunConfig, tmp_path: Path) -> Params:
    """``config`` trained by a coordinator and one node per site; the job's final model."""
    from medfed.data import load_dataset

    sites = load_dataset(config.data.name, num_sites=config.data.sites).site_names
    fed.start_coordinator()
    # the simulation's sites hold what the data set's loader gives for its site count, seed
    # and options (the seed changes only generated data sets)
    data = ["--sites", str(config.data.sites), "--data-seed", str(config.seed)]
    for key, value in config.data.options.items():
        data += ["--option", f"{key}={value}"]
    for site in sites:  # each kit is named after its hospital in the data set
        fed.start_node(site, *data, "--auto-approve")
    return trained_job(fed, config, tmp_path, sites)


def trained_job(fed: Federation, config: RunConfig, tmp_path: Path, sites: list[str]) -> Params:
    """``config`` with the default task submitted to the running nodes of ``sites``; the
    job's final model once it completes."""
    task_file = tmp_path / "default_task.py"
    task_file.write_text(DEFAULT_TASK)
    job_id = submit_as_job(fed, config, task_file)
    bob = str(fed.kit("researchers", "bob"))
    proc = medfed("job", "status", job_id, "--watch", "--kit", bob, timeout=240)
    assert proc.returncode == 0 and "complete" in proc.stdout, (
        proc.stdout + proc.stderr + fed.log("coordinator") + "".join(fed.log(s) for s in sites)
    )
    model = tmp_path / "model.safetensors"
    proc = medfed("job", "download", job_id, "--kit", bob, "--out", str(model))
    assert proc.returncode == 0, proc.stderr
    params, meta = load_params(model)
    assert meta["round"] == str(config.rounds)
    return params


def digest(params: Params) -> str:
    h = hashlib.sha256()
    for name, value in params.items():
        h.update(f"{name}:{value.dtype.str}:{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def assert_same_model(simulated: Params, federated: Params) -> None:
    assert list(simulated) == list(federated)
    for name in simulated:
        a, b = simulated[name], federated[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a, b), (
            f"{name}: {np.count_nonzero(a != b)} of {a.size} values differ, "
            f"largest by {np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))}"
        )
    assert digest(simulated) == digest(federated)


def test_a_federation_trains_the_simulations_model_bit_for_bit(
    federation: Federation, tmp_path: Path
) -> None:
    from medfed.orchestration.simulation import simulate

    simulated = simulate(RUN)
    assert simulated.sites == ["academic-centre", "community-north"]
    federated = federated_model(federation, RUN, tmp_path)
    assert_same_model(simulated.params, federated)
    # the two runs trained: the model is not the initial one
    from medfed.data import load_dataset
    from medfed.site.task import default_task

    spec = load_dataset("breast-cancer", num_sites=2).spec
    initial = default_task(spec).initial_params(spec, seed=RUN.seed)
    assert not np.array_equal(initial["0.weight"], federated["0.weight"])


def test_the_job_defaults_bounds_leave_the_model_as_the_simulation_trains_it() -> None:
    """The federation bounds updates by default and holds a round's updates until its last:
    with honest sites that changes neither the updates nor the order they are summed in."""
    from medfed.orchestration.simulation import simulate

    unbounded = simulate(replace(RUN, rounds=1))
    bounded = simulate(replace(RUN, rounds=1, bounds=UpdateBounds()))
    assert digest(unbounded.params) == digest(bounded.params)
    assert TrainSettings() == RUN.train
