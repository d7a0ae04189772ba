"""Which harmonisation to use: each site alone, none, the federation's standardisation, ComBat.

Measured on validation data only: each site's *training* records are split once more (75 %
training, 25 % validation, a fixed seed, :func:`new_task_defaults.validation_split`); the
sites' test records are never loaded into the runs below. For every case and arm a
federation (the default task and training settings, FedAvg, every site every round) trains
on the 75 % and is scored on each site's validation records; the table gives the mean over
sites (AUROC for binary outcomes, RMSE for regression, C-index for survival) as the median
over three run seeds.

Arms: ``site`` — each site standardises with its own training mean and sd (a data set
file's ``standardize = "site"``, the default of files); ``none`` — the values as the case
gives them; ``standardise`` and ``combat`` — ``[data] harmonise``
(:mod:`medfed.orchestration.harmonise`).

Cases, chosen so that either kind of site difference is present:

* ``ehr-units`` — ``synthetic-ehr`` in clinical units (``standardize=false``): the sites'
  populations differ (covariate shift) and the outcome depends on the values themselves;
* ``ehr-skew`` — the same with label skew (``alpha=0.3``);
* ``ehr-gaps`` — ``ehr-units`` where two sites leave three labs unrecorded for 30 % of
  their patients (a site alone fills a gap with its own mean, harmonisation with the
  federation's);
* ``breast-calibration`` — ``breast-cancer`` with a per-site measurement calibration
  (each site's instruments scale every feature by a factor in [0.7, 1.4] and add an offset
  of N(0, 0.5) sd): a batch effect that carries no information about the outcome;
* ``diabetes`` (regression) and ``lung`` (survival) as bundled;
* ``tcga-brca`` (survival, Fed-TCGA-BRCA's six regions) when ``../shared/data`` holds it.

Run::

    .venv/bin/python benchmarks/harmonise.py               # every case
    .venv/bin/python benchmarks/harmonise.py ehr-units     # one
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from new_task_defaults import validation_split

from medfed.config import config_from_dict
from medfed.data import load_dataset
from medfed.data.base import FederatedDataset
from medfed.orchestration.simulation import Simulation

ARMS = ("site", "none", "standardise", "combat")
SEEDS = (0, 1, 2)
TCGA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tcga_brca"


def _calibrated(dataset: FederatedDataset) -> FederatedDataset:
    """Each site's instruments: every feature scaled and shifted (the label untouched)."""
    rng = np.random.default_rng(11)
    sites = []
    for site in dataset.sites:
        f = site.x_train.shape[1]
        a = rng.uniform(0.7, 1.4, f).astype(np.float32)
        b = rng.normal(0.0, 0.5, f).astype(np.float32)
        sites.append(replace(site, x_train=site.x_train * a + b, x_test=site.x_test * a + b))
    return replace(dataset, sites=tuple(sites))


def _gaps(dataset: FederatedDataset) -> FederatedDataset:
    """Two of the sites do not record three of the labs for 30 % of their patients."""
    rng = np.random.default_rng(12)
    sites = list(dataset.sites)
    for k in (0, 2):
        s = sites[k]
        x_train, x_test = s.x_train.copy(), s.x_test.copy()
        for x in (x_train, x_test):
            for j in (3, 5, 7):
                x[rng.random(len(x)) < 0.3, j] = np.nan
        sites[k] = replace(s, x_train=x_train, x_test=x_test)
    return replace(dataset, sites=tuple(sites))


def _site_filled(dataset: FederatedDataset, *, standardise: bool) -> FederatedDataset:
    """What a site does alone (a data set file without harmonise): gaps take its training
    mean, and with ``standardise`` its own mean and sd centre and scale every feature."""
    sites = []
    for site in dataset.sites:
        mean = np.nan_to_num(np.nanmean(site.x_train, axis=0))
        sd = np.nanstd(site.x_train, axis=0) if standardise else np.ones_like(mean)
        sd = np.where(sd > 0, sd, 1.0)
        centre = mean if standardise else np.zeros_like(mean)

        def prepared(x: np.ndarray, mean: np.ndarray = mean, centre: np.ndarray = centre,
                     sd: np.ndarray = sd) -> np.ndarray:  # fmt: skip
            return ((np.where(np.isnan(x), mean, x) - centre) / sd).astype(np.float32)

        sites.append(replace(site, x_train=prepared(site.x_train), x_test=prepared(site.x_test)))
    return replace(dataset, sites=tuple(sites))


Case = tuple[str, dict[str, object], Callable[[FederatedDataset], FederatedDataset], str]
CASES: dict[str, Case] = {
    # name: (data set, options, transform, metric (higher is better unless rmse))
    "ehr-units": ("synthetic-ehr", {"standardize": False}, lambda d: d, "auroc"),
    "ehr-skew": ("synthetic-ehr", {"standardize": False, "alpha": 0.3}, lambda d: d, "auroc"),
    "breast-calibration": ("breast-cancer", {}, _calibrated, "auroc"),
    "ehr-gaps": ("synthetic-ehr", {"standardize": False}, _gaps, "auroc"),
    "diabetes": ("diabetes", {}, lambda d: d, "rmse"),
    "lung": ("lung", {}, lambda d: d, "c_index"),
    "tcga-brca": ("tcga-brca", {}, lambda d: d, "c_index"),
}


def _score(name: str, dataset: FederatedDataset, arm: str, metric: str, seed: int) -> float:
    config = config_from_dict(
        {
            "seed": seed,
            "data": {
                "name": name,
                "dir": str(TCGA) if name == "tcga-brca" else None,
                "harmonise": arm if arm in ("standardise", "combat") else "none",
            },
            "evaluation": {"every": 0, "quality": False},
        }
    )
    given = dataset
    if arm in ("site", "none"):  # "none": the values as given, gaps the site's mean
        given = _site_filled(dataset, standardise=arm == "site")
    result = Simulation(config, dataset=given).run()
    values = [getattr(m, metric) for m in result.history[-1].eval_metrics.values()]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def main(names: list[str]) -> None:
    print(f"median over seeds {SEEDS} of the mean over sites, validation records only")
    print(f"{'case':<20} {'metric':<8} " + " ".join(f"{a:>12}" for a in ARMS) + "  seconds")
    for case in names:
        name, options, transform, metric = CASES[case]
        if name == "tcga-brca" and not TCGA.is_dir():
            print(f"{case:<20} skipped: {TCGA} is not here")
            continue
        start = time.perf_counter()
        loaded = load_dataset(
            name, options=options, data_dir=str(TCGA) if name == "tcga-brca" else None
        )
        dataset = validation_split(transform(loaded))
        cells = []
        for arm in ARMS:
            runs = [_score(name, dataset, arm, metric, seed) for seed in SEEDS]
            cells.append(f"{statistics.median(runs):>12.4f}")
        seconds = time.perf_counter() - start
        print(f"{case:<20} {metric:<8} " + " ".join(cells) + f"  {seconds:7.1f}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
