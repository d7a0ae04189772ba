"""Gradient inversion on real updates: the breast-cancer MLP and the imaging CNN."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from medfed.audit.inversion import (
    analytic_first_layer,
    first_linear_layer,
    infer_single_label,
    invert_gradients,
)
from medfed.audit.similarity import IMAGE_PSNR_THRESHOLD_DB, match_images, match_records
from medfed.data import load_dataset
from medfed.data.base import FederatedDataset
from medfed.privacy.mechanisms import add_gaussian_noise, clip_l2, l2_norm
from medfed.records import Params
from medfed.site.losses import loss_for
from medfed.site.task import default_task
from medfed.site.torch_app import load_params
from tests.audit.updates import one_step_update, tabular_update


def test_one_record_is_recovered_exactly_from_a_raw_update(breast: FederatedDataset) -> None:
    _, update, x = tabular_update(breast, [7])
    candidates = analytic_first_layer(update)
    sim = match_records(references=x, candidates=candidates)
    assert sim.per_record[0] > 0.999
    assert sim.secondary[0] < 1e-3
    assert len(candidates) > 0 and np.allclose(candidates, x[0], atol=1e-3)


def test_clipping_alone_hides_nothing(breast: FederatedDataset) -> None:
    """Scaling an update keeps every ratio ΔW_i / Δb_i."""
    _, update, x = tabular_update(breast, [3])
    clipped, norm = clip_l2(update, max_norm=norm_fraction(update, 0.01))
    assert norm > 0
    sim = match_records(references=x, candidates=analytic_first_layer(clipped))
    assert sim.per_record[0] > 0.999 and sim.leaks


def norm_fraction(update: Params, fraction: float) -> float:
    return fraction * l2_norm(update)


def test_rows_activated_by_one_record_give_that_record(breast: FederatedDataset) -> None:
    rows = [10, 20, 30, 40]
    params, update, x = tabular_update(breast, rows)
    weight, bias = first_linear_layer(update)
    assert (weight, bias) == ("0.weight", "0.bias")
    active = (x @ params[weight].T + params[bias]) > 0  # (records, hidden units)
    alone = active.sum(axis=0) == 1
    owners = {int(np.flatnonzero(active[:, unit])[0]) for unit in np.flatnonzero(alone)}
    sim = match_records(references=x, candidates=analytic_first_layer(update))
    assert len(owners) >= 3  # most records of the batch own a row
    for record in owners:
        assert sim.reconstructed_records[record], record
    assert sim.reconstructed >= 3


def test_noise_of_the_default_protection_defeats_the_analytic_attack(
    breast: FederatedDataset,
) -> None:
    _, update, x = tabular_update(breast, [5])
    clipped, _ = clip_l2(update, max_norm=1.0)
    noisy = add_gaussian_noise(clipped, std=1.0, rng=np.random.default_rng(0))
    sim = match_records(references=x, candidates=analytic_first_layer(noisy))
    assert not sim.leaks and sim.per_record[0] < 0.8


def test_an_update_without_a_linear_layer_is_refused() -> None:
    update = Params({"conv.weight": np.zeros((4, 1, 3, 3), np.float32)})
    with pytest.raises(ValueError, match="no linear layer"):
        first_linear_layer(update)
    zero = Params({"w": np.zeros((3, 2), np.float32), "b": np.zeros(3, np.float32)})
    assert analytic_first_layer(zero).shape == (0, 2)


@pytest.mark.parametrize("label", [0, 1])
def test_the_label_of_one_record_is_read_off_the_last_bias(
    breast: FederatedDataset, label: int
) -> None:
    pooled = breast.pooled()
    row = int(np.flatnonzero(pooled.y_train == label)[0])
    _, update, _ = tabular_update(breast, [row])
    assert infer_single_label(update) == label


@pytest.fixture(scope="module")
def imaging() -> FederatedDataset:
    return load_dataset("synthetic-imaging", seed=0)


def test_one_image_is_reconstructed_from_the_small_cnns_update(imaging: FederatedDataset) -> None:
    pooled = imaging.pooled()
    x, y = pooled.x_train[:1], pooled.y_train[:1]
    task = default_task(imaging.spec)
    params, update = one_step_update(task, imaging, x, y)
    model = task.build_model(imaging.spec)
    load_params(model, params)
    before = [p.detach().clone() for p in model.parameters()]
    start = time.perf_counter()
    images = invert_gradients(
        model,
        update,
        labels=[infer_single_label(update)],
        loss_fn=loss_for(imaging.spec),
        input_shape=imaging.spec.input_shape,
        iterations=300,
        bounds=(-0.5, 1.5),
        seed=0,
    )
    seconds = time.perf_counter() - start
    sim = match_images(references=x, candidates=images)
    assert sim.per_record[0] >= IMAGE_PSNR_THRESHOLD_DB, sim
    assert sim.secondary[0] > 0.6  # SSIM
    assert seconds < 20
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)  # the attack leaves the model as it found it
