"""MAE, RMSE and Dice against independent computations (scikit-learn, set arithmetic)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error

from medfed.math.metrics import dice, dice_scores, mae, rmse


def test_mae_and_rmse_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(150, 70, 200)
    p = y + rng.normal(0, 30, 200)
    assert mae(targets=y, predicted=p) == pytest.approx(mean_absolute_error(y, p), rel=1e-12)
    assert rmse(targets=y, predicted=p) == pytest.approx(
        math.sqrt(mean_squared_error(y, p)), rel=1e-12
    )
    # a column of predictions (n, 1) is the same as a vector
    assert rmse(targets=y, predicted=p[:, None]) == rmse(targets=y, predicted=p)


def test_regression_metrics_of_nothing_and_of_mismatches() -> None:
    assert mae(targets=[], predicted=[]) is None and rmse(targets=[], predicted=[]) is None
    with pytest.raises(ValueError, match="differ in length"):
        rmse(targets=[1.0, 2.0], predicted=[1.0])


def _set_dice(truth: np.ndarray, guess: np.ndarray) -> float:
    a = {tuple(i) for i in np.argwhere(truth)}
    b = {tuple(i) for i in np.argwhere(guess)}
    return 2 * len(a & b) / (len(a) + len(b))


def test_dice_per_image_and_class_matches_set_overlap_2d_and_3d() -> None:
    rng = np.random.default_rng(0)
    for shape in ((5, 12, 12), (4, 6, 8, 8)):
        truth = rng.integers(0, 3, shape)
        guess = np.where(rng.random(shape) < 0.7, truth, rng.integers(0, 3, shape))
        scores = dice_scores(labels=truth, predicted=guess, n_classes=3)
        assert scores.shape == (shape[0], 2)
        for i in range(shape[0]):
            for k in (1, 2):
                assert scores[i, k - 1] == pytest.approx(_set_dice(truth[i] == k, guess[i] == k))
        assert dice(labels=truth, predicted=guess, n_classes=3) == pytest.approx(scores.mean())


def test_dice_leaves_out_images_without_the_class_in_truth_and_prediction() -> None:
    truth = np.zeros((3, 4, 4), np.int64)
    truth[0, :2, :2] = 1  # 4 tumour pixels
    guess = np.zeros_like(truth)
    guess[0, :2, :1] = 1  # 2 of them found
    guess[2, 3, 3] = 1  # a false tumour in an image without one
    scores = dice_scores(labels=truth, predicted=guess, n_classes=2)
    assert scores[0, 0] == pytest.approx(2 * 2 / 6)
    assert math.isnan(scores[1, 0])  # nothing anywhere: not counted
    assert scores[2, 0] == 0.0  # a tumour that is not there costs
    assert dice(labels=truth, predicted=guess, n_classes=2) == pytest.approx((2 / 3 + 0) / 2)
    empty = np.zeros((2, 4, 4), np.int64)
    assert dice(labels=empty, predicted=empty, n_classes=2) is None


def test_trivial_masks_score_low() -> None:
    truth = np.zeros((10, 16, 16), np.int64)
    truth[:, 4:8, 4:8] = 1  # 16 of 256 pixels
    assert dice(labels=truth, predicted=np.zeros_like(truth), n_classes=2) == 0.0
    everything = dice(labels=truth, predicted=np.ones_like(truth), n_classes=2)
    assert everything == pytest.approx(2 * 16 / (16 + 256))


def test_dice_refuses_mismatched_masks_and_a_single_class() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        dice(labels=np.zeros((2, 4, 4)), predicted=np.zeros((2, 4, 5)), n_classes=2)
    with pytest.raises(ValueError, match="background"):
        dice(labels=np.zeros((2, 4, 4)), predicted=np.zeros((2, 4, 4)), n_classes=1)
