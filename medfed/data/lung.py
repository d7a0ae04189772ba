"""NCCTG advanced lung cancer survival, split by the institution that enrolled each patient.

The data: 228 patients with advanced lung cancer from the North Central Cancer Treatment
Group (Loprinzi et al., J Clin Oncol 1994), with survival time in days, vital status, age,
sex, physician- and patient-rated performance scores, calories consumed at meals and weight
loss. Shipped with lifelines (the same table as R's ``survival::lung``); nothing is
downloaded.

Sites are the natural ones: the ``inst`` column. Institutions with at least
``min_patients`` patients (default :data:`DEFAULT_MIN_PATIENTS` = 15, giving 7 of them) are
sites ``inst-1``, ``inst-3``, …; the 11 smaller institutions and the one patient without an
institution are merged into ``other-institutions`` (79 patients) — too small to hold out a
test set alone. Heterogeneity is whatever the institutions had: sizes 16–36 (79 merged),
death rates from 60 % to 79 %, and differing case mix (performance scores, weight loss);
nothing is added.

Preprocessing, in order:

1. ``event`` = death. R codes ``status`` as 1 = censored, 2 = dead; the file shipped with
   lifelines is recoded to 0 = censored, 1 = dead. Both codings are recognised from the
   values, anything else raises :class:`DataError`.
2. ``sex`` becomes ``female`` (0/1). Features: age, female, ph.ecog, ph.karno, pat.karno,
   meal.cal, wt.loss.
3. Each site holds out a 25 % test set, stratified by event (fixed :data:`SPLIT_SEED`).
4. Missing values (meal.cal 47, wt.loss 14, a few performance scores) are filled with the
   median of the site's own *training* patients, for its training and its test patients:
   no test patient and no other site informs the fill-in. A value no training patient of
   the site has falls back to the data set's mean (0 after step 5).
5. Features are standardised with the mean and standard deviation of the observed values
   in the full public table: fixed, dataset-level constants, the same at every site.

``y`` is ``[time in days, event]`` as float64, per :mod:`medfed.data.base`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from medfed.data._shipped import shipped_file
from medfed.data.base import DataSpec, FederatedDataset, SiteData, TaskKind
from medfed.data.partition import train_test_indices
from medfed.errors import DataError

__all__ = [
    "DEFAULT_MIN_PATIENTS",
    "FEATURE_NAMES",
    "MAX_MIN_PATIENTS",
    "MIN_MIN_PATIENTS",
    "NATURAL_SITES",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "load_lung",
    "natural_site_count",
]

SPLIT_SEED = 19_940_301
TEST_FRACTION = 0.25
DEFAULT_MIN_PATIENTS = 15
MIN_MIN_PATIENTS = 5
MAX_MIN_PATIENTS = 36
NATURAL_SITES = 8
"""Sites with the default threshold: 7 institutions and the merged rest."""
OTHER_SITE = "other-institutions"

FEATURE_NAMES: tuple[str, ...] = (
    "age",
    "female",
    "ph.ecog",
    "ph.karno",
    "pat.karno",
    "meal.cal",
    "wt.loss",
)
_COLUMNS = ("inst", "time", "status", "age", "sex", *FEATURE_NAMES[2:])


def _read_table() -> dict[str, npt.NDArray[np.float64]]:
    """The shipped table as float columns (missing values are NaN)."""
    path = shipped_file("lifelines", "datasets", "lung.csv")
    if path is not None:
        return _read_csv(path)
    try:  # the file moved in this lifelines version: ask lifelines (slower import)
        from lifelines.datasets import load_lung as lifelines_load
    except ImportError as exc:
        raise DataError(
            "the lung data set comes with lifelines: install it with `pip install lifelines`"
        ) from exc
    frame = lifelines_load()
    return {c: frame[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in _COLUMNS}


def _read_csv(path: Path) -> dict[str, npt.NDArray[np.float64]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path} lacks columns {missing}: reinstall lifelines")
    table = np.array(
        [[float(v) if v.strip() not in ("", "NA") else math.nan for v in row] for row in body],
        dtype=np.float64,
    )
    return {c: table[:, header.index(c)] for c in _COLUMNS}


def _events(status: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    codes = set(np.unique(status).tolist())
    if codes <= {0.0, 1.0}:  # lifelines' copy: 1 = dead
        return np.asarray(status == 1, dtype=np.float64)
    if codes <= {1.0, 2.0}:  # R's coding: 2 = dead
        return np.asarray(status == 2, dtype=np.float64)
    raise DataError(
        f"lung: unexpected status codes {sorted(codes)}: reinstall lifelines (expected 0/1 or 1/2)"
    )


def _groups(
    inst: npt.NDArray[np.float64], min_patients: int
) -> list[tuple[str, npt.NDArray[np.int64]]]:
    known = inst[~np.isnan(inst)]
    values, counts = np.unique(known, return_counts=True)
    kept = [v for v, c in zip(values, counts, strict=True) if c >= min_patients]
    groups = [(f"inst-{int(v)}", np.flatnonzero(inst == v)) for v in kept]
    rest = np.flatnonzero(~np.isin(inst, kept))  # NaN (no institution) is never in kept
    if len(rest):
        groups.append((OTHER_SITE, rest))
    return groups


def natural_site_count(min_patients: int = DEFAULT_MIN_PATIENTS) -> int:
    """How many sites the split has with this threshold (8 with the default)."""
    return len(_groups(_read_table()["inst"], _check_min_patients(min_patients)))


def _check_min_patients(min_patients: int) -> int:
    if not MIN_MIN_PATIENTS <= min_patients <= MAX_MIN_PATIENTS:
        raise DataError(
            f"lung: min_patients must be between {MIN_MIN_PATIENTS} and {MAX_MIN_PATIENTS}, "
            f"not {min_patients}"
        )
    return min_patients


def _impute(
    x_train: npt.NDArray[np.float64], x_test: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Fill NaNs with the training part's column medians (0, the data set mean, if none)."""
    observed = ~np.isnan(x_train)
    fill = np.zeros(x_train.shape[1])
    for j in range(x_train.shape[1]):
        if observed[:, j].any():
            fill[j] = float(np.median(x_train[observed[:, j], j]))
    return (
        np.where(np.isnan(x_train), fill, x_train),
        np.where(np.isnan(x_test), fill, x_test),
    )


