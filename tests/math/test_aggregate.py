from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from medfed.math.aggregate import (
    WeightedMean,
    coordinate_median,
    is_finite,
    trimmed_mean,
    weighted_mean,
)
from medfed.records import Params

finite32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)


def _updates(draw, n: int, shape: tuple[int, ...]) -> list[Params]:
    return [Params({"w": draw(hnp.arrays(np.float32, shape, elements=finite32))}) for _ in range(n)]


@st.composite
def weighted_updates(draw):
    n = draw(st.integers(1, 8))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=5))
    ups = _updates(draw, n, shape)
    weights = draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n))
    return list(zip(ups, weights, strict=True))


@settings(max_examples=60, deadline=None)
@given(weighted_updates(), st.randoms())
def test_weighted_mean_is_permutation_invariant(items, rnd) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    a = weighted_mean(items)
    b = weighted_mean(shuffled)
    assert a is not None and b is not None
    scale = max(1.0, float(np.max(np.abs([p["w"] for p, _ in items]))))
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-5, atol=1e-5 * scale)


@settings(max_examples=60, deadline=None)
@given(weighted_updates())
def test_mean_of_identical_updates_is_that_update(items) -> None:
    same = items[0][0]
    result = weighted_mean([(same, w) for _, w in items])
    assert result is not None
    np.testing.assert_allclose(result["w"], same["w"], rtol=1e-5, atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(weighted_updates())
def test_matches_numpy_average(items) -> None:
    result = weighted_mean(items)
    stack = np.stack([p["w"].astype(np.float64) for p, _ in items])
    expected = np.average(stack, axis=0, weights=[w for _, w in items])
    assert result is not None
    np.testing.assert_allclose(result["w"], expected, rtol=1e-4, atol=1e-2)


def test_zero_total_weight_gives_none_not_nan() -> None:
    m = WeightedMean(Params({"w": np.ones(3, np.float32)}))
    m.add(Params({"w": np.ones(3, np.float32)}), weight=0)
    assert m.result() is None and m.count == 1
    assert weighted_mean([]) is None


def test_chunked_path_for_large_tensors() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(200_003).astype(np.float32)
    b = rng.standard_normal(200_003).astype(np.float32)
    result = weighted_mean([(Params({"w": a}), 1.0), (Params({"w": b}), 3.0)])
    assert result is not None
    np.testing.assert_allclose(result["w"], (a + 3 * b) / 4, rtol=1e-5, atol=1e-6)


def test_integer_tensors_are_averaged_and_rounded() -> None:
    p = lambda v: Params({"n": np.array(v, np.int64)})  # noqa: E731
    result = weighted_mean([(p(2), 1), (p(5), 1)])
    assert result is not None and result["n"].dtype == np.int64 and int(result["n"]) == 4


def test_layout_and_weight_are_checked() -> None:
    m = WeightedMean(Params({"w": np.ones(3, np.float32)}))
    with pytest.raises(ValueError, match="layout"):
        m.add(Params({"w": np.ones(4, np.float32)}), weight=1)
    with pytest.raises(ValueError, match="weight"):
        m.add(Params({"w": np.ones(3, np.float32)}), weight=-1)
    with pytest.raises(ValueError, match="weight"):
        m.add(Params({"w": np.ones(3, np.float32)}), weight=float("nan"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_is_finite_finds_one_bad_value(bad: float) -> None:
    for size in (5, 100_000):
        x = np.zeros(size, np.float32)
        assert is_finite(Params({"w": x}))
        x[size // 2] = bad
        assert not is_finite(Params({"w": x}))


def test_is_finite_with_overflowing_sum_but_finite_values() -> None:
    x = np.full(100_000, 3e38, np.float32)
    assert is_finite(Params({"w": x}))


def test_median_and_trimmed_mean_resist_an_outlier() -> None:
    ups = [Params({"w": np.array([1.0, 2.0], np.float32)}) for _ in range(4)]
    ups.append(Params({"w": np.array([1e9, -1e9], np.float32)}))
    np.testing.assert_allclose(coordinate_median(ups)["w"], [1.0, 2.0])
    np.testing.assert_allclose(trimmed_mean(ups, trim_fraction=0.2)["w"], [1.0, 2.0])
    with pytest.raises(ValueError):
        trimmed_mean(ups, trim_fraction=0.5)
