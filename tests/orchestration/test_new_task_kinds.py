"""Whole simulated federations for regression (diabetes) and segmentation (generated scans).

The training settings are the ones chosen on validation splits carved from the sites'
training records (``benchmarks/new_task_defaults.py``; the test records played no part).
Each test checks real learning against what a model that learned nothing scores.
"""

from __future__ import annotations

import numpy as np

import medfed
from medfed.config import config_from_dict
from medfed.data import load_dataset
from medfed.math.metrics import dice, rmse
from medfed.reporting.summary import comparison_rows, summary_markdown


def _mean(values):  # type: ignore[no-untyped-def]
    return float(np.mean([v for v in values if v is not None]))


def test_federated_regression_beats_predicting_the_mean() -> None:
    config = config_from_dict(
        {
            "rounds": 20,
            "seed": 0,
            "data": {"name": "diabetes", "sites": 4},
            "train": {"learning_rate": 0.05, "local_epochs": 2},
            "evaluation": {"every": 5, "baselines": True},
        }
    )
    result = medfed.simulate(config)
    ds = load_dataset("diabetes")
    train_mean = float(np.concatenate([s.y_train for s in ds.sites]).mean())
    for c, site in zip(result.comparison, ds.sites, strict=True):
        assert c.site == site.name
        baseline = rmse(targets=site.y_test, predicted=np.full(site.num_test, train_mean))
        assert c.federated is not None and c.local is not None and c.pooled is not None
        assert c.federated.rmse is not None and c.federated.mae is not None
        assert c.federated.accuracy is None and c.federated.dice is None
        assert c.federated.rmse < 0.9 * baseline, (site.name, c.federated.rmse, baseline)
    final = result.history[-1].eval_summary
    assert final is not None and final.rmse is not None
    y = np.concatenate([s.y_test for s in ds.sites])
    everyone = rmse(targets=y, predicted=np.full(len(y), train_mean))
    # about 62 against 77; least squares on the pooled training records scores 63
    assert final.rmse < 0.85 * everyone, (final.rmse, everyone)
    # pooled takes 4 times the steps of a site per round and overfits somewhat (about 67)
    assert _mean([c.pooled.rmse for c in result.comparison]) < 0.9 * everyone
    assert _mean([c.local.rmse for c in result.comparison]) < everyone
    header, _ = comparison_rows(result)
    assert header[2:5] == ["RMSE fed", "RMSE local", "RMSE pooled"] and "MAE fed" in header
    assert "lower is better" in summary_markdown(result)


def test_federated_segmentation_finds_the_tumours() -> None:
    config = config_from_dict(
        {
            "rounds": 10,
            "seed": 0,
            # 16×16 slices: a quarter of the default's pixels, to keep the test quick
            "data": {"name": "synthetic-segmentation", "sites": 3, "options": {"image_size": 16}},
            "train": {"optimizer": "adam", "learning_rate": 0.003, "local_epochs": 2},
            "evaluation": {"every": 5, "baselines": True},
        }
    )
    result = medfed.simulate(config)
    ds = load_dataset("synthetic-segmentation", num_sites=3, options={"image_size": 16})
    y = np.concatenate([s.y_test for s in ds.sites])
    all_tumour = dice(labels=y, predicted=np.ones_like(y), n_classes=2)
    assert all_tumour is not None and all_tumour < 0.1
    assert dice(labels=y, predicted=np.zeros_like(y), n_classes=2) == 0.0
    final = result.history[-1].eval_summary
    assert final is not None and final.dice is not None and final.rmse is None
    assert final.dice > 0.45, final.dice
    for c in result.comparison:  # every site, well above both trivial masks (0 and ~0.06);
        # the margin allows for torch's sums rounding differently on another thread count
        assert c.federated is not None and c.federated.dice is not None
        assert c.federated.dice > all_tumour + 0.2, (c.site, c.federated.dice)
    assert _mean([c.pooled.dice for c in result.comparison]) > all_tumour + 0.25
    assert _mean([c.local.dice for c in result.comparison]) > all_tumour + 0.1
    header, _ = comparison_rows(result)
    assert header[2:] == ["Dice fed", "Dice local", "Dice pooled"]


def test_a_3d_federation_trains_on_volumes() -> None:
    config = config_from_dict(
        {
            "rounds": 6,
            "seed": 0,
            "data": {
                "name": "synthetic-segmentation",
                "sites": 2,
                "options": {"volume": True, "image_size": 16, "depth": 8, "num_images": 100},
            },
            "train": {"optimizer": "adam", "learning_rate": 0.003, "local_epochs": 2},
            "evaluation": {"every": 6},
        }
    )
    result = medfed.simulate(config)
    final = result.history[-1].eval_summary
    assert final is not None and final.dice is not None
    ds = load_dataset("synthetic-segmentation", num_sites=2, options=config.data.options)
    y = np.concatenate([s.y_test for s in ds.sites])
    all_tumour = dice(labels=y, predicted=np.ones_like(y), n_classes=2)
    assert all_tumour is not None and final.dice > all_tumour + 0.15, (final.dice, all_tumour)