def load_lung(
    *, num_sites: int | None = None, min_patients: int = DEFAULT_MIN_PATIENTS
) -> FederatedDataset:
    """The NCCTG lung cancer data, one site per institution with ``min_patients`` or more.

    The site count follows from ``min_patients`` (8 for the default 15); a different
    ``num_sites`` raises :class:`DataError`. The split is fixed, never seeded by a run.
    """
    _check_min_patients(min_patients)
    table = _read_table()
    groups = _groups(table["inst"], min_patients)
    if num_sites is not None and num_sites != len(groups):
        raise DataError(
            f"lung has {len(groups)} sites (institutions with at least {min_patients} "
            f"patients, the rest merged): leave the site count unset, or change the "
            f"min_patients option to change it"
        )
    time = table["time"]
    event = _events(table["status"])
    features = np.column_stack(
        [
            table["age"],
            (table["sex"] == 2).astype(np.float64),
            *(table[c] for c in FEATURE_NAMES[2:]),
        ]
    )
    # Dataset-level standardisation over observed values; NaNs stay NaN until imputed.
    mean = np.nanmean(features, axis=0)
    std = np.nanstd(features, axis=0)
    features = (features - mean) / std
    y = np.column_stack([time, event]).astype(np.float64)

    sites = []
    for k, (name, idx) in enumerate(groups):
        rng = np.random.default_rng([SPLIT_SEED, k])
        train, test = train_test_indices(
            len(idx), test_fraction=TEST_FRACTION, rng=rng, labels=event[idx]
        )
        x_train, x_test = _impute(features[idx[train]], features[idx[test]])
        sites.append(
            SiteData(
                name=name,
                x_train=x_train.astype(np.float32),
                y_train=y[idx[train]],
                x_test=x_test.astype(np.float32),
                y_test=y[idx[test]],
                description=_describe(name, len(idx)),
            )
        )
    return FederatedDataset(
        name="lung",
        spec=DataSpec(
            kind=TaskKind.SURVIVAL,
            input_shape=(len(FEATURE_NAMES),),
            n_classes=2,
            feature_names=FEATURE_NAMES,
        ),
        sites=tuple(sites),
        description=(
            f"NCCTG advanced lung cancer survival (228 patients, 7 features), one site per "
            f"institution with at least {min_patients} patients, the others merged"
        ),
        source="Loprinzi et al. (1994), J Clin Oncol 12(3):601-7; the copy shipped with lifelines",
        notes={
            "split": f"by institution; train/test fixed (seed {SPLIT_SEED}), stratified by event",
            "imputation": "median of the site's own training patients",
            "preprocessing": "features standardised with dataset-level constants",
            "event": "death (status 2 in R's coding, 1 in lifelines' copy)",
        },
    )


def _describe(name: str, n: int) -> str:
    if name == OTHER_SITE:
        return f"the smaller institutions and one patient without an institution ({n} patients)"
    return f"NCCTG institution {name.removeprefix('inst-')} ({n} patients)"
