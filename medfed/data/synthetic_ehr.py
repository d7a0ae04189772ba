"""A synthetic consortium of hospitals with EHR-like records and a readmission outcome.

Nothing here is real patient data: every record is drawn from the generative model below,
deterministically from ``seed``. Three knobs set how the hospitals differ, each 0 (or ∞)
for "not at all", so the effect of each kind of heterogeneity can be studied alone:

- ``size_skew`` — site sizes ∝ ``exp(size_skew · z_k)``, ``z_k ~ N(0, 1)``
  (:func:`~medfed.data.partition.skewed_sizes`); every site has at least
  :data:`MIN_SITE_SIZE` patients;
- ``covariate_shift`` — each site's population differs: its mean frailty (a latent
  severity shared by the clinical features) is shifted by ``covariate_shift · s_k`` and
  each feature's latent value by ``covariate_shift · 0.5 · d_kj`` (``s_k, d_kj ~ N(0, 1)``:
  older or younger catchment, sicker case mix, local lab calibration and habits). The
  readmission model ``P(y | x)`` is the same everywhere, so sicker sites also have more
  readmissions;
- ``alpha`` — label skew on top of that (a prior shift): site k's odds of readmission are
  its case mix's odds times ``g_k1 / g_k0`` with ``g_k ~ Dirichlet(alpha, alpha)``
  (:func:`~medfed.data.partition.dirichlet_class_mix`). The site's patients are then drawn
  class by class (rejection from the site's population), so within a site ``P(x | y)`` is
  that population's. ``alpha = inf`` leaves prevalence to case mix alone; ``alpha = 1``
  puts half of the sites within about a factor 3 of their natural odds; ``alpha = 0.1``
  makes some sites nearly all-readmitted or all-not. Every site keeps at least
  :data:`MIN_PER_CLASS` patients of each class, so none is single-class.

The defaults (5 sites, 5,000 patients, ``alpha = 5``, ``covariate_shift = 0.5``,
``size_skew = 0.5``) aim at a realistic consortium: site sizes within a factor of about
3 to 5, readmission rates mostly between 5 % and 25 % (3–40 % over seeds 0–5), visibly
different case mix.

The generative model, per patient (``u_j = ρ_j f + √(1-ρ_j²) e_j + site offset``, with
frailty ``f ~ N(site shift, 1)`` and ``e_j ~ N(0, 1)``):

==================  ===========================================  ====
feature             distribution                                 ρ_j
==================  ===========================================  ====
age (years)         64 + 14 u, clipped to 18–100                 0.45
female              1 if u > 0                                   -0.1
bmi (kg/m²)         28 + 5.5 u, clipped to 15–60                 0.1
systolic_bp (mmHg)  132 + 18 u, clipped to 80–220                0.15
hemoglobin (g/dL)   12.8 - 1.7 u, clipped to 6–18                0.45
creatinine (mg/dL)  exp(0.35 u), clipped to 0.3–10               0.4
sodium (mmol/L)     139 - 3.5 u, clipped to 120–155              0.2
albumin (g/dL)      3.8 - 0.5 u, clipped to 1.5–5.5              0.5
prior_admissions    Poisson(exp(-0.6 + 0.7 u)), last 12 months   0.6
length_of_stay      max(1, round(exp(1.35 + 0.55 u))) days       0.5
num_medications     Poisson(exp(log 7 + 0.35 u))                 0.55
charlson_index      Poisson(exp(log 1.8 + 0.6 u)), at most 16    0.7
==================  ===========================================  ====

Outcome (30-day readmission), logistic in the observed features only::

    logit P(y=1 | x) = b0 + 0.015 (age - 64) - 0.1 female + 0.004 (bmi - 27)²
                       + 0.3 min(prior_admissions, 6) + 0.35 log(length_of_stay)
                       + 0.15 charlson_index + 0.03 (num_medications - 7)
                       - 0.12 (hemoglobin - 12.8) + 0.45 log(creatinine)
                       - 0.4 (albumin - 3.8) + 0.08 max(0, 135 - sodium)

with ``b0`` set so that about 15 % of patients are readmitted without any shift; the BMI and
sodium terms are non-linear. The best possible AUC is about 0.75, typical of real
readmission models.

Features are standardised with fixed constants (the reference population's mean and
standard deviation, no shift), so covariate shift stays visible; ``standardize=False``
gives the raw units. Each site holds out a stratified 25 % test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medfed.data.base import DataSpec, FederatedDataset, SiteData, TaskKind
from medfed.data.partition import dirichlet_class_mix, skewed_sizes, train_test_indices
from medfed.errors import DataError

__all__ = [
    "FEATURE_NAMES",
    "MIN_PER_CLASS",
    "MIN_SITE_SIZE",
    "EhrOptions",
    "generate_ehr",
    "readmission_logit",
]

MIN_SITE_SIZE = 20
MIN_PER_CLASS = 2
MAX_PATIENTS = 2_000_000
TEST_FRACTION = 0.25

FEATURE_NAMES: tuple[str, ...] = (
    "age",
    "female",
    "bmi",
    "systolic_bp",
    "hemoglobin",
    "creatinine",
    "sodium",
    "albumin",
    "prior_admissions",
    "length_of_stay",
    "num_medications",
    "charlson_index",
)
_RHO = np.array([0.45, -0.1, 0.1, 0.15, 0.45, 0.4, 0.2, 0.5, 0.6, 0.5, 0.55, 0.7])
_INTERCEPT = -3.12
# Mean and standard deviation of each feature in the reference population (no shift),
# from 2,000,000 draws; rounded: these are fixed preprocessing constants, not estimates.
_REF_MEAN = np.array([64.0, 0.5, 28.0, 132.0, 12.8, 1.06, 139.0, 3.8, 0.70, 4.49, 7.44, 2.15])
_REF_STD = np.array([13.9, 0.5, 5.45, 17.96, 1.70, 0.384, 3.50, 0.50, 1.01, 2.68, 3.83, 2.03])


@dataclass(frozen=True)
class EhrOptions:
    """The generator's knobs (see the module docstring)."""

    num_sites: int = 5
    num_patients: int = 5000
    alpha: float = 5.0
    covariate_shift: float = 0.5
    size_skew: float = 0.5
    standardize: bool = True

    def __post_init__(self) -> None:
        if self.num_sites < 1:
            raise DataError(f"synthetic-ehr needs at least 1 site, not {self.num_sites}")
        low = MIN_SITE_SIZE * self.num_sites
        if not low <= self.num_patients <= MAX_PATIENTS:
            raise DataError(
                f"synthetic-ehr: num_patients must be between {low} ({MIN_SITE_SIZE} per "
                f"site) and {MAX_PATIENTS}, not {self.num_patients}"
            )
        if not self.alpha > 0:
            raise DataError(
                f"synthetic-ehr: alpha must be positive (inf for no label skew), not {self.alpha}"
            )
        for name in ("covariate_shift", "size_skew"):
            value = getattr(self, name)
            if not 0 <= value <= 5:
                raise DataError(f"synthetic-ehr: {name} must be between 0 and 5, not {value}")


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


