"""Default models: chosen by kind and shape, with the output width the spec asks for."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medfed.data.base import DataSpec, TaskKind
from medfed.errors import TaskLoadError
from medfed.site.models import cox_linear, default_model, mlp, small_cnn


@pytest.mark.parametrize(
    ("spec", "expected_type"),
    [
        (DataSpec(TaskKind.BINARY, (30,)), nn.Sequential),
        (DataSpec(TaskKind.MULTICLASS, (13,), n_classes=3), nn.Sequential),
        (DataSpec(TaskKind.SURVIVAL, (39,)), nn.Linear),
        (DataSpec(TaskKind.MULTICLASS, (1, 28, 28), n_classes=10), nn.Sequential),
        (DataSpec(TaskKind.BINARY, (3, 32, 32)), nn.Sequential),
        (DataSpec(TaskKind.BINARY, (1, 224, 200)), nn.Sequential),
        (DataSpec(TaskKind.MULTICLASS, (1, 8, 8), n_classes=10), nn.Sequential),
    ],
)
def test_default_model_outputs_the_spec_width(spec: DataSpec, expected_type: type) -> None:
    model = default_model(spec)
    assert isinstance(model, expected_type)
    out = model(torch.zeros(5, *spec.input_shape))
    assert out.shape == (5, spec.n_outputs)


def test_tabular_default_is_a_one_hidden_layer_mlp() -> None:
    model = default_model(DataSpec(TaskKind.BINARY, (30,)))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(30, 32), (32, 1)]


def test_cox_model_is_linear_without_bias() -> None:
    model = default_model(DataSpec(TaskKind.SURVIVAL, (39,)))
    assert list(model.state_dict()) == ["weight"]
    assert model.state_dict()["weight"].shape == (1, 39)
    assert cox_linear(5).bias is None


def test_cnn_head_stays_small_for_large_images() -> None:
    small = small_cnn(1, 28, 28, 10)
    large = small_cnn(1, 512, 512, 10)
    n = [sum(p.numel() for p in m.parameters()) for m in (small, large)]
    assert n[0] == n[1]  # the head sees at most 7×7 positions whatever the image size


def test_logistic_regression_variant() -> None:
    assert isinstance(mlp(4, 1, hidden=0), nn.Linear)


@pytest.mark.parametrize(
    "spec",
    [
        DataSpec(TaskKind.BINARY, (1, 3, 3)),  # an image too small to pool twice
        DataSpec(TaskKind.BINARY, (10, 20)),  # a sequence: no default model
        DataSpec(TaskKind.BINARY, (1, 16, 16, 16)),  # a volume: no default model
    ],
)
def test_unsupported_shapes_say_to_write_a_task(spec: DataSpec) -> None:
    with pytest.raises(TaskLoadError, match="write a task module"):
        default_model(spec)
