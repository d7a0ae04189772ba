from __future__ import annotations

import numpy as np
import pytest

from medfed.records import Metrics, Params, TensorSpec


def test_params_keep_order_and_layout() -> None:
    p = Params([("z", np.zeros(2, np.float32)), ("a", np.ones((1, 3), np.float64))])
    assert list(p) == ["z", "a"]
    assert p.specs == (TensorSpec("z", (2,), "float32"), TensorSpec("a", (1, 3), "float64"))
    assert p.num_values == 5 and p.nbytes == 2 * 4 + 3 * 8


def test_params_reject_bad_entries() -> None:
    with pytest.raises(ValueError, match="twice"):
        Params([("a", np.zeros(1)), ("a", np.zeros(1))])
    with pytest.raises(TypeError, match="numpy array"):
        Params({"a": [1.0]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="non-empty"):
        Params({"": np.zeros(1)})


def test_params_equality_is_exact() -> None:
    a = Params({"w": np.array([1.0, 2.0], np.float32)})
    assert a == a.copy()
    assert a != Params({"w": np.array([1.0, 2.0], np.float64)})
    assert a != Params({"w": np.array([1.0, 2.5], np.float32)})


def test_weighted_mean_of_metrics_ignores_unmeasured_fields() -> None:
    m = Metrics.weighted_mean(
        [
            Metrics(num_examples=10, accuracy=1.0, auroc=None, extra={"f1": 0.5}),
            Metrics(num_examples=30, accuracy=0.5, auroc=0.8),
        ]
    )
    assert m.num_examples == 40
    assert m.accuracy == pytest.approx(0.625)
    assert m.auroc == pytest.approx(0.8)
    assert m.c_index is None
    assert m.extra == {"f1": 0.5}


def test_weighted_mean_of_nothing_is_empty() -> None:
    assert Metrics.weighted_mean([]) == Metrics()
    assert Metrics.weighted_mean([Metrics(num_examples=0, loss=1.0)]) == Metrics()


def test_metrics_reject_negative_counts() -> None:
    with pytest.raises(ValueError):
        Metrics(num_examples=-1)
