"""The synthetic EHR consortium: conventions, determinism, and each knob doing its job."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfed.data import TaskKind, load_dataset
from medfed.data.synthetic_ehr import FEATURE_NAMES, MIN_PER_CLASS, MIN_SITE_SIZE
from medfed.errors import DataError


def _ehr(seed: int = 0, num_sites: int | None = None, **options: object):  # type: ignore[no-untyped-def]
    return load_dataset("synthetic-ehr", num_sites=num_sites, seed=seed, options=options)  # type: ignore[arg-type]


def _all(site):  # type: ignore[no-untyped-def]
    return np.concatenate([site.x_train, site.x_test]), np.concatenate([site.y_train, site.y_test])


def test_shapes_dtypes_and_labels() -> None:
    ds = _ehr()
    assert ds.spec.kind is TaskKind.BINARY
    assert ds.spec.input_shape == (12,) and ds.spec.feature_names == FEATURE_NAMES
    assert len(ds.sites) == 5
    total = 0
    for site in ds.sites:
        x, y = _all(site)
        assert x.dtype == np.float32 and np.isfinite(x).all()
        assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
        assert len(y) >= MIN_SITE_SIZE and min(np.bincount(y)) >= MIN_PER_CLASS
        assert set(site.y_test.tolist()) == {0, 1}
        total += len(y)
    assert total == 5000


def test_same_seed_same_data_and_other_seed_other_data() -> None:
    a, b, c = _ehr(seed=3), _ehr(seed=3), _ehr(seed=4)
    for sa, sb in zip(a.sites, b.sites, strict=True):
        assert np.array_equal(sa.x_train, sb.x_train) and np.array_equal(sa.y_test, sb.y_test)
    assert not np.array_equal(a.sites[0].x_train[:10], c.sites[0].x_train[:10])


def test_reference_population_matches_the_documented_model() -> None:
    ds = _ehr(num_sites=2, num_patients=40_000, alpha=math.inf, covariate_shift=0.0)
    x, y = _all(ds.pooled())
    assert np.allclose(x.mean(axis=0), 0, atol=0.04), "standardised with the right constants"
    assert np.allclose(x.std(axis=0), 1, atol=0.04)
    assert 0.13 < y.mean() < 0.17, "about 15 % readmitted without any shift"


def test_raw_units_are_plausible() -> None:
    x, _ = _all(_ehr(standardize=False).pooled())
    col = {name: x[:, i] for i, name in enumerate(FEATURE_NAMES)}
    assert col["age"].min() >= 18 and col["age"].max() <= 100
    assert set(np.unique(col["female"])) == {0.0, 1.0}
    assert col["bmi"].min() >= 15 and col["bmi"].max() <= 60
    assert col["sodium"].min() >= 120 and col["sodium"].max() <= 155
    for count in ("prior_admissions", "length_of_stay", "num_medications", "charlson_index"):
        assert np.array_equal(col[count], np.round(col[count])) and col[count].min() >= 0
    assert col["length_of_stay"].min() >= 1


def test_the_outcome_is_learnable_but_not_trivial() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    pooled = _ehr(num_patients=20_000, alpha=math.inf, covariate_shift=0.0).pooled()
    model = LogisticRegression(max_iter=1000).fit(pooled.x_train, pooled.y_train)
    auc = roc_auc_score(pooled.y_test, model.predict_proba(pooled.x_test)[:, 1])
    assert 0.68 < auc < 0.80, "documented: best possible AUC about 0.75"


def _prevalence_spread(alpha: float, seed: int) -> float:
    ds = _ehr(seed=seed, num_sites=20, num_patients=20_000, alpha=alpha, covariate_shift=0.0)
    return float(np.std([_all(s)[1].mean() for s in ds.sites]))


def test_small_alpha_gives_strong_label_skew_and_large_alpha_almost_none() -> None:
    spread = {a: np.mean([_prevalence_spread(a, s) for s in range(3)]) for a in (0.1, 1.0, 100.0)}
    assert spread[0.1] > 0.25
    assert spread[0.1] > spread[1.0] > spread[100.0]
    assert spread[100.0] < 0.04
    assert _prevalence_spread(math.inf, 0) < 0.03, "α = inf: only sampling noise"


def test_covariate_shift_moves_feature_means_between_sites() -> None:
    def between_site_spread(shift: float) -> float:
        ds = _ehr(
            num_sites=10,
            num_patients=20_000,
            size_skew=0.0,
            alpha=math.inf,
            covariate_shift=shift,
        )
        means = np.array([_all(s)[0].mean(axis=0) for s in ds.sites])
        return float(means.std(axis=0).mean())

    none, strong = between_site_spread(0.0), between_site_spread(1.0)
    assert none < 0.06, "without shift, site means differ by sampling noise only"
    assert strong > 0.3 and strong > 5 * none


def test_size_skew_controls_site_sizes() -> None:
    equal = [s.num_train + s.num_test for s in _ehr(num_sites=8, size_skew=0.0).sites]
    assert max(equal) - min(equal) <= 1
    skewed = [s.num_train + s.num_test for s in _ehr(num_sites=8, size_skew=1.5).sites]
    assert max(skewed) > 4 * min(skewed) and min(skewed) >= MIN_SITE_SIZE


@pytest.mark.parametrize("num_sites", [1, 2, 37, 300])
def test_any_number_of_sites(num_sites: int) -> None:
    ds = _ehr(num_sites=num_sites)
    assert len(ds.sites) == num_sites
    assert len(set(ds.site_names)) == num_sites


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"alpha": 0}, "alpha must be positive"),
        ({"alpha": -1.0}, "alpha must be positive"),
        ({"alpha": "nan"}, "must be a number"),
        ({"covariate_shift": -0.1}, "covariate_shift must be between"),
        ({"size_skew": 9}, "size_skew must be between"),
        ({"num_patients": 50}, "num_patients must be between"),
        ({"num_patients": 2.5}, "whole number"),
        ({"standardize": "maybe"}, "true or false"),
        ({"sites": 3}, "no option 'sites'"),
    ],
)
def test_bad_options_are_refused(options: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(DataError, match=match):
        _ehr(**options)


def test_options_given_as_strings_are_parsed() -> None:
    a = _ehr(alpha="inf", standardize="false", num_patients="400")
    b = _ehr(alpha=math.inf, standardize=False, num_patients=400)
    assert np.array_equal(a.sites[0].x_train, b.sites[0].x_train)