def _features(
    frailty_mean: npt.NDArray[np.float64],
    offsets: npt.NDArray[np.float64],
    rng: np.random.Generator,
) -> npt.NDArray[np.float64]:
    """Raw features of ``len(frailty_mean)`` patients; row i uses its site's shifts."""
    n = len(frailty_mean)
    f = frailty_mean + rng.standard_normal(n)
    u = _RHO * f[:, None] + np.sqrt(1 - _RHO**2) * rng.standard_normal((n, len(_RHO)))
    u += offsets
    x = np.empty_like(u)
    x[:, 0] = np.clip(64 + 14 * u[:, 0], 18, 100)
    x[:, 1] = u[:, 1] > 0
    x[:, 2] = np.clip(28 + 5.5 * u[:, 2], 15, 60)
    x[:, 3] = np.clip(132 + 18 * u[:, 3], 80, 220)
    x[:, 4] = np.clip(12.8 - 1.7 * u[:, 4], 6, 18)
    x[:, 5] = np.clip(np.exp(0.35 * u[:, 5]), 0.3, 10)
    x[:, 6] = np.clip(139 - 3.5 * u[:, 6], 120, 155)
    x[:, 7] = np.clip(3.8 - 0.5 * u[:, 7], 1.5, 5.5)
    x[:, 8] = rng.poisson(np.exp(-0.6 + 0.7 * u[:, 8]))
    x[:, 9] = np.maximum(1, np.round(np.exp(1.35 + 0.55 * u[:, 9])))
    x[:, 10] = rng.poisson(np.exp(math.log(7) + 0.35 * u[:, 10]))
    x[:, 11] = np.minimum(rng.poisson(np.exp(math.log(1.8) + 0.6 * u[:, 11])), 16)
    return np.asarray(x, dtype=np.float64)


