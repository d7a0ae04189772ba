"""Properties of the partition helpers: disjoint, complete, non-empty, deterministic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from medfed.data.partition import (
    dirichlet_class_mix,
    dirichlet_label_split,
    skewed_sizes,
    train_test_indices,
)

seeds = st.integers(min_value=0, max_value=2**32 - 1)
alphas = st.one_of(st.floats(min_value=0.01, max_value=1000.0), st.just(math.inf))


def _assert_partition(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert joined.dtype == np.int64
    assert len(joined) == n, "parts must cover every index exactly once"
    assert np.array_equal(np.sort(joined), np.arange(n))


@settings(max_examples=150, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=300),
    num_sites=st.integers(1, 12),
    alpha=alphas,
    min_size=st.integers(0, 5),
    seed=seeds,
)
def test_dirichlet_split_is_a_partition_with_minimum_sizes(
    labels: list[int], num_sites: int, alpha: float, min_size: int, seed: int
) -> None:
    y = np.array(labels)
    if len(y) < num_sites * min_size:
        with pytest.raises(ValueError, match="cannot give"):
            dirichlet_label_split(
                y,
                num_sites=num_sites,
                alpha=alpha,
                rng=np.random.default_rng(seed),
                min_size=min_size,
            )
        return
    parts = dirichlet_label_split(
        y, num_sites=num_sites, alpha=alpha, rng=np.random.default_rng(seed), min_size=min_size
    )
    assert len(parts) == num_sites
    _assert_partition(parts, len(y))
    assert all(len(p) >= min_size for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts), "indices are returned sorted"


@settings(max_examples=50, deadline=None)
@given(seed=seeds, alpha=alphas)
def test_dirichlet_split_is_deterministic(seed: int, alpha: float) -> None:
    y = np.random.default_rng(0).integers(0, 3, 200)
    a = dirichlet_label_split(y, num_sites=5, alpha=alpha, rng=np.random.default_rng(seed))
    b = dirichlet_label_split(y, num_sites=5, alpha=alpha, rng=np.random.default_rng(seed))
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


def _label_skew(parts: list[np.ndarray], y: np.ndarray) -> float:
    """Mean total-variation distance between each site's class mix and the overall mix."""
    overall = np.bincount(y, minlength=2) / len(y)
    distances = [
        0.5 * np.abs(np.bincount(y[p], minlength=2) / len(p) - overall).sum() for p in parts
    ]
    return float(np.mean(distances))


def test_small_alpha_skews_labels_and_infinite_alpha_does_not() -> None:
    y = np.random.default_rng(1).integers(0, 2, 4000)
    skew = {
        alpha: np.mean(
            [
                _label_skew(
                    dirichlet_label_split(
                        y, num_sites=8, alpha=alpha, rng=np.random.default_rng(s), min_size=10
                    ),
                    y,
                )
                for s in range(5)
            ]
        )
        for alpha in (0.1, 1.0, 100.0, math.inf)
    }
    assert skew[0.1] > skew[1.0] > skew[100.0]
    assert skew[0.1] > 0.3
    assert skew[math.inf] < 0.01


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    total=st.integers(0, 5000),
    num_sites=st.integers(1, 50),
    skew=st.floats(0.0, 3.0),
    min_size=st.integers(0, 20),
    seed=seeds,
)
def test_skewed_sizes_sum_to_total_and_respect_the_minimum(
    total: int, num_sites: int, skew: float, min_size: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    if total < num_sites * min_size:
        with pytest.raises(ValueError):
            skewed_sizes(total, num_sites=num_sites, skew=skew, rng=rng, min_size=min_size)
        return
    sizes = skewed_sizes(total, num_sites=num_sites, skew=skew, rng=rng, min_size=min_size)
    assert sizes.shape == (num_sites,)
    assert sizes.dtype == np.int64
    assert int(sizes.sum()) == total
    assert sizes.min() >= min_size


def test_zero_skew_gives_equal_sizes_and_large_skew_unequal_ones() -> None:
    rng = np.random.default_rng(3)
    equal = skewed_sizes(1003, num_sites=10, skew=0.0, rng=rng)
    assert equal.max() - equal.min() <= 1
    ratios = [
        (s.max() / s.min())
        for s in (skewed_sizes(10_000, num_sites=10, skew=1.5, rng=rng) for _ in range(20))
    ]
    assert np.median(ratios) > 10


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 400),
    test_fraction=st.floats(0.01, 0.99),
    n_classes=st.integers(1, 4),
    stratify=st.booleans(),
    seed=seeds,
)
def test_train_test_split_is_a_partition_with_both_parts_non_empty(
    n: int, test_fraction: float, n_classes: int, stratify: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n) if stratify else None
    train, test = train_test_indices(n, test_fraction=test_fraction, rng=rng, labels=labels)
    _assert_partition([train, test], n)
    assert len(train) >= 1 and len(test) >= 1
    assert len(test) == min(max(round(n * test_fraction), 1), n - 1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=st.lists(st.integers(1, 60), min_size=1, max_size=5), seed=seeds)
