"""Diabetes progression (Efron et al. 2004), split into 2–6 hospitals: a real regression task.

The data: 442 diabetes patients, 10 baseline variables (age, sex, body-mass index, mean
blood pressure and six blood serum measurements: total cholesterol, LDL, HDL, total/HDL
ratio, log triglycerides, glucose) and the target, a quantitative measure of disease
progression one year after baseline (25–346, mean 152, standard deviation 77). Efron,
Hastie, Johnstone & Tibshirani (2004), "Least Angle Regression"; shipped inside
scikit-learn in raw units (no download).

The hospitals are not in the data: this module invents them, as for
:mod:`medfed.data.breast_cancer`. The split is fixed (:data:`SPLIT_SEED`, independent of any
run seed). What differs between hospitals, and why it is plausible:

- **size**: the academic centre holds the most patients and receives every patient the
  other sites do not (:data:`HOSPITALS` gives each site's weight);
- **case mix by referral** (covariate shift): each site draws its patients with weights
  ``exp(preference · z)`` on standardised age, body-mass index and sex, so the obesity
  clinic sees heavy patients (and so, in these data, faster progression), the geriatric
  hospital old ones, the young-adult clinic young and lean ones, and the women's clinic
  mostly one of the two sex codes (the data do not say which code is which sex; the
  clinic's name is an invention). Within these groups the relation between the variables
  and progression is the same (no concept shift), but each small site sees only part of the
  range of the variables that matter most.

Preprocessing: the 10 variables are standardised with the full public data set's mean and
standard deviation (fixed, dataset-level, as FLamby does; not fitted by any site). The
target stays in its own unit; the spec's ``target_center`` and ``target_scale`` are the full
data set's mean and standard deviation of the target, so the default model and loss work at
size about 1 while MAE and RMSE are reported in progression points. Predicting the mean
(152) for everyone gives an RMSE of about 77; a least-squares fit on all 10 variables
about 54 (in-sample).

Each site holds out 25 % of its patients as a test set, stratified by the target's
quartile (:func:`medfed.data.partition.quantile_strata`) so that no small site's test set
holds only mild or only severe cases.

Training settings, chosen on validation data: ``benchmarks/new_task_defaults.py`` splits
each site's *training* patients again (75/25, stratified by quartile; the test patients are
not loaded) and trains the default model (:func:`medfed.site.models.default_model`, an MLP
rescaled to the target's unit) with FedAvg for 20 rounds over a grid of SGD learning rates
0.01–0.2 and Adam 0.001–0.01 with 1, 2 or 5 local epochs. Validation RMSE has a broad
plateau around 54–55 for SGD 0.05–0.1 with 1–5 epochs (medfed's default, SGD 0.05 and one
epoch: 55.3; best 53.9 at SGD 0.1, 2 epochs, whose neighbours are worse); SGD 0.05 with 2
local epochs (54.3) sits in the middle of the plateau and is what the tests use. On the
test sets that gives an RMSE of about 62 against 77 for predicting the training mean.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medfed.data._shipped import shipped_file
from medfed.data.base import DataSpec, FederatedDataset, SiteData, TaskKind
from medfed.data.partition import quantile_strata, train_test_indices
from medfed.errors import DataError

__all__ = [
    "DEFAULT_SITES",
    "FEATURE_NAMES",
    "HOSPITALS",
    "MAX_SITES",
    "MIN_SITES",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "load_diabetes",
]

SPLIT_SEED = 20_040_415
"""Seed of the hospital split and the train/test split; not the run seed."""
TEST_FRACTION = 0.25
DEFAULT_SITES = 4
MIN_SITES = 2
MAX_SITES = 6

FEATURE_NAMES: tuple[str, ...] = (
    "age",
    "sex",
    "bmi",
    "blood pressure",
    "total cholesterol",
    "ldl",
    "hdl",
    "cholesterol/hdl",
    "log triglycerides",
    "glucose",
)
_N_RECORDS = 442
_AGE, _SEX, _BMI = 0, 1, 2


@dataclass(frozen=True)
class Hospital:
    """One invented site: its share of patients and its referral pattern."""

    name: str
    weight: float
    """Relative size; sites' sizes are proportional to their weights."""
    prefers: tuple[float, float, float]
    """Preference for (age, sex code, body-mass index), standardised: > 0 prefers high."""
    description: str


HOSPITALS: tuple[Hospital, ...] = (
    Hospital(
        "academic-centre",
        3.0,
        (0.0, 0.0, 0.0),
        "university hospital: the largest site, receives every patient the other sites do not",
    ),
    Hospital(
        "obesity-clinic",
        1.1,
        (0.0, 0.0, 1.5),
        "metabolic and obesity clinic: mostly patients with a high body-mass index",
    ),
    Hospital(
        "geriatric-hospital",
        1.0,
        (1.5, 0.0, 0.0),
        "geriatric hospital: mostly older patients",
    ),
    Hospital(
        "young-adult-clinic",
        0.8,
        (-1.5, 0.0, -0.6),
        "young-adult diabetes clinic: younger, leaner patients",
    ),
    Hospital(
        "womens-clinic",
        0.8,
        (0.0, 2.5, 0.0),
        "women's health clinic (invented): mostly patients of one sex code",
    ),
    Hospital(
        "rural-hospital",
        0.6,
        (0.8, 0.0, 0.5),
        "rural hospital: small, older and heavier catchment",
    ),
)