def readmission_logit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The true log-odds of readmission for raw (unstandardised) features."""
    age, female, bmi, _sbp, hb, creat, na, alb, prior, los, meds, cci = x.T
    return np.asarray(
        _INTERCEPT
        + 0.015 * (age - 64)
        - 0.1 * female
        + 0.004 * (bmi - 27) ** 2
        + 0.3 * np.minimum(prior, 6)
        + 0.35 * np.log(los)
        + 0.15 * cci
        + 0.03 * (meds - 7)
        - 0.12 * (hb - 12.8)
        + 0.45 * np.log(creat)
        - 0.4 * (alb - 3.8)
        + 0.08 * np.maximum(0, 135 - na),
        dtype=np.float64,
    )


def _draw_sites(
    sizes: npt.NDArray[np.int64], opts: EhrOptions, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Raw features and labels of every patient: site 0's first, then site 1's, ….

    All sites are drawn together (vectorised): a first batch of candidates per site gives
    its natural readmission rate, from which its label-skewed class counts follow; later
    batches go only to sites still short of a class.
    """
    num_sites = len(sizes)
    severity = opts.covariate_shift * rng.standard_normal(num_sites)
    offsets = opts.covariate_shift * 0.5 * rng.standard_normal((num_sites, len(FEATURE_NAMES)))

    xs, ys, ss = [], [], []
    need: npt.NDArray[np.int64] | None = None  # (num_sites, 2): still needed per class
    batch = sizes + 16  # enough to estimate each site's natural rate
    drawn = np.zeros(num_sites)
    drawn_positive = np.zeros(num_sites)
    while need is None or need.any():
        site = np.repeat(np.arange(num_sites), batch)
        x = _features(severity[site], offsets[site], rng)
        y = (rng.random(len(site)) < _sigmoid(readmission_logit(x))).astype(np.int64)
        drawn += batch
        drawn_positive += np.bincount(site, weights=y, minlength=num_sites)
        rate = (drawn_positive + 0.5) / (drawn + 1.0)  # never exactly 0 or 1
        if need is None:  # first batch: natural rates, then the label-skewed targets
            natural = np.column_stack([1 - rate, rate])
            mix = dirichlet_class_mix(natural, num_sites=num_sites, alpha=opts.alpha, rng=rng)
            n_pos = np.clip(np.round(sizes * mix[:, 1]), MIN_PER_CLASS, sizes - MIN_PER_CLASS)
            need = np.column_stack([sizes - n_pos, n_pos]).astype(np.int64)
        # Keep, per (site, class), the first candidates up to what is still needed.
        key = 2 * site + y
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        start = np.searchsorted(sorted_key, np.arange(2 * num_sites))
        rank = np.empty(len(key), np.int64)
        rank[order] = np.arange(len(key)) - start[sorted_key]
        keep = rank < need.reshape(-1)[key]
        xs.append(x[keep])
        ys.append(y[keep])
        ss.append(site[keep])
        need = need - np.bincount(key[keep], minlength=2 * num_sites).reshape(num_sites, 2)
        short = np.maximum(need[:, 0] / (1 - rate), need[:, 1] / rate)
        batch = np.where(need.any(axis=1), np.ceil(1.5 * short).astype(np.int64) + 16, 0)
    x_all, y_all, s_all = np.concatenate(xs), np.concatenate(ys), np.concatenate(ss)
    order = np.lexsort((rng.random(len(s_all)), s_all))  # by site, shuffled within a site
    return x_all[order], y_all[order]


def generate_ehr(*, seed: int = 0, options: EhrOptions | None = None) -> FederatedDataset:
    """A synthetic EHR consortium, the same for the same ``seed`` and ``options``."""
    opts = options or EhrOptions()
    rng = np.random.default_rng([seed, 0xE4])
    sizes = skewed_sizes(
        opts.num_patients,
        num_sites=opts.num_sites,
        skew=opts.size_skew,
        rng=rng,
        min_size=MIN_SITE_SIZE,
    )
    x, y = _draw_sites(sizes, opts, rng)
    if opts.standardize:
        x = (x - _REF_MEAN) / _REF_STD
    x32 = x.astype(np.float32)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    width = max(2, len(str(opts.num_sites)))
    sites = []
    for k in range(opts.num_sites):
        lo, hi = bounds[k], bounds[k + 1]
        train, test = train_test_indices(
            int(hi - lo), test_fraction=TEST_FRACTION, rng=rng, labels=y[lo:hi]
        )
        sites.append(
            SiteData(
                name=f"hospital-{k + 1:0{width}d}",
                x_train=x32[lo:hi][train],
                y_train=y[lo:hi][train],
                x_test=x32[lo:hi][test],
                y_test=y[lo:hi][test],
                description=f"synthetic hospital {k + 1} of {opts.num_sites}",
            )
        )
    return FederatedDataset(
        name="synthetic-ehr",
        spec=DataSpec(
            kind=TaskKind.BINARY,
            input_shape=(len(FEATURE_NAMES),),
            n_classes=2,
            feature_names=FEATURE_NAMES,
        ),
        sites=tuple(sites),
        description=(
            f"synthetic EHR records ({opts.num_patients} patients, {len(FEATURE_NAMES)} "
            f"features, y = 1 readmitted within 30 days) in {opts.num_sites} hospitals"
        ),
        source="generated by medfed.data.synthetic_ehr (no real patient)",
        notes={
            "seed": str(seed),
            "alpha": str(opts.alpha),
            "covariate_shift": str(opts.covariate_shift),
            "size_skew": str(opts.size_skew),
            "standardized": str(opts.standardize),
        },
    )