def test_stratified_split_keeps_class_shares(counts: list[int], seed: int) -> None:
    y = np.repeat(np.arange(len(counts)), counts)
    n = len(y)
    if n < 2:
        return
    _, test = train_test_indices(n, test_fraction=0.25, rng=np.random.default_rng(seed), labels=y)
    per_class = np.bincount(y[test], minlength=len(counts))
    ideal = len(test) * np.array(counts) / n
    # Proportional up to rounding; lifting rare classes to 1 (or keeping one of them for
    # training) moves at most one record per class.
    assert np.all(np.abs(per_class - ideal) <= len(counts))
    if len(counts) == 1 or min(counts) * 0.25 >= 1:
        assert np.all(np.abs(per_class - ideal) < 1 + 1e-9)
    low = np.array(counts) >= 2
    if low.sum() <= len(test) <= n - low.sum():
        assert np.all(per_class[low] >= 1), "a class of 2+ appears in the test part"
        assert np.all(per_class[low] < np.array(counts)[low]), "… and in the training part"


def test_split_of_eight_in_a_class_gives_exactly_two() -> None:
    y = np.array([0] * 8 + [1] * 8)
    _, test = train_test_indices(16, test_fraction=0.25, rng=np.random.default_rng(0), labels=y)
    assert np.bincount(y[test]).tolist() == [2, 2]


def test_train_test_split_is_pinned_for_a_seed() -> None:
    """Only uniform draws are used: a changed stream would silently move real patients."""
    _, test = train_test_indices(20, test_fraction=0.25, rng=np.random.default_rng(42))
    again = train_test_indices(20, test_fraction=0.25, rng=np.random.default_rng(42))[1]
    assert np.array_equal(test, again)
    order = np.argsort(np.random.default_rng(42).random(20), kind="stable")
    assert np.array_equal(test, np.sort(order[:5]))


@settings(max_examples=100, deadline=None)
@given(
    prior=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=5),
    num_sites=st.integers(1, 20),
    alpha=alphas,
    seed=seeds,
)
def test_class_mix_rows_are_distributions(
    prior: list[float], num_sites: int, alpha: float, seed: int
) -> None:
    q = dirichlet_class_mix(
        prior, num_sites=num_sites, alpha=alpha, rng=np.random.default_rng(seed)
    )
    assert q.shape == (num_sites, len(prior))
    assert np.all(q >= 0)
    assert np.allclose(q.sum(axis=1), 1.0)
    if math.isinf(alpha):
        assert np.allclose(q, np.array(prior) / sum(prior))


def test_class_mix_spread_shrinks_as_alpha_grows() -> None:
    spread = {
        alpha: dirichlet_class_mix(
            [0.85, 0.15], num_sites=2000, alpha=alpha, rng=np.random.default_rng(0)
        )[:, 1]
        for alpha in (0.1, 1.0, 5.0, 100.0)
    }
    q1 = np.percentile(spread[1.0], [25, 75])
    assert 0.04 < q1[0] < 0.08 and 0.30 < q1[1] < 0.40, "documented quartiles at alpha = 1"
    q5 = np.percentile(spread[5.0], [25, 75])
    assert 0.08 < q5[0] < 0.12 and 0.18 < q5[1] < 0.24, "documented quartiles at alpha = 5"
    stds = [spread[a].std() for a in (0.1, 1.0, 5.0, 100.0)]
    assert stds == sorted(stds, reverse=True)


def test_class_mix_accepts_one_prior_per_site() -> None:
    priors = np.array([[0.9, 0.1], [0.5, 0.5]])
    q = dirichlet_class_mix(priors, num_sites=2, alpha=math.inf, rng=np.random.default_rng(0))
    assert np.allclose(q, priors)
    with pytest.raises(ValueError, match="shape"):
        dirichlet_class_mix(priors, num_sites=3, alpha=1.0, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda r: dirichlet_label_split([0, 1], num_sites=2, alpha=0.0, rng=r), "alpha"),
        (lambda r: dirichlet_label_split([0, 1], num_sites=0, alpha=1.0, rng=r), "num_sites"),
        (lambda r: dirichlet_label_split([[0, 1]], num_sites=1, alpha=1.0, rng=r), "one-dim"),
        (lambda r: skewed_sizes(10, num_sites=2, skew=-1.0, rng=r), "skew"),
        (lambda r: train_test_indices(1, test_fraction=0.5, rng=r), "at least 2"),
        (lambda r: train_test_indices(5, test_fraction=1.0, rng=r), "test_fraction"),
        (lambda r: train_test_indices(5, test_fraction=0.2, rng=r, labels=[0, 1]), "shape"),
        (lambda r: dirichlet_class_mix([1.0], num_sites=2, alpha=1.0, rng=r), "shape"),
        (lambda r: dirichlet_class_mix([0.0, 1.0], num_sites=2, alpha=1.0, rng=r), "positive"),
    ],
)
def test_bad_arguments_raise_value_error(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        call(np.random.default_rng(0))
