"""TorchSiteApp: params round trips, determinism, and training that actually learns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest
import torch
from torch import nn

from medfed.config import TrainSettings
from medfed.data.base import DataSpec, SiteData, TaskKind
from medfed.math.metrics import accuracy, auroc
from medfed.messages import RoundSettings
from medfed.records import Instruction, Metrics, Operation, Params
from medfed.site.app import FitResult
from medfed.site.task import Task, TrainContext, default_task
from medfed.site.torch_app import (
    TorchSiteApp,
    batch_indices,
    default_evaluate,
    default_train,
    load_params,
    make_optimizer,
    params_from_model,
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small models gain nothing from intra-op threads, and on a busy machine (2 cores shared
    with other test runs) two spinning threads made this module 5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def standardize(
    x: npt.NDArray[np.float64], train: npt.NDArray[np.intp], test: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    mean = np.nanmean(x[train], axis=0)
    std = np.nanstd(x[train], axis=0) + 1e-8
    filled = np.where(np.isnan(x), mean, x)  # mean imputation from the training rows
    z = ((filled - mean) / std).astype(np.float32)
    return z[train], z[test]


def split(n: int, n_train: int, seed: int = 0) -> tuple[npt.NDArray[np.intp], ...]:
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:n_train], perm[n_train:]


@pytest.fixture(scope="module")
def breast() -> tuple[DataSpec, SiteData]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    train, test = split(len(x), 400)
    x_train, x_test = standardize(x, train, test)
    data = SiteData("breast", x_train, y[train].astype(np.int64), x_test, y[test].astype(np.int64))
    return DataSpec(TaskKind.BINARY, (30,)), data


def instruction(
    params: Params, seed: int = 0, settings: RoundSettings | None = None
) -> Instruction:
    return Instruction(
        Operation.TRAIN, round=1, params=params, seed=seed, settings=settings or RoundSettings()
    )


def fit_once(
    task: Task,
    spec: DataSpec,
    data: SiteData,
    settings: TrainSettings,
    *,
    seed: int = 0,
    round_settings: RoundSettings | None = None,
) -> tuple[TorchSiteApp, Params, FitResult]:
    app = task.site_app(data, spec, settings, device="cpu")
    start = task.initial_params(spec, seed=0)
    return app, start, app.fit(start, instruction(start, seed, round_settings))


def bn_model(spec: DataSpec) -> nn.Module:
    return nn.Sequential(
        nn.Linear(spec.input_shape[0], 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(16, spec.n_outputs),
    )  # fmt: skip


# --- params <-> model --------------------------------------------------------------------------


class Mixed(nn.Module):
    """Parameters and buffers of several dtypes, and a non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2).double()
        self.bn = nn.BatchNorm1d(2).double()
        self.register_buffer("counts", torch.arange(4, dtype=torch.int32))
        self.register_buffer("fp16", torch.full((2,), 0.5, dtype=torch.float16))
        self.register_buffer("scratch", torch.zeros(5), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(x))


def test_round_trip_keeps_names_dtypes_shapes_and_values() -> None:
    torch.manual_seed(0)
    source = Mixed()
    source.train()
    source(torch.randn(8, 3, dtype=torch.float64))  # running statistics move off their init
    params = params_from_model(source)
    assert list(params) == list(source.state_dict())
    assert "scratch" not in params
    assert {k: str(v.dtype) for k, v in params.items()} == {
        "fc.weight": "float64",
        "fc.bias": "float64",
        "bn.weight": "float64",
        "bn.bias": "float64",
        "bn.running_mean": "float64",
        "bn.running_var": "float64",
        "bn.num_batches_tracked": "int64",
        "counts": "int32",
        "fp16": "float16",
    }
    assert params["bn.num_batches_tracked"] == 1
    target = Mixed()
    load_params(target, params)
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name
    assert params_from_model(target) == params


def test_params_are_fresh_copies() -> None:
    model = nn.Linear(3, 1)
    params = params_from_model(model)
    params["weight"][...] = 99.0
    assert not torch.any(model.weight == 99.0)
    load_params(model, params)
    params["weight"][...] = 7.0
    assert torch.all(model.weight == 99.0)


def test_read_only_params_load_without_warnings() -> None:
    params = params_from_model(nn.Linear(3, 1))
    for array in params.values():
        array.setflags(write=False)
    load_params(nn.Linear(3, 1), params)  # warnings are errors in this suite


