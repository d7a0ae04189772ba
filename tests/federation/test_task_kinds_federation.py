"""Regression and 3D segmentation jobs, jobs with strategies that need each site's update
(FedNova, the coordinate-wise median) and ones whose sites keep state (SCAFFOLD, FedPer),
through a real federation train the simulation's model.

A coordinator and a node per site (processes, TLS), each node serving its hospital's share of a
bundled data set, train the job submitted with the simulation's own run file; the final model
equals the in-process simulation's bit for bit (see ``test_same_model.py`` for what has to
agree). The cases: ``diabetes`` (regression, RMSE/MAE; the default MLP rescaled to the
target's unit) and ``synthetic-segmentation`` as 3D volumes (the default 3D U-Net, Dice).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medfed.config import DataConfig, PersonaliseConfig, RunConfig, StrategyConfig
from tests.federation.conftest import Federation, free_port, medfed
from tests.federation.test_same_model import assert_same_model, federated_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VOLUMES = {"volume": True, "image_size": 16, "depth": 8, "num_images": 48}
CASES = {
    "regression": RunConfig(
        rounds=2,
        seed=1,
        data=DataConfig(name="diabetes", sites=2),
        strategy=StrategyConfig(min_sites=2),
    ),
    # strategies that need each site's update (and, FedNova, its reported local steps)
    "fednova": RunConfig(
        rounds=2,
        data=DataConfig(name="breast-cancer", sites=3),
        strategy=StrategyConfig(name="fednova", min_sites=3),
    ),
    # SCAFFOLD: the server's variate travels with the model, each node keeps its own on disk
    "scaffold": RunConfig(
        rounds=2,
        data=DataConfig(name="breast-cancer", sites=3),
        strategy=StrategyConfig(name="scaffold", min_sites=3),
    ),
    # FedPer: each node keeps its own head on disk from round 1 (and a personalised evaluation)
    "fedper": RunConfig(
        rounds=2,
        data=DataConfig(name="breast-cancer", sites=3),
        strategy=StrategyConfig(min_sites=3),
        personalise=PersonaliseConfig(method="fedper"),
    ),
    "median": RunConfig(
        rounds=2,
        data=DataConfig(name="breast-cancer", sites=3),
        strategy=StrategyConfig(name="median", min_sites=3),
    ),
    "segmentation-3d": RunConfig(
        rounds=1,
        seed=0,
        data=DataConfig(name="synthetic-segmentation", sites=2, options=dict(VOLUMES)),
        strategy=StrategyConfig(min_sites=2),
    ),
}

DEFAULT_TASK = '''"""medfed's default model for the data, default training and evaluation."""

from medfed.site.models import default_model
from medfed.site.task import Task

task = Task(model=default_model, name="default")
'''


def _federation(root: Path, sites: list[str], data: str) -> Federation:
    port = free_port()
    names = ", ".join(f'"{s}"' for s in sites)
    (root / "consortium.toml").write_text(
        'name = "kinds"\n[coordinator]\nhost = "127.0.0.1"\n'
        f"port = {port}\n[participants]\nsites = [{names}]\n"
        'admins = ["alice"]\nresearchers = ["bob"]\n'
    )
    proc = medfed("provision", str(root / "consortium.toml"), "--out", str(root / "kits"))
    assert proc.returncode == 0, proc.stderr
    return Federation(root, port, data=data)


@pytest.mark.parametrize("case", list(CASES))
def test_the_job_trains_the_simulations_model(case: str, tmp_path: Path) -> None:
    from medfed.data import load_dataset
    from medfed.orchestration.simulation import simulate

    config = CASES[case]
    d = config.data
    sites = load_dataset(d.name, num_sites=d.sites, seed=config.seed, options=d.options).site_names
    simulated = simulate(config)
    summary = simulated.history[-1].eval_summary
    assert summary is not None
    metric = {"regression": "rmse", "segmentation-3d": "dice"}.get(case, "auroc")
    assert getattr(summary, metric) is not None
    fed = _federation(tmp_path, sites, d.name)  # each kit named after its hospital's share
    try:
        federated = federated_model(fed, config, tmp_path)
    finally:
        fed.close()
    assert_same_model(simulated.params, federated)
