"""Segmentation at a site: the Dice + cross-entropy loss, the U-Net, training, evaluation in
chunks and DP-SGD, on generated scans (no mocks)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from medfed.config import TrainSettings
from medfed.data import load_dataset
from medfed.data.base import DataSpec, FederatedDataset, TaskKind
from medfed.errors import TaskLoadError
from medfed.math.metrics import dice
from medfed.privacy.config import PrivacyConfig
from medfed.records import Instruction, Operation
from medfed.site import torch_app
from medfed.site.losses import DiceCELoss, loss_for, soft_dice_loss
from medfed.site.models import UNet, default_model
from medfed.site.task import Task, default_task

pytestmark = pytest.mark.filterwarnings("ignore:Secure RNG turned off:UserWarning")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scans() -> FederatedDataset:
    return load_dataset("synthetic-segmentation", options={"image_size": 16, "num_images": 120})


def _logits_for(mask: torch.Tensor, classes: int, confidence: float) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(mask, classes).movedim(-1, 1).float()
    return confidence * (2 * onehot - 1)


def test_the_loss_prefers_the_true_mask_and_is_a_mean_over_images() -> None:
    rng = np.random.default_rng(0)
    mask = torch.as_tensor(rng.random((4, 8, 8)) < 0.2).long()
    loss = DiceCELoss()
    right = float(loss(_logits_for(mask, 2, 5.0), mask))
    wrong = float(loss(_logits_for(1 - mask, 2, 5.0), mask))
    background = float(loss(_logits_for(torch.zeros_like(mask), 2, 5.0), mask))
    assert right < 0.1 < background < wrong
    # per image, then averaged: what DP-SGD's per-example clipping needs
    logits = torch.randn(4, 2, 8, 8)
    one_by_one = [float(loss(logits[i : i + 1], mask[i : i + 1])) for i in range(4)]
    assert float(loss(logits, mask)) == pytest.approx(np.mean(one_by_one), rel=1e-5)
    assert isinstance(loss_for(DataSpec(TaskKind.SEGMENTATION, (1, 8, 8))), DiceCELoss)


def test_soft_dice_rewards_an_empty_prediction_on_an_empty_image() -> None:
    empty = torch.zeros((1, 8, 8), dtype=torch.int64)
    none_predicted = _logits_for(empty, 2, 10.0)
    assert float(soft_dice_loss(none_predicted, empty)) == pytest.approx(0.0, abs=1e-3)
    logits = torch.zeros((1, 2, 8, 8), requires_grad=True)
    soft_dice_loss(logits, empty).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("shape", [(1, 16, 16), (2, 17, 23), (1, 8, 16, 16), (1, 9, 10, 11)])
def test_the_unet_keeps_the_spatial_shape(shape: tuple[int, ...]) -> None:
    spec = DataSpec(TaskKind.SEGMENTATION, shape, n_classes=3)
    model = default_model(spec)
    assert isinstance(model, UNet) and model.dims == len(shape) - 1
    out = model(torch.randn(2, *shape))
    assert tuple(out.shape) == (2, *spec.output_shape) == (2, 3, *shape[1:])
    name = default_task(spec).name
    assert name == ("default-unet3d" if len(shape) == 4 else "default-unet2d")
    Task(model=default_model).build_model(spec)  # the dry run checks (batch, 3, *spatial)


def test_a_model_with_the_wrong_output_is_refused_with_the_expected_shape() -> None:
    spec = DataSpec(TaskKind.SEGMENTATION, (1, 8, 8))
    task = Task(model=lambda s: torch.nn.Conv2d(1, 1, 1), name="one-channel")
    with pytest.raises(TaskLoadError, match=r"\(batch, 2, 8, 8\).*per class and pixel"):
        task.build_model(spec)
    with pytest.raises(TaskLoadError, match="no default model"):
        default_model(DataSpec(TaskKind.SEGMENTATION, (1, 2, 2)))


def test_the_unet_has_no_batchnorm_so_opacus_accepts_it() -> None:
    from opacus.validators import ModuleValidator

    for dims, shape in ((2, (1, 16, 16)), (3, (1, 8, 8, 8))):
        model = UNet(dims=dims, in_channels=shape[0], n_classes=2)
        assert ModuleValidator.validate(model, strict=False) == []
        assert not any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
        )


def _instruction(params, operation=Operation.TRAIN, round_=1):  # type: ignore[no-untyped-def]
    return Instruction(operation=operation, round=round_, params=params, seed=round_)


def test_a_site_learns_to_segment_and_reports_dice(scans: FederatedDataset) -> None:
    spec, site = scans.spec, scans.sites[0]
    task = default_task(spec)
    settings = TrainSettings(local_epochs=3, batch_size=16, learning_rate=0.003, optimizer="adam")
    app = task.site_app(site, spec, settings, device="cpu")
    params = task.initial_params(spec, seed=0)
    for r in range(1, 5):
        fit = app.fit(params, _instruction(params, round_=r))
        params = fit.params
    assert fit.metrics.loss is not None and fit.metrics.accuracy is None
    metrics = app.evaluate(params, _instruction(params, Operation.EVALUATE))
    assert metrics.num_examples == site.num_test and metrics.loss is not None
    assert metrics.accuracy is None and metrics.rmse is None
    trivial = dice(labels=site.y_test, predicted=np.ones_like(site.y_test), n_classes=2)
    assert metrics.dice is not None and trivial is not None
    assert metrics.dice > trivial + 0.2, (metrics.dice, trivial)


def test_evaluation_in_chunks_gives_the_metrics_of_one_pass(
    scans: FederatedDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, site = scans.spec, scans.pooled()
    model = default_task(spec).build_model(spec).eval()
    with torch.no_grad():
        for p in model.parameters():  # a model that finds something, so Dice is defined
            p.add_(0.05 * torch.randn_like(p))
        whole = torch_app.default_evaluate(model, site.x_test, site.y_test, spec)
        # 3 images per chunk instead of all of them in one
        monkeypatch.setattr(torch_app, "_SEGMENTATION_CHUNK_BYTES", 3 * 16 * 16 * 4)
        chunked = torch_app.default_evaluate(model, site.x_test, site.y_test, spec)
        logits = model(torch.as_tensor(site.x_test))
    predicted = logits.argmax(dim=1).numpy()
    assert chunked.dice == pytest.approx(whole.dice)
    assert chunked.dice == pytest.approx(dice(labels=site.y_test, predicted=predicted, n_classes=2))
    assert chunked.loss == pytest.approx(whole.loss, rel=1e-5)


def test_dp_sgd_trains_a_unet_2d_and_3d() -> None:
    privacy = PrivacyConfig(dp="sample", noise_multiplier=0.5, clip_norm=1.0)
    settings = TrainSettings(local_epochs=1, batch_size=8, learning_rate=0.1)
    for options in ({"image_size": 16}, {"image_size": 16, "depth": 8, "volume": True}):
        ds = load_dataset("synthetic-segmentation", options={**options, "num_images": 36})
        spec, site = ds.spec, ds.sites[0]
        task = default_task(spec)
        app = task.site_app(site, spec, settings, device="cpu", privacy=privacy, rounds=2)
        params = task.initial_params(spec, seed=0)
        fit = app.fit(params, _instruction(params))
        assert fit.report is not None and fit.report.epsilon is not None
        assert fit.params != params
        metrics = app.evaluate(fit.params, _instruction(fit.params, Operation.EVALUATE))
        assert metrics.loss is not None and np.isfinite(metrics.loss)