def _read_shipped() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The 10 raw variables and the target of the 442 patients, in scikit-learn's order."""
    data = shipped_file("sklearn", "datasets", "data", "diabetes_data_raw.csv.gz")
    target = shipped_file("sklearn", "datasets", "data", "diabetes_target.csv.gz")
    if data is not None and target is not None:
        with gzip.open(data, "rt") as fh:
            x = np.loadtxt(fh, dtype=np.float64)
        with gzip.open(target, "rt") as fh:
            y = np.loadtxt(fh, dtype=np.float64)
        if x.shape == (_N_RECORDS, len(FEATURE_NAMES)) and y.shape == (_N_RECORDS,):
            return x, y
    # The files moved or changed in this scikit-learn version: ask scikit-learn (slower).
    try:
        from sklearn.datasets import load_diabetes as sk_load
    except ImportError as exc:
        raise DataError(
            "the diabetes data set comes with scikit-learn: install it with "
            "`pip install scikit-learn`"
        ) from exc
    bunch = sk_load(scaled=False)
    return np.asarray(bunch.data, np.float64), np.asarray(bunch.target, np.float64)


def _site_indices(z: npt.NDArray[np.float64], num_sites: int) -> list[npt.NDArray[np.int64]]:
    """Each hospital's patients: the small sites draw first by preference, the centre
    keeps the rest (Gumbel-top-k from uniform draws only: the same on every numpy)."""
    rng = np.random.default_rng(SPLIT_SEED)
    hospitals = HOSPITALS[:num_sites]
    weights = np.array([h.weight for h in hospitals])
    sizes = np.round(len(z) * weights / weights.sum()).astype(np.int64)
    pool = np.arange(len(z))
    chosen: list[npt.NDArray[np.int64]] = []
    for hospital, size in zip(hospitals[1:], sizes[1:], strict=True):
        score = z[pool][:, [_AGE, _SEX, _BMI]] @ np.array(hospital.prefers)
        keys = score - np.log(-np.log(rng.random(len(pool))))
        pick = pool[np.argsort(-keys, kind="stable")[: int(size)]]
        pool = np.setdiff1d(pool, pick)
        chosen.append(np.sort(pick))
    return [pool, *chosen]


def load_diabetes(*, num_sites: int = DEFAULT_SITES) -> FederatedDataset:
    """The diabetes data split into ``num_sites`` hospitals (2 to 6).

    The first ``num_sites`` entries of :data:`HOSPITALS` take part. The split depends only
    on ``num_sites``, never on a run seed.
    """
    if not MIN_SITES <= num_sites <= MAX_SITES:
        raise DataError(
            f"diabetes can be split into {MIN_SITES} to {MAX_SITES} hospitals, not "
            f"{num_sites}: pass a site count in that range"
        )
    x_raw, y_raw = _read_shipped()
    z = (x_raw - x_raw.mean(axis=0)) / x_raw.std(axis=0)
    x = z.astype(np.float32)
    y = y_raw.astype(np.float32)
    strata = quantile_strata(y_raw, bins=4)

    split_rng = np.random.default_rng([SPLIT_SEED, num_sites])
    sites = []
    for hospital, idx in zip(HOSPITALS, _site_indices(z, num_sites), strict=False):
        train, test = train_test_indices(
            len(idx), test_fraction=TEST_FRACTION, rng=split_rng, labels=strata[idx]
        )
        sites.append(
            SiteData(
                name=hospital.name,
                x_train=x[idx[train]],
                y_train=y[idx[train]],
                x_test=x[idx[test]],
                y_test=y[idx[test]],
                description=hospital.description,
            )
        )
    return FederatedDataset(
        name="diabetes",
        spec=DataSpec(
            kind=TaskKind.REGRESSION,
            input_shape=(len(FEATURE_NAMES),),
            feature_names=FEATURE_NAMES,
            target_center=float(y_raw.mean()),
            target_scale=float(y_raw.std()),
        ),
        sites=tuple(sites),
        description=(
            f"diabetes progression after one year (442 patients, 10 baseline variables, "
            f"y in progression points) split into {num_sites} invented hospitals that differ "
            "in size, age, body-mass index and sex"
        ),
        source=(
            "Efron, Hastie, Johnstone & Tibshirani (2004), Least Angle Regression; the copy "
            "shipped with scikit-learn (raw units)"
        ),
        notes={
            "split": f"fixed (seed {SPLIT_SEED}), independent of the run seed",
            "preprocessing": "features standardised with the full public data set's mean and "
            "standard deviation (dataset-level, like FLamby); target in its own unit",
            "test_set": "25 % of each site, stratified by the target's quartile",
            "baseline": "predicting the mean gives an RMSE of about 77 progression points",
        },
    )