def test_layout_mismatches_are_explained() -> None:
    model = nn.Linear(3, 2)
    good = params_from_model(model)
    with pytest.raises(ValueError, match=r"missing \['bias'\]"):
        load_params(model, Params({"weight": good["weight"]}))
    with pytest.raises(ValueError, match="another order"):
        load_params(model, Params({"bias": good["bias"], "weight": good["weight"]}))
    with pytest.raises(
        ValueError, match=r"'bias' is float64\[2\] but the model holds float32\[2\]"
    ):
        load_params(model, Params({"weight": good["weight"], "bias": good["bias"].astype(float)}))
    with pytest.raises(ValueError, match=r"'weight' is float32\[3, 2\]"):
        load_params(model, Params({"weight": good["weight"].T.copy(), "bias": good["bias"]}))


def test_bfloat16_models_are_refused_clearly() -> None:
    with pytest.raises(TypeError, match="bfloat16"):
        params_from_model(nn.Linear(2, 1).to(torch.bfloat16))


# --- fit: ownership, determinism ---------------------------------------------------------------


def test_fit_with_batchnorm_updates_buffers_and_returns_fresh_arrays(
    breast: tuple[DataSpec, SiteData],
) -> None:
    spec, data = breast
    settings = TrainSettings(batch_size=64)
    app, start, result = fit_once(Task(model=bn_model), spec, data, settings)
    assert result.num_examples == data.num_train == result.metrics.num_examples
    assert result.params.specs == start.specs
    assert result.params["1.num_batches_tracked"] == 7  # ceil(400 / 64) steps
    assert not np.array_equal(result.params["1.running_mean"], start["1.running_mean"])
    state = app.model.state_dict()
    for name, array in result.params.items():
        assert not np.shares_memory(array, state[name].numpy()), name
    # medfed overwrites the returned arrays in place: the app must not notice.
    expected = app.evaluate(result.params.copy(), instruction(start))
    again = app.fit(start, instruction(start))
    for array in result.params.values():
        array[...] = 0
    assert app.evaluate(again.params, instruction(start)) == expected


def test_same_seed_same_params_different_seed_different(
    breast: tuple[DataSpec, SiteData],
) -> None:
    spec, data = breast
    task = Task(model=bn_model)  # dropout draws from the global RNG, shuffling from ctx
    app = task.site_app(data, spec, TrainSettings(local_epochs=2), device="cpu")
    start = task.initial_params(spec, seed=3)
    first = app.fit(start, instruction(start, seed=11)).params
    torch.manual_seed(999)  # the caller's RNG state must not matter …
    second = app.fit(start, instruction(start, seed=11)).params
    other = app.fit(start, instruction(start, seed=12)).params
    assert first == second
    assert first != other
    fresh_app = task.site_app(data, spec, TrainSettings(local_epochs=2), device="cpu")
    assert fresh_app.fit(start, instruction(start, seed=11)).params == first


def test_fit_leaves_the_global_rng_alone(breast: tuple[DataSpec, SiteData]) -> None:
    spec, data = breast
    task = Task(model=bn_model)
    app = task.site_app(data, spec, TrainSettings(), device="cpu")
    start = task.initial_params(spec, seed=0)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    app.fit(start, instruction(start))
    app.evaluate(start, instruction(start))
    assert torch.equal(torch.rand(3), expected)


# --- training learns ---------------------------------------------------------------------------


def test_breast_cancer_training_lowers_the_loss_and_classifies_well(
    breast: tuple[DataSpec, SiteData],
) -> None:
    spec, data = breast
    task = default_task(spec)
    app = task.site_app(data, spec, TrainSettings(local_epochs=1), device="cpu")
    params = task.initial_params(spec, seed=0)
    before = app.evaluate(params, instruction(params))
    train_losses = []
    for round_ in range(5):
        result = app.fit(params, replace(instruction(params, seed=round_), round=round_))
        params = result.params
        train_losses.append(result.metrics.loss)
    after = app.evaluate(params, instruction(params))
    assert train_losses == sorted(train_losses, reverse=True)
    assert after.loss is not None and before.loss is not None
    assert after.loss < 0.5 * before.loss
    assert after.accuracy is not None and after.accuracy > 0.93
    assert after.auroc is not None and after.auroc > 0.98
    assert after.num_examples == data.num_test
    assert after.c_index is None


