from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from medfed.math.metrics import accuracy, auroc, concordance_index


def test_auroc_matches_scikit_learn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 2)  # rounding makes ties
    assert auroc(labels=y, scores=s) == pytest.approx(roc_auc_score(y, s))


def test_multiclass_auroc_is_macro_one_vs_rest() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    s = rng.random((200, 3))
    s[np.arange(200), y] += 0.4
    s /= s.sum(axis=1, keepdims=True)
    expected = roc_auc_score(y, s, multi_class="ovr", average="macro")
    assert auroc(labels=y, scores=s) == pytest.approx(expected)


def test_auroc_undefined_with_one_class() -> None:
    assert auroc(labels=[1, 1, 1], scores=[0.1, 0.2, 0.3]) is None


def test_accuracy() -> None:
    assert accuracy(labels=[0, 1, 1, 0], predicted=[0, 1, 0, 0]) == 0.75
    assert accuracy(labels=[], predicted=[]) is None
    with pytest.raises(ValueError):
        accuracy(labels=[0], predicted=[0, 1])


@settings(max_examples=40, deadline=None)
@given(st.integers(5, 60), st.integers(0, 10_000))
def test_c_index_matches_lifelines(n: int, seed: int) -> None:
    from lifelines.utils import concordance_index as lifelines_ci

    rng = np.random.default_rng(seed)
    t = rng.integers(1, 20, n).astype(float)  # integer times give ties
    e = rng.integers(0, 2, n)
    e[0] = 1
    risk = np.round(rng.standard_normal(n), 1)
    ours = concordance_index(times=t, events=e, risk=risk)
    try:
        theirs = lifelines_ci(t, -risk, e)
    except ZeroDivisionError:
        assert ours is None
        return
    assert ours == pytest.approx(theirs)


def test_c_index_perfect_and_reversed() -> None:
    t = np.arange(1, 11, dtype=float)
    e = np.ones(10)
    assert concordance_index(times=t, events=e, risk=-t) == 1.0
    assert concordance_index(times=t, events=e, risk=t) == 0.0
    assert concordance_index(times=t, events=np.zeros(10), risk=t) is None
