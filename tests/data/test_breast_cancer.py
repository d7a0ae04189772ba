"""The Wisconsin breast cancer hospitals: real data, fixed split, real heterogeneity."""

from __future__ import annotations

import numpy as np
import pytest

from medfed.data import TaskKind, load_dataset
from medfed.data.breast_cancer import FEATURE_NAMES, load_breast_cancer
from medfed.errors import DataError

# (site, train, malignant in train, test, malignant in test) for the default 4 sites.
PINNED_4 = [
    ("academic-centre", 213, 88, 71, 30),
    ("community-north", 86, 17, 28, 6),
    ("oncology-clinic", 71, 46, 24, 16),
    ("screening-clinic", 57, 7, 19, 2),
]


def _all(site) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    return np.concatenate([site.x_train, site.x_test]), np.concatenate([site.y_train, site.y_test])


def test_shapes_dtypes_and_labels() -> None:
    ds = load_breast_cancer()
    assert ds.spec.kind is TaskKind.BINARY
    assert ds.spec.input_shape == (30,)
    assert ds.spec.feature_names == FEATURE_NAMES
    assert len(ds.sites) == 4
    for site in ds.sites:
        for x, y in ((site.x_train, site.y_train), (site.x_test, site.y_test)):
            assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 30
            assert y.dtype == np.int64 and set(np.unique(y)) <= {0, 1}
            assert np.isfinite(x).all()
    pooled = ds.pooled()
    assert pooled.num_train + pooled.num_test == 569
    assert int(pooled.y_train.sum() + pooled.y_test.sum()) == 212, "212 malignant, y = 1"


def test_the_split_is_pinned() -> None:
    ds = load_breast_cancer()
    got = [
        (s.name, s.num_train, int(s.y_train.sum()), s.num_test, int(s.y_test.sum()))
        for s in ds.sites
    ]
    assert got == PINNED_4


def test_every_patient_is_in_exactly_one_site_and_matches_scikit_learn() -> None:
    from sklearn.datasets import load_breast_cancer as sk_load

    bunch = sk_load()
    raw = np.asarray(bunch.data)
    expected = ((raw - raw.mean(axis=0)) / raw.std(axis=0)).astype(np.float32)
    ds = load_breast_cancer(num_sites=8)
    x = np.concatenate([_all(s)[0] for s in ds.sites])
    y = np.concatenate([_all(s)[1] for s in ds.sites])
    order_got = np.lexsort(x.T[::-1])
    order_expected = np.lexsort(expected.T[::-1])
    assert np.array_equal(x[order_got], expected[order_expected])
    assert np.array_equal(y[order_got], (bunch.target == 0)[order_expected].astype(np.int64))
    assert list(bunch.feature_names) == list(FEATURE_NAMES)


def test_features_are_standardised_over_the_whole_data_set() -> None:
    x = np.concatenate([_all(s)[0] for s in load_breast_cancer().sites])
    assert np.allclose(x.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(x.std(axis=0), 1, atol=1e-4)


@pytest.mark.parametrize("num_sites", range(2, 9))
def test_the_split_does_not_depend_on_the_run_seed(num_sites: int) -> None:
    a = load_dataset("breast-cancer", num_sites=num_sites, seed=0)
    b = load_dataset("breast-cancer", num_sites=num_sites, seed=12345)
    assert a.site_names == b.site_names
    for sa, sb in zip(a.sites, b.sites, strict=True):
        assert np.array_equal(sa.x_train, sb.x_train) and np.array_equal(sa.y_test, sb.y_test)
    for site in a.sites:  # every site and both of its parts hold both classes
        assert set(site.y_train.tolist()) == {0, 1} and set(site.y_test.tolist()) == {0, 1}
        assert 0.2 <= site.num_test / (site.num_train + site.num_test) <= 0.3


def test_sites_differ_in_size_prevalence_and_tumour_size() -> None:
    ds = load_breast_cancer()
    sizes = {s.name: s.num_train + s.num_test for s in ds.sites}
    prevalence = {s.name: float(_all(s)[1].mean()) for s in ds.sites}
    radius = {
        s.name: float(_all(s)[0][:, FEATURE_NAMES.index("mean radius")].mean()) for s in ds.sites
    }
    assert sizes["academic-centre"] > 2.5 * sizes["screening-clinic"]
    assert max(prevalence.values()) - min(prevalence.values()) > 0.45
    assert prevalence["screening-clinic"] < 0.15 < 0.6 < prevalence["oncology-clinic"]
    # Referral pattern: the oncology clinic's tumours are over 1 sd larger than screening's,
    # also within the benign class alone (covariate shift, not only prevalence).
    assert radius["oncology-clinic"] - radius["screening-clinic"] > 1.0
    benign_radius = {s.name: float(_all(s)[0][_all(s)[1] == 0, 0].mean()) for s in ds.sites}
    assert benign_radius["oncology-clinic"] - benign_radius["screening-clinic"] > 0.3


@pytest.mark.parametrize("num_sites", [1, 9, 100])
def test_impossible_site_counts_are_refused(num_sites: int) -> None:
    with pytest.raises(DataError, match="2 to 8"):
        load_dataset("breast-cancer", num_sites=num_sites)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _sgd(
    w: np.ndarray, x: np.ndarray, y: np.ndarray, epochs: int, rng: np.random.Generator
) -> np.ndarray:
    """Mini-batch SGD on logistic regression (batch 32, learning rate 0.05)."""
    xb = np.hstack([x, np.ones((len(x), 1), np.float32)]).astype(np.float64)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), 32):
            b = order[i : i + 32]
            w = w - 0.05 * xb[b].T @ (_sigmoid(xb[b] @ w) - y[b]) / len(b)
    return w


def _log_loss(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(_sigmoid(np.hstack([x, np.ones((len(x), 1))]) @ w), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_federated_training_beats_local_only_training_on_the_sites_own_tests() -> None:
    """Why the split exists: small skewed sites gain from each other (5 seeds, 30 rounds)."""
    ds = load_breast_cancer()
    local_loss, fed_loss, local_acc, fed_acc = [], [], [], []
    weights = np.array([s.num_train for s in ds.sites], dtype=np.float64)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        local = [_sgd(np.zeros(31), s.x_train, s.y_train, 30, rng) for s in ds.sites]
        w = np.zeros(31)
        for _ in range(30):
            updates = [_sgd(w, s.x_train, s.y_train, 1, rng) for s in ds.sites]
            w = np.average(updates, axis=0, weights=weights)
        for wl, s in zip(local, ds.sites, strict=True):
            local_loss.append(_log_loss(wl, s.x_test, s.y_test))
            fed_loss.append(_log_loss(w, s.x_test, s.y_test))
            xt = np.hstack([s.x_test, np.ones((s.num_test, 1))])
            local_acc.append(float(((xt @ wl > 0) == s.y_test).mean()))
            fed_acc.append(float(((xt @ w > 0) == s.y_test).mean()))
    assert np.mean(fed_loss) < 0.9 * np.mean(local_loss)
    assert np.mean(fed_acc) > np.mean(local_acc)
