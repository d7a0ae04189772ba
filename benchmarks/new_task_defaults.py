"""How the training settings for regression and segmentation were chosen: on validation data.

Each site's *training* records are split once more (75 % training, 25 % validation, a fixed
seed); the sites' test records are never loaded into the runs below. For each setting of
the grid, a federation (FedAvg, every site every round) trains on the 75 % and is scored on
the validation records: RMSE for ``diabetes`` (lower is better), mean Dice for
``synthetic-segmentation`` (higher is better), example-weighted over the sites. Run::

    .venv/bin/python benchmarks/new_task_defaults.py            # all three
    .venv/bin/python benchmarks/new_task_defaults.py diabetes   # one

The table it prints is the record of the choice; the chosen settings are in the docstrings
of :mod:`medfed.data.diabetes` and :mod:`medfed.data.synthetic_segmentation` and in the
end-to-end tests (``tests/orchestration/test_new_task_kinds.py``).
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import replace

import numpy as np

from medfed.config import config_from_dict
from medfed.data import load_dataset
from medfed.data.base import FederatedDataset
from medfed.data.partition import quantile_strata, train_test_indices
from medfed.orchestration.simulation import Simulation

VALIDATION_FRACTION = 0.25
VALIDATION_SEED = 77

CASES = {
    # name: (data options, rounds, metric, grid of (optimizer, learning rate, local epochs))
    "diabetes": (
        {},
        20,
        "rmse",
        list(itertools.product(["sgd"], [0.01, 0.05, 0.1, 0.2], [1, 2, 5]))
        + list(itertools.product(["adam"], [0.001, 0.003, 0.01], [1, 2, 5])),
    ),
    "synthetic-segmentation": (
        {},
        10,
        "dice",
        list(itertools.product(["sgd"], [0.05, 0.1, 0.2], [1, 2]))
        + list(itertools.product(["adam"], [0.003, 0.01], [1, 2])),
    ),
    "synthetic-segmentation-3d": (
        {"volume": True, "image_size": 16, "depth": 8},
        10,
        "dice",
        list(itertools.product(["sgd"], [0.1, 0.2], [1, 2]))
        + list(itertools.product(["adam"], [0.003, 0.01], [1, 2])),
    ),
}


def validation_split(dataset: FederatedDataset) -> FederatedDataset:
    """Each site's training records split into training and validation; test records gone."""
    rng = np.random.default_rng(VALIDATION_SEED)
    sites = []
    for site in dataset.sites:
        y = site.y_train
        if y.ndim == 1 and y.dtype.kind == "f":  # regression: stratify by quartile
            strata = quantile_strata(y, bins=4)
        else:  # segmentation: by whether the scan holds a tumour
            strata = (y.reshape(len(y), -1).max(axis=1) > 0).astype(np.int64)
        train, val = train_test_indices(
            site.num_train, test_fraction=VALIDATION_FRACTION, rng=rng, labels=strata
        )
        sites.append(
            replace(
                site,
                x_train=site.x_train[train],
                y_train=y[train],
                x_test=site.x_train[val],
                y_test=y[val],
            )
        )
    return replace(dataset, sites=tuple(sites))


def main(names: list[str]) -> None:
    for case in names:
        options, rounds, metric, grid = CASES[case]
        name = case.removesuffix("-3d")
        dataset = validation_split(load_dataset(name, options=options))
        print(f"\n{case}: {rounds} rounds, validation {metric} (test records not used)")
        print(f"{'optimizer':>9} {'lr':>6} {'epochs':>6} {metric:>7} {'seconds':>7}")
        for optimizer, lr, epochs in grid:
            config = config_from_dict(
                {
                    "rounds": rounds,
                    "seed": 0,
                    "data": {"name": name, "options": options},
                    "train": {
                        "optimizer": optimizer,
                        "learning_rate": lr,
                        "local_epochs": epochs,
                    },
                    "evaluation": {"every": rounds},
                }
            )
            sim = Simulation(config)
            sim.factory._dataset = dataset  # the validation split instead of the test split
            start = time.perf_counter()
            result = sim.run()
            summary = result.history[-1].eval_summary
            value = None if summary is None else getattr(summary, metric)
            shown = "—" if value is None else f"{value:.3f}"
            seconds = time.perf_counter() - start
            print(f"{optimizer:>9} {lr:>6g} {epochs:>6} {shown:>7} {seconds:>7.1f}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