def test_default_evaluation_matches_the_numpy_metrics(breast: tuple[DataSpec, SiteData]) -> None:
    spec, data = breast
    model = nn.Linear(30, 1)
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x_test)).reshape(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(
            logits, torch.from_numpy(data.y_test).float()
        )
        metrics = default_evaluate(model, data.x_test, data.y_test, spec)
    assert metrics.loss == pytest.approx(loss.item())
    assert metrics.accuracy == accuracy(labels=data.y_test, predicted=(logits > 0).numpy())
    assert metrics.auroc == pytest.approx(auroc(labels=data.y_test, scores=logits.numpy()))
    empty = default_evaluate(model, data.x_test[:0], data.y_test[:0], spec)
    assert empty == Metrics(num_examples=0)


def test_multiclass_wine() -> None:
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    train, test = split(len(x), 130)
    x_train, x_test = standardize(x, train, test)
    data = SiteData("wine", x_train, y[train], x_test, y[test])
    spec = DataSpec(TaskKind.MULTICLASS, (13,), n_classes=3)
    task = default_task(spec)
    app, _, result = fit_once(task, spec, data, TrainSettings(local_epochs=10))
    metrics = app.evaluate(result.params, instruction(result.params))
    assert metrics.accuracy is not None and metrics.accuracy > 0.9
    assert metrics.auroc is not None and metrics.auroc > 0.97
    assert result.metrics.accuracy is not None and result.metrics.accuracy > 0.9


def test_survival_on_lifelines_lung_reaches_a_useful_c_index() -> None:
    pytest.importorskip("lifelines")
    from lifelines.datasets import load_lung

    df = load_lung().drop(columns=["inst"])
    y = np.column_stack(
        [df.pop("time").to_numpy(np.float64), df.pop("status").to_numpy(np.float64)]
    )
    x = df.to_numpy(np.float64)  # NaNs in 5 columns: imputed by standardize()
    train, test = split(len(x), 170)
    x_train, x_test = standardize(x, train, test)
    data = SiteData("lung", x_train, y[train], x_test, y[test])
    spec = DataSpec(TaskKind.SURVIVAL, (x.shape[1],))
    app, start, result = fit_once(default_task(spec), spec, data, TrainSettings(local_epochs=20))
    before = app.evaluate(start, instruction(start))
    after = app.evaluate(result.params, instruction(result.params))
    assert after.c_index is not None and after.c_index > 0.6
    assert after.loss is not None and before.loss is not None and after.loss < before.loss
    assert after.accuracy is None and after.auroc is None
    assert result.metrics.loss is not None


def synthetic_images(n: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Noise with a bright 6×6 patch in one of three places; the place is the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0.0, 0.3, (n, 1, 28, 28)).astype(np.float32)
    corners = [(3, 3), (3, 19), (19, 11)]
    for i, label in enumerate(y):
        r, c = corners[label]
        r, c = r + rng.integers(-2, 3), c + rng.integers(-2, 3)
        x[i, 0, r : r + 6, c : c + 6] += 1.0
    return x, y.astype(np.int64)


def test_default_cnn_learns_synthetic_images() -> None:
    x_train, y_train = synthetic_images(600, seed=0)
    x_test, y_test = synthetic_images(200, seed=1)
    data = SiteData("images", x_train, y_train, x_test, y_test)
    spec = DataSpec(TaskKind.MULTICLASS, (1, 28, 28), n_classes=3)
    task = default_task(spec)
    settings = TrainSettings(local_epochs=2, optimizer="adam", learning_rate=0.003)
    app, _, result = fit_once(task, spec, data, settings)
    metrics = app.evaluate(result.params, instruction(result.params))
    assert metrics.accuracy is not None and metrics.accuracy > 0.9


# --- the training loop's pieces ----------------------------------------------------------------


def test_batches_cover_every_example_once_and_never_leave_one_alone() -> None:
    gen = torch.Generator().manual_seed(0)
    sizes = [len(b) for b in batch_indices(65, 32, generator=gen)]
    assert sizes == [32, 33]
    gen = torch.Generator().manual_seed(0)
    seen = torch.cat(list(batch_indices(70, 32, generator=gen)))
    assert sorted(seen.tolist()) == list(range(70))
    assert [len(b) for b in batch_indices(1, 32, generator=gen)] == [1]
    assert list(batch_indices(0, 32, generator=gen)) == []


def test_optimizer_follows_the_settings() -> None:
    model = nn.Linear(2, 1)
    sgd = make_optimizer(model, TrainSettings(learning_rate=0.1, momentum=0.9, weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 1e-4
    adam = make_optimizer(model, TrainSettings(optimizer="adam", learning_rate=0.01))
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 0.01


def test_survival_batches_without_events_are_skipped() -> None:
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    censored = np.column_stack([np.arange(1.0, 41.0), np.zeros(40)])
    data = SiteData("censored", x, censored, x, censored)
    spec = DataSpec(TaskKind.SURVIVAL, (3,))
    app, start, result = fit_once(default_task(spec), spec, data, TrainSettings(batch_size=8))
    assert result.params == start  # nothing to learn, and no momentum or decay step taken
    assert result.metrics.loss is None
    assert app.evaluate(start, instruction(start)) == Metrics(num_examples=40, c_index=None)


def test_proximal_mu_keeps_the_site_near_the_global_model(
    breast: tuple[DataSpec, SiteData],
) -> None:
    spec, data = breast
    settings = TrainSettings(local_epochs=3, learning_rate=0.1)
    task = default_task(spec)

    def drift(mu: float) -> float:
        _, start, result = fit_once(
            task, spec, data, settings, round_settings=RoundSettings(proximal_mu=mu)
        )
        return float(sum(np.sum((result.params[k] - start[k]) ** 2) for k in start))

    assert drift(1.0) < 0.5 * drift(0.0)


def test_divergence_is_reported_with_what_to_do(breast: tuple[DataSpec, SiteData]) -> None:
    spec, data = breast
    huge = replace(data, x_train=data.x_train * np.float32(1e19))
    with pytest.raises(FloatingPointError, match=r"diverged.*learning_rate"):
        fit_once(default_task(spec), spec, huge, TrainSettings(learning_rate=10.0))


# --- custom train and evaluate functions -------------------------------------------------------


def test_a_custom_train_function_is_used(breast: tuple[DataSpec, SiteData]) -> None:
    spec, data = breast
    calls: list[TrainContext] = []

    def train(model: nn.Module, site: SiteData, ctx: TrainContext) -> Metrics:
        calls.append(ctx)
        assert model.training and site.x_train is data.x_train and site.y_train is data.y_train
        assert site.num_test == 0  # the held-out set is not the training loop's to see
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        return Metrics(loss=0.25)  # num_examples left at 0: filled in

    task = Task(model=lambda s: nn.Linear(30, 1), train=train)
    settings = TrainSettings(batch_size=7)
    _, start, result = fit_once(
        task,
        spec,
        data,
        settings,
        seed=5,
        round_settings=RoundSettings(proximal_mu=0.1, task={"tag": "x"}),
    )
    (ctx,) = calls
    assert ctx.settings == settings and ctx.spec == spec
    assert (ctx.seed, ctx.round, dict(ctx.config)) == (5, 1, {"tag": "x"})
    assert ctx.round_settings.proximal_mu == 0.1
    assert ctx.device == torch.device("cpu") and isinstance(ctx.generator, torch.Generator)
    assert np.allclose(result.params["weight"], start["weight"] + 1.0)
    assert result.metrics == Metrics(num_examples=400, loss=0.25)


def test_a_custom_train_function_may_wrap_the_default(breast: tuple[DataSpec, SiteData]) -> None:
    spec, data = breast

    def train(model: nn.Module, site: SiteData, ctx: TrainContext) -> Metrics:
        metrics = default_train(model, site, ctx)
        return replace(metrics, extra={"wrapped": 1.0})

    _, _, result = fit_once(Task(model=bn_model, train=train), spec, data, TrainSettings())
    assert result.metrics.extra == {"wrapped": 1.0} and result.metrics.loss is not None


@pytest.mark.parametrize(
    ("returned", "error"),
    [("0.3", "must return medfed.records.Metrics, got str"), (None, None)],
)
def test_custom_train_return_values(
    breast: tuple[DataSpec, SiteData], returned: object, error: str | None
) -> None:
    spec, data = breast
    task = Task(model=lambda s: nn.Linear(30, 1), train=lambda m, d, c: returned)
    if error:
        with pytest.raises(TypeError, match=error):
            fit_once(task, spec, data, TrainSettings())
    else:
        assert fit_once(task, spec, data, TrainSettings())[2].metrics == Metrics(num_examples=400)


def test_a_train_function_must_not_replace_layers(breast: tuple[DataSpec, SiteData]) -> None:
    spec, data = breast

    def train(model: nn.Module, site: SiteData, ctx: TrainContext) -> None:
        model[1] = nn.Linear(16, 1, bias=False)

    task = Task(model=bn_model, train=train)
    with pytest.raises(ValueError, match="changed the model's parameter layout"):
        fit_once(task, spec, data, TrainSettings())


def test_a_custom_evaluate_function_is_used(breast: tuple[DataSpec, SiteData]) -> None:
    spec, data = breast

    def evaluate(
        model: nn.Module, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], s: DataSpec
    ) -> Metrics:
        assert not model.training and not torch.is_grad_enabled()
        assert x is data.x_test and y is data.y_test and s == spec
        return Metrics(extra={"ppv": 0.5})

    task = Task(model=bn_model, evaluate=evaluate)
    app = task.site_app(data, spec, TrainSettings(), device="cpu")
    params = task.initial_params(spec, seed=0)
    assert app.evaluate(params, instruction(params)) == Metrics(
        num_examples=data.num_test, extra={"ppv": 0.5}
    )
