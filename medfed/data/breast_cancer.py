"""Wisconsin breast cancer (diagnostic), split into 2–8 hospitals with realistic differences.

The data: 569 fine-needle aspirates of breast masses, 30 features describing the cell
nuclei in a digitised image (mean, standard error and worst value of 10 measurements), and
the diagnosis (212 malignant, 357 benign). Street, Wolberg & Mangasarian (1993); UCI
Machine Learning Repository; shipped inside scikit-learn (no download).

The hospitals are not in the data: this module invents them, the way a consortium of one
academic centre and several smaller hospitals would look. The split is fixed
(:data:`SPLIT_SEED`, independent of any run seed), so each hospital holds the same patients
in every run. What differs between hospitals, and why it is plausible:

- **size**: the academic centre holds the most patients (35–71 %, fewer as more sites
  take part); community hospitals and clinics hold 33–163 each (:data:`HOSPITALS` gives
  each site's weight);
- **prevalence of malignancy**: a screening clinic sees mostly benign masses (12 %), a
  specialist oncology clinic mostly malignant ones (65 %); the academic centre, a referral
  centre, receives every remaining patient (35–46 % malignant, depending on the site count);
- **covariate shift by tumour size** (referral pattern): each site draws its malignant and
  its benign patients with weights ``exp(size_preference * z)``, ``z`` the standardised mean
  nucleus radius, so screening-detected masses (small) go to the screening and community
  sites and late presentations (large) to the oncology and rural sites. Within a class the
  features therefore differ in distribution between sites, while the relation between
  features and diagnosis is the same everywhere (no concept shift).

With these differences the small sites are hard to learn alone (a few dozen training
patients, some with under ten malignant cases), which is the situation federated learning
is for: a model trained across sites beats the average local-only model on the sites' own
test sets (``tests/data/test_breast_cancer.py`` checks this with a logistic model).

Labels: ``y = 1`` for malignant, ``0`` for benign (scikit-learn's ``target`` is the other
way round). Features are standardised with the mean and standard deviation of the full
public data set: fixed, dataset-level preprocessing done once for all sites (as FLamby
does), not fitted by any site. Each site holds out a stratified 25 % test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medfed.data._shipped import shipped_file
from medfed.data.base import DataSpec, FederatedDataset, SiteData, TaskKind
from medfed.data.partition import train_test_indices
from medfed.errors import DataError

__all__ = [
    "DEFAULT_SITES",
    "FEATURE_NAMES",
    "HOSPITALS",
    "MAX_SITES",
    "MIN_SITES",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "load_breast_cancer",
]

SPLIT_SEED = 20_230_519
"""Seed of the hospital split and the train/test split; not the run seed."""
TEST_FRACTION = 0.25
DEFAULT_SITES = 4
MIN_SITES = 2
MAX_SITES = 8

_MEASUREMENTS = (
    "radius",
    "texture",
    "perimeter",
    "area",
    "smoothness",
    "compactness",
    "concavity",
    "concave points",
    "symmetry",
    "fractal dimension",
)
FEATURE_NAMES: tuple[str, ...] = (
    *(f"mean {m}" for m in _MEASUREMENTS),
    *(f"{m} error" for m in _MEASUREMENTS),
    *(f"worst {m}" for m in _MEASUREMENTS),
)
_N_RECORDS = 569


@dataclass(frozen=True)
class Hospital:
    """One invented site: its share of patients, case mix and referral pattern."""

    name: str
    weight: float
    """Relative size; sites' sizes are proportional to their weights."""
    prevalence: float | None
    """Share of malignant patients; None for the centre that receives all the rest."""
    size_preference: float
    """> 0 prefers large tumours (late presentation), < 0 small ones (screening)."""
    description: str


HOSPITALS: tuple[Hospital, ...] = (
    Hospital(
        "academic-centre",
        3.0,
        None,
        0.0,
        "university hospital and tertiary referral centre: the largest site, receives "
        "every patient the other sites do not",
    ),
    Hospital(
        "community-north",
        1.2,
        0.20,
        -0.6,
        "community hospital: few malignancies, mostly small masses found early",
    ),
    Hospital(
        "oncology-clinic",
        1.0,
        0.65,
        0.6,
        "specialist oncology clinic: referred patients, mostly malignant, larger tumours",
    ),
    Hospital(
        "screening-clinic",
        0.8,
        0.12,
        -1.0,
        "screening programme clinic: rarely malignant, small screen-detected masses",
    ),
    Hospital(
        "regional-hospital",
        0.9,
        0.35,
        0.0,
        "regional general hospital: the consortium's average case mix",
    ),
    Hospital(
        "rural-hospital",
        0.6,
        0.25,
        0.4,
        "rural hospital: small, patients present late with larger tumours",
    ),
    Hospital(
        "private-clinic",
        0.7,
        0.30,
        -0.3,
        "private clinic: opportunistic screening, somewhat smaller masses",
    ),
    Hospital(
        "community-south",
        0.5,
        0.40,
        0.3,
        "small community hospital with an older catchment: more malignancies",
    ),
)


