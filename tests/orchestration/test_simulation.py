"""Whole simulated federations on each bundled data set, through the public API."""

from __future__ import annotations

import numpy as np
import pytest

import medfed
from medfed.config import config_from_dict


def _config(**sections):
    raw = {"rounds": 5, "seed": 0, **sections}
    return config_from_dict(raw)


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values)


@pytest.mark.slow
def test_breast_cancer_federated_beats_average_local_only() -> None:
    config = _config(
        rounds=10,
        data={"name": "breast-cancer", "sites": 4},
        train={"batch_size": 16},
        evaluation={"baselines": True},
    )
    result = medfed.simulate(config)
    comp = result.comparison
    assert [c.site for c in comp] == result.sites and len(comp) == 4
    fed = _mean([c.federated.accuracy for c in comp])
    local = _mean([c.local.accuracy for c in comp])
    fed_auc = _mean([c.federated.auroc for c in comp])
    local_auc = _mean([c.local.auroc for c in comp])
    assert fed > local, (fed, local)
    assert fed_auc >= local_auc, (fed_auc, local_auc)
    assert all(c.pooled is not None and c.pooled.accuracy > 0.85 for c in comp)


def test_same_seed_same_model_bit_for_bit() -> None:
    config = _config(
        rounds=3,
        data={"name": "synthetic-ehr", "sites": 4},
        strategy={"fraction": 0.5, "min_sites": 1},
    )
    a = medfed.simulate(config).params
    b = medfed.simulate(config).params
    c = medfed.simulate(config.with_overrides(seed=1)).params
    assert a == b
    assert a != c


@pytest.mark.slow
def test_process_backend_repeats_itself_and_trains() -> None:
    config = _config(
        rounds=3,
        data={"name": "synthetic-ehr", "sites": 4},
        backend={"kind": "process", "workers": 2},
    )
    a = medfed.simulate(config)
    b = medfed.simulate(config)
    assert a.params == b.params
    assert a.history[-1].eval_summary.auroc > 0.6


def test_lung_survival_end_to_end() -> None:
    result = medfed.simulate(_config(rounds=20, data={"name": "lung"}, train={"batch_size": 16}))
    final = result.history[-1].eval_summary
    # the NCCTG covariates are weak predictors: published C-indices sit around 0.6-0.65
    assert final.c_index is not None and final.c_index > 0.58
    assert final.accuracy is None  # survival has no accuracy
    assert len(result.sites) >= 3


def test_synthetic_ehr_end_to_end() -> None:
    result = medfed.simulate(
        _config(rounds=5, data={"name": "synthetic-ehr", "sites": 6, "options": {"alpha": 0.5}})
    )
    assert result.history[-1].eval_summary.auroc > 0.65
    assert len(result.history[-1].eval_metrics) == 6


@pytest.mark.slow
def test_synthetic_imaging_end_to_end() -> None:
    result = medfed.simulate(
        _config(
            rounds=4,
            data={"name": "synthetic-imaging", "sites": 3},
            train={"optimizer": "adam", "learning_rate": 0.003},
        )
    )
    first = result.history[0].eval_summary.auroc
    last = result.history[-1].eval_summary.auroc
    assert last > 0.6 and last > first - 0.02


@pytest.mark.data
def test_tcga_brca_end_to_end(tcga_dir) -> None:
    result = medfed.simulate(
        _config(
            rounds=5,
            data={"name": "tcga-brca", "dir": str(tcga_dir)},
            train={"batch_size": 8, "optimizer": "adam", "learning_rate": 0.01},
        )
    )
    assert result.sites == [f"region-{k}" for k in range(6)]
    assert result.history[-1].eval_summary.c_index > 0.6


def test_a_python_task_object_runs_in_process() -> None:
    import torch.nn as nn

    def build(spec):
        return nn.Linear(spec.input_shape[0], spec.n_outputs)

    task = medfed.Task(model=build, name="logistic")
    result = medfed.simulate(_config(rounds=2, data={"name": "breast-cancer"}), task=task)
    assert list(result.params) == ["weight", "bias"]
    assert np.isfinite(result.params["weight"]).all()
