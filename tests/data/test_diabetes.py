"""The diabetes regression data set: the real 442 patients, split into hospitals that differ."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes as sk_load

from medfed.data import TaskKind, load_dataset
from medfed.data.diabetes import FEATURE_NAMES, load_diabetes
from medfed.errors import DataError


def _all(site):  # type: ignore[no-untyped-def]
    return np.concatenate([site.x_train, site.x_test]), np.concatenate([site.y_train, site.y_test])


def test_every_patient_is_in_exactly_one_hospital_with_scikit_learns_values() -> None:
    reference = sk_load(scaled=False)
    z = (reference.data - reference.data.mean(0)) / reference.data.std(0)
    for n in (2, 4, 6):
        ds = load_diabetes(num_sites=n)
        assert len(ds.sites) == n
        xs, ys = zip(*(_all(s) for s in ds.sites), strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys)
        assert len(x) == 442
        # the same multiset of (features, target) rows as scikit-learn's
        ours = np.c_[x, y].astype(np.float64)
        theirs = np.c_[z, reference.target].astype(np.float32).astype(np.float64)
        order = np.lexsort(ours.T[::-1])
        ref_order = np.lexsort(theirs.T[::-1])
        np.testing.assert_allclose(ours[order], theirs[ref_order], atol=1e-5)


def test_the_spec_is_regression_in_the_targets_unit() -> None:
    ds = load_dataset("diabetes")
    spec = ds.spec
    assert spec.kind is TaskKind.REGRESSION and spec.input_shape == (10,)
    assert spec.feature_names == FEATURE_NAMES and spec.n_outputs == 1
    assert spec.target_center == pytest.approx(152.13, abs=0.01)
    assert spec.target_scale == pytest.approx(77.0, abs=0.1)
    for site in ds.sites:
        assert site.y_train.dtype == np.float32 and site.x_train.dtype == np.float32
        assert site.y_train.min() >= 25 and site.y_train.max() <= 346


def test_the_split_is_fixed_and_independent_of_the_run_seed() -> None:
    a = load_dataset("diabetes", seed=0)
    b = load_dataset("diabetes", seed=9)
    for s, t in zip(a.sites, b.sites, strict=True):
        assert np.array_equal(s.x_train, t.x_train) and np.array_equal(s.y_test, t.y_test)


def test_hospitals_differ_the_way_their_descriptions_say() -> None:
    sites = {s.name: _all(s) for s in load_diabetes(num_sites=6).sites}
    age, sex, bmi = (FEATURE_NAMES.index(n) for n in ("age", "sex", "bmi"))
    centre_x, centre_y = sites["academic-centre"]
    assert sites["obesity-clinic"][0][:, bmi].mean() > centre_x[:, bmi].mean() + 0.8
    assert sites["obesity-clinic"][1].mean() > centre_y.mean() + 30  # heavier: faster progression
    assert sites["geriatric-hospital"][0][:, age].mean() > centre_x[:, age].mean() + 0.6
    assert sites["young-adult-clinic"][0][:, age].mean() < centre_x[:, age].mean() - 0.8
    assert sites["womens-clinic"][0][:, sex].mean() > centre_x[:, sex].mean() + 0.8
    sizes = [len(y) for _, y in sites.values()]
    assert sizes[0] == max(sizes) and min(sizes) >= 30


def test_each_test_set_spans_the_targets_range() -> None:
    quartiles = np.quantile(sk_load().target, [0.25, 0.5, 0.75])
    for site in load_diabetes(num_sites=4).sites:
        bins = np.searchsorted(quartiles, site.y_test, side="right")
        assert set(bins.tolist()) == {0, 1, 2, 3}, site.name
        assert site.num_test == round((site.num_train + site.num_test) * 0.25)


@pytest.mark.parametrize("sites", [1, 7])
def test_an_impossible_site_count_says_what_is_possible(sites: int) -> None:
    with pytest.raises(DataError, match="2 to 6 hospitals"):
        load_dataset("diabetes", num_sites=sites)