def _read_shipped() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Features and malignancy labels of the 569 records, in scikit-learn's order."""
    path = shipped_file("sklearn", "datasets", "data", "breast_cancer.csv")
    if path is not None:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
        if table.shape == (_N_RECORDS, len(FEATURE_NAMES) + 1):
            return table[:, :-1], (table[:, -1] == 0).astype(np.int64)
    # The file moved or changed in this scikit-learn version: ask scikit-learn (slower).
    try:
        from sklearn.datasets import load_breast_cancer as sk_load
    except ImportError as exc:
        raise DataError(
            "the breast-cancer data set comes with scikit-learn: install it with "
            "`pip install scikit-learn`"
        ) from exc
    bunch = sk_load()
    return np.asarray(bunch.data, np.float64), (np.asarray(bunch.target) == 0).astype(np.int64)


def _take(
    pool: npt.NDArray[np.int64],
    k: int,
    *,
    score: npt.NDArray[np.float64],
    preference: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.int64]:
    """``k`` records of ``pool`` drawn without replacement with weights ``exp(pref * score)``.

    Gumbel-top-k (Efraimidis & Spirakis 2006), from uniform draws only, so the split is
    the same on every numpy version.
    """
    gumbel = -np.log(-np.log(rng.random(len(pool))))
    keys = preference * score[pool] + gumbel
    return pool[np.argsort(-keys, kind="stable")[:k]]


def _site_indices(
    y: npt.NDArray[np.int64], size_score: npt.NDArray[np.float64], num_sites: int
) -> list[npt.NDArray[np.int64]]:
    rng = np.random.default_rng(SPLIT_SEED)
    hospitals = HOSPITALS[:num_sites]
    weights = np.array([h.weight for h in hospitals])
    sizes = np.round(len(y) * weights / weights.sum()).astype(np.int64)
    sizes[0] = len(y) - sizes[1:].sum()
    pools = {1: np.flatnonzero(y == 1), 0: np.flatnonzero(y == 0)}
    chosen: list[npt.NDArray[np.int64]] = []
    for hospital, size in zip(hospitals[1:], sizes[1:], strict=True):
        assert hospital.prevalence is not None
        n_malignant = round(int(size) * hospital.prevalence)
        picks = []
        for label, count in ((1, n_malignant), (0, int(size) - n_malignant)):
            pick = _take(
                pools[label],
                count,
                score=size_score,
                preference=hospital.size_preference,
                rng=rng,
            )
            pools[label] = np.setdiff1d(pools[label], pick)
            picks.append(pick)
        chosen.append(np.sort(np.concatenate(picks)))
    centre = np.sort(np.concatenate([pools[1], pools[0]]))
    return [centre, *chosen]


def load_breast_cancer(*, num_sites: int = DEFAULT_SITES) -> FederatedDataset:
    """The Wisconsin breast cancer data split into ``num_sites`` hospitals (2 to 8).

    The first ``num_sites`` entries of :data:`HOSPITALS` take part. The split depends only
    on ``num_sites``, never on a run seed.
    """
    if not MIN_SITES <= num_sites <= MAX_SITES:
        raise DataError(
            f"breast-cancer can be split into {MIN_SITES} to {MAX_SITES} hospitals, not "
            f"{num_sites}: pass a site count in that range"
        )
    x_raw, y = _read_shipped()
    mean, std = x_raw.mean(axis=0), x_raw.std(axis=0)
    x = ((x_raw - mean) / std).astype(np.float32)
    radius = x[:, FEATURE_NAMES.index("mean radius")].astype(np.float64)

    split_rng = np.random.default_rng([SPLIT_SEED, num_sites])
    sites = []
    for hospital, idx in zip(HOSPITALS, _site_indices(y, radius, num_sites), strict=False):
        train, test = train_test_indices(
            len(idx), test_fraction=TEST_FRACTION, rng=split_rng, labels=y[idx]
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
        name="breast-cancer",
        spec=DataSpec(
            kind=TaskKind.BINARY,
            input_shape=(len(FEATURE_NAMES),),
            n_classes=2,
            feature_names=FEATURE_NAMES,
        ),
        sites=tuple(sites),
        description=(
            f"Wisconsin diagnostic breast cancer (569 patients, 30 features, y = 1 malignant) "
            f"split into {num_sites} invented hospitals that differ in size, prevalence of "
            f"malignancy and tumour size (referral pattern)"
        ),
        source=(
            "Street, Wolberg & Mangasarian (1993), UCI Machine Learning Repository; the copy "
            "shipped with scikit-learn"
        ),
        notes={
            "split": f"fixed (seed {SPLIT_SEED}), independent of the run seed",
            "preprocessing": "features standardised with the full public data set's mean and "
            "standard deviation (dataset-level, like FLamby)",
            "test_set": "stratified 25 % of each site",
        },
    )
