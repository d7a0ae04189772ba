"""The Task a researcher writes: validation, deterministic initial params, a light import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from medfed.data.base import DataSpec, TaskKind
from medfed.errors import TaskLoadError, UsageError
from medfed.records import Params
from medfed.site.app import SiteApp
from medfed.site.task import Task, default_task

BINARY = DataSpec(TaskKind.BINARY, (6,))
THREE_CLASSES = DataSpec(TaskKind.MULTICLASS, (6,), n_classes=3)


def linear(spec: DataSpec) -> nn.Module:
    return nn.Linear(spec.input_shape[0], spec.n_outputs)


def test_initial_params_are_the_state_dict_and_deterministic() -> None:
    task = Task(model=linear)
    a = task.initial_params(BINARY, seed=7)
    b = task.initial_params(BINARY, seed=7)
    c = task.initial_params(BINARY, seed=8)
    assert isinstance(a, Params)
    assert list(a) == ["weight", "bias"]
    assert a["weight"].shape == (1, 6) and a["weight"].dtype == np.float32
    assert a == b
    assert a != c


def test_initial_params_leave_the_callers_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Task(model=linear).initial_params(BINARY, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_lazy_modules_are_materialised_by_the_dry_run() -> None:
    task = Task(model=lambda spec: nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 1)))
    params = task.initial_params(BINARY, seed=0)
    assert params["0.weight"].shape == (4, 6)


def test_the_dry_run_does_not_touch_batchnorm_statistics() -> None:
    def bn_model(spec: DataSpec) -> nn.Module:
        return nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))

    params = Task(model=bn_model).initial_params(BINARY, seed=0)
    assert np.array_equal(params["1.running_mean"], np.zeros(4, np.float32))
    assert params["1.num_batches_tracked"] == 0
    assert params["1.num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": 3}, "must be a function"),
        ({"model": nn.Linear(6, 1)}, "not a model object"),
        ({"model": linear, "train": "sgd"}, "must be a function"),
        ({"model": linear, "train": lambda model: None}, "3 positional arguments"),
        ({"model": linear, "evaluate": lambda m, x, y: None}, "4 positional arguments"),
        ({"model": lambda: nn.Linear(6, 1)}, "1 positional argument"),
        ({"model": linear, "name": ""}, "non-empty string"),
    ],
)
def test_bad_arguments_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TaskLoadError, match=message) as info:
        Task(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_model_function_must_return_a_module() -> None:
    task = Task(model=lambda spec: "a model")
    with pytest.raises(TaskLoadError, match=r"must return a torch\.nn\.Module, got str"):
        task.initial_params(BINARY, seed=0)


def test_wrong_output_width_names_the_expected_shape() -> None:
    task = Task(model=lambda spec: nn.Linear(6, 2), name="two-logits")
    with pytest.raises(TaskLoadError, match=r"'two-logits'.*\(batch, 1\).*one logit.*\(2, 2\)"):
        task.initial_params(BINARY, seed=0)
    with pytest.raises(TaskLoadError, match=r"\(batch, 3\).*3 classes"):
        Task(model=lambda spec: nn.Linear(6, 1)).initial_params(THREE_CLASSES, seed=0)


def test_output_that_is_not_a_tensor_is_rejected() -> None:
    class TupleOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.fc(x), x

    with pytest.raises(TaskLoadError, match="gave tuple"):
        Task(model=lambda spec: TupleOut()).initial_params(BINARY, seed=0)


def test_model_function_errors_are_wrapped_with_the_task_name() -> None:
    def broken(spec: DataSpec) -> nn.Module:
        raise KeyError("hidden_size")

    with pytest.raises(TaskLoadError, match=r"task 'broken': building the model failed .*KeyError"):
        Task(model=broken).initial_params(BINARY, seed=0)


def test_site_app_is_a_site_app() -> None:
    from medfed.data.base import SiteData

    x = np.zeros((4, 6), np.float32)
    y = np.array([0, 1, 0, 1])
    app = Task(model=linear).site_app(SiteData("a", x, y, x, y), BINARY, _settings(), device="cpu")
    assert isinstance(app, SiteApp)


def test_default_task_by_kind_and_shape() -> None:
    assert default_task(BINARY).name == "default-mlp"
    assert default_task(DataSpec(TaskKind.SURVIVAL, (39,))).name == "default-cox"
    assert default_task(DataSpec(TaskKind.MULTICLASS, (1, 28, 28), 10)).name == "default-cnn"
    assert default_task(BINARY).is_default and not Task(model=linear).is_default
    with pytest.raises(TaskLoadError, match="no default model"):
        default_task(DataSpec(TaskKind.BINARY, (4, 4)))
    params = default_task(THREE_CLASSES).initial_params(THREE_CLASSES, seed=0)
    assert params.specs[-1].shape == (3,)


def test_repr_names_the_functions() -> None:
    def my_train(model: object, data: object, ctx: object) -> None:
        return None

    assert repr(Task(model=linear, train=my_train)) == "Task(name='linear', train='my_train')"


def test_importing_the_task_module_does_not_import_torch() -> None:
    code = "import sys, medfed.site.task, medfed.site.task_loading; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _settings():  # type: ignore[no-untyped-def]
    from medfed.config import TrainSettings

    return TrainSettings()
