"""Regression at a site: the scaled loss, the rescaled default model, training, evaluation and
DP-SGD, on the bundled diabetes data (real files, no mocks)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from medfed.config import TrainSettings
from medfed.data import load_dataset
from medfed.data.base import DataSpec, FederatedDataset, TaskKind
from medfed.math.metrics import rmse
from medfed.privacy.config import PrivacyConfig
from medfed.records import Instruction, Operation
from medfed.site.losses import ScaledMSELoss, loss_for
from medfed.site.models import Rescaled, default_model
from medfed.site.task import default_task
from medfed.site.torch_app import label_dtype

pytestmark = pytest.mark.filterwarnings("ignore:Secure RNG turned off:UserWarning")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def diabetes() -> FederatedDataset:
    return load_dataset("diabetes")


def test_scaled_loss_is_the_squared_error_in_units_of_the_spread() -> None:
    out = torch.tensor([[160.0], [100.0], [250.0]])
    y = torch.tensor([150.0, 120.0, 200.0])
    expected = torch.nn.functional.mse_loss(out.reshape(-1), y) / 77.0**2
    assert float(ScaledMSELoss(77.0)(out, y)) == pytest.approx(float(expected))
    spec = DataSpec(TaskKind.REGRESSION, (3,), target_center=150.0, target_scale=77.0)
    assert isinstance(loss_for(spec), ScaledMSELoss) and loss_for(spec).scale == 77.0
    with pytest.raises(ValueError, match="positive"):
        ScaledMSELoss(0.0)


def test_the_default_regressor_predicts_in_the_targets_unit_without_extra_weights() -> None:
    spec = DataSpec(TaskKind.REGRESSION, (10,), target_center=152.0, target_scale=77.0)
    model = default_model(spec)
    assert isinstance(model, Rescaled)
    # center and scale are constants, not weights: nothing to average, clip or noise
    assert all(name.startswith("inner.") for name in model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        assert model(torch.randn(4, 10)).reshape(-1).tolist() == [152.0] * 4
    assert default_task(spec).name == "default-regressor"
    assert tuple(default_task(spec).build_model(spec)(torch.zeros(2, 10)).shape) == (2, 1)


def test_labels_are_float32_for_regression() -> None:
    assert label_dtype(TaskKind.REGRESSION) is torch.float32


def test_the_spec_checks_its_target_scale() -> None:
    with pytest.raises(ValueError, match="positive"):
        DataSpec(TaskKind.REGRESSION, (3,), target_scale=0.0)
    with pytest.raises(ValueError, match="finite"):
        DataSpec(TaskKind.REGRESSION, (3,), target_center=float("nan"))


def _instruction(params, operation=Operation.TRAIN, round_=1):  # type: ignore[no-untyped-def]
    return Instruction(operation=operation, round=round_, params=params, seed=round_)


def test_a_site_trains_and_evaluates_mae_and_rmse(diabetes: FederatedDataset) -> None:
    spec, site = diabetes.spec, diabetes.sites[0]
    task = default_task(spec)
    settings = TrainSettings(local_epochs=5, batch_size=32, learning_rate=0.05)
    app = task.site_app(site, spec, settings, device="cpu")
    params = task.initial_params(spec, seed=0)
    before = app.evaluate(params, _instruction(params, Operation.EVALUATE))
    for r in range(1, 6):
        fit = app.fit(params, _instruction(params, round_=r))
        params = fit.params
    assert fit.metrics.loss is not None and fit.metrics.accuracy is None
    after = app.evaluate(params, _instruction(params, Operation.EVALUATE))
    assert after.num_examples == site.num_test
    assert after.accuracy is None and after.auroc is None and after.dice is None
    assert after.mae is not None and after.rmse is not None and after.mae <= after.rmse
    mean_rmse = rmse(targets=site.y_test, predicted=np.full(site.num_test, site.y_train.mean()))
    assert before.rmse is not None and after.rmse < before.rmse
    assert after.rmse < 0.9 * mean_rmse, (after.rmse, mean_rmse)
    # the loss is the squared error in units of the spread
    assert after.loss == pytest.approx((after.rmse / spec.target_scale) ** 2, rel=1e-4)


def test_dp_sgd_trains_a_regressor(diabetes: FederatedDataset) -> None:
    spec, site = diabetes.spec, diabetes.sites[0]
    task = default_task(spec)
    settings = TrainSettings(local_epochs=2, batch_size=32, learning_rate=0.1)
    privacy = PrivacyConfig(dp="sample", noise_multiplier=0.5, clip_norm=1.0)
    app = task.site_app(site, spec, settings, device="cpu", privacy=privacy, rounds=3)
    params = task.initial_params(spec, seed=0)
    fit = app.fit(params, _instruction(params))
    assert fit.report is not None and fit.report.epsilon is not None and fit.report.epsilon > 0
    assert fit.params != params
    metrics = app.evaluate(fit.params, _instruction(fit.params, Operation.EVALUATE))
    assert metrics.rmse is not None and np.isfinite(metrics.rmse)
