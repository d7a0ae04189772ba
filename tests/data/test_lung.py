"""NCCTG lung cancer: natural institutions, survival labels, imputation without leakage."""

from __future__ import annotations

import numpy as np
import pytest

from medfed.data import TaskKind, load_dataset
from medfed.data.lung import (
    FEATURE_NAMES,
    NATURAL_SITES,
    _events,
    _impute,
    load_lung,
    natural_site_count,
)
from medfed.errors import DataError

SITE_SIZES = {
    "inst-1": 36,
    "inst-3": 19,
    "inst-11": 18,
    "inst-12": 23,
    "inst-13": 20,
    "inst-16": 16,
    "inst-22": 17,
    "other-institutions": 79,
}


def test_shapes_dtypes_and_survival_labels() -> None:
    ds = load_lung()
    assert ds.spec.kind is TaskKind.SURVIVAL
    assert ds.spec.input_shape == (7,)
    assert ds.spec.feature_names == FEATURE_NAMES
    for site in ds.sites:
        for x, y in ((site.x_train, site.y_train), (site.x_test, site.y_test)):
            assert x.dtype == np.float32 and x.shape[1] == 7
            assert np.isfinite(x).all(), "missing values are imputed"
            assert y.dtype == np.float64 and y.shape == (len(x), 2)
            assert (y[:, 0] > 0).all(), "column 0 is the time in days"
            assert set(np.unique(y[:, 1])) <= {0.0, 1.0}, "column 1 is the event"
    pooled = ds.pooled()
    events = np.concatenate([pooled.y_train[:, 1], pooled.y_test[:, 1]])
    assert len(events) == 228
    assert int(events.sum()) == 165, "165 deaths, as in R's survival::lung (status 2)"


def test_sites_are_the_institutions_with_small_ones_merged() -> None:
    ds = load_lung()
    assert {s.name: s.num_train + s.num_test for s in ds.sites} == SITE_SIZES
    assert len(ds.sites) == NATURAL_SITES == natural_site_count()
    for site in ds.sites:
        assert site.num_test >= 4 and site.y_test[:, 1].sum() >= 2, "test sets hold deaths"


def test_the_split_is_fixed_whatever_the_run_seed() -> None:
    a, b = load_dataset("lung", seed=0), load_dataset("lung", seed=99)
    for sa, sb in zip(a.sites, b.sites, strict=True):
        assert np.array_equal(sa.x_train, sb.x_train) and np.array_equal(sa.y_test, sb.y_test)


def test_event_coding_is_recognised_or_refused() -> None:
    assert _events(np.array([1.0, 2.0, 2.0])).tolist() == [0.0, 1.0, 1.0]  # R
    assert _events(np.array([0.0, 1.0, 1.0])).tolist() == [0.0, 1.0, 1.0]  # lifelines
    with pytest.raises(DataError, match="status"):
        _events(np.array([0.0, 1.0, 2.0]))


def test_imputation_uses_the_training_part_only() -> None:
    x_train = np.array([[1.0, np.nan], [3.0, 10.0], [np.nan, 20.0], [5.0, 30.0]])
    x_test = np.array([[np.nan, np.nan], [1000.0, -1000.0]])
    filled_train, filled_test = _impute(x_train, x_test)
    assert filled_train.tolist() == [[1.0, 20.0], [3.0, 10.0], [3.0, 20.0], [5.0, 30.0]]
    assert filled_test.tolist() == [[3.0, 20.0], [1000.0, -1000.0]]
    # A column no training patient has falls back to the data set's mean (0).
    _, only_missing = _impute(np.array([[np.nan]]), np.array([[np.nan]]))
    assert only_missing.tolist() == [[0.0]]


def test_features_are_standardised_with_dataset_level_constants() -> None:
    x = np.concatenate([np.concatenate([s.x_train, s.x_test]) for s in load_lung().sites])
    complete = [FEATURE_NAMES.index("age"), FEATURE_NAMES.index("female")]  # never missing
    assert np.allclose(x[:, complete].mean(axis=0), 0, atol=1e-5)
    assert np.allclose(x[:, complete].std(axis=0), 1, atol=1e-4)


def test_the_threshold_option_changes_the_sites() -> None:
    ds = load_dataset("lung", options={"min_patients": 20})
    assert ds.site_names == ["inst-1", "inst-12", "inst-13", "other-institutions"]
    assert load_dataset("lung", num_sites=4, options={"min_patients": "20"}).site_names == (
        ds.site_names
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_sites": 3}, "lung has 8 sites"),
        ({"options": {"min_patients": 2}}, "min_patients must be between"),
        ({"options": {"min_patients": 1.5}}, "whole number"),
        ({"options": {"threshold": 10}}, "min_patients"),
    ],
)
def test_bad_requests_are_refused(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(DataError, match=match):
        load_dataset("lung", **kwargs)
