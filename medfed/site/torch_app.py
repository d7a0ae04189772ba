"""The PyTorch site app: a :class:`~medfed.site.task.Task` trained on one site's data.

``TorchSiteApp`` builds the task's model once and, on every call, copies the received params
into it (names are the model's ``state_dict`` keys, buffers included; dtypes and shapes must
match exactly), trains or evaluates, and hands back fresh numpy arrays.

The default training loop and evaluation live here too, with the :data:`~medfed.site.task.TrainFn`
and :data:`~medfed.site.task.EvalFn` signatures, so a task's own functions can call or wrap them.

Determinism: the same params and the same ``instruction.seed`` give bit-identical trained
params on the CPU (shuffling comes from a seeded generator; the global torch RNG is seeded
for the call and restored afterwards). CUDA kernels may not be bit-reproducible.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from medfed.config import TrainSettings
from medfed.data.base import DataSpec, SiteData, TaskKind
from medfed.math.metrics import accuracy, auroc, concordance_index, dice_scores, mae, rmse
from medfed.messages import SiteReport
from medfed.records import Instruction, Metrics, Params
from medfed.site.app import FitResult
from medfed.site.losses import cox_ph_loss, loss_for
from medfed.site.params_io import load_params, params_from_model
from medfed.site.personal import best_finetune_epochs, keep_layers, personal_names, restore_layers
from medfed.site.scaffold import corrected_steps, with_control
from medfed.site.state import MemoryStateStore
from medfed.site.task import EvalFn, Task, TrainContext, TrainFn
from medfed.strategies.scaffold import split_control

if TYPE_CHECKING:
    from medfed.privacy.config import PrivacyConfig
    from medfed.site.dp_sgd import DPSGD
    from medfed.site.state import SiteStateStore

__all__ = [
    "TorchSiteApp",
    "as_tensor",
    "batch_indices",
    "default_evaluate",
    "default_train",
    "label_dtype",
    "load_params",
    "make_optimizer",
    "params_from_model",
    "resolve_device",
]

_EVAL_CHUNK_BYTES = 64 * 2**20
_SEGMENTATION_CHUNK_BYTES = 2 * 2**20
"""Input per forward pass when evaluating segmentation: a U-Net's activations are tens of
times its input, and its output a logit per class and pixel, so the chunks are smaller."""
_DP_HISTORY = "medfed.dp_sgd.history"
"""Site state name of the DP-SGD accountant's history (see :meth:`DPSGD.history`)."""


# --- small helpers a custom training loop may reuse -----------------------------------------


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as given, else CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_tensor(
    array: npt.NDArray[Any], *, dtype: torch.dtype | None = None, device: torch.device
) -> Tensor:
    """A tensor for a numpy array: shares memory when it can, copies read-only arrays."""
    source = torch.from_numpy(array if array.flags.writeable else np.array(array))
    return source.to(device=device, dtype=dtype)


def batch_indices(n: int, batch_size: int, *, generator: torch.Generator) -> Iterator[Tensor]:
    """A shuffled pass over ``range(n)`` in batches of ``batch_size``.

    A last batch of a single example is merged into the one before it, since batch
    normalisation cannot train on one example.
    """
    order = torch.randperm(n, generator=generator)
    bounds = [*range(0, n, batch_size), n]
    if len(bounds) > 2 and n - bounds[-2] == 1:
        del bounds[-2]
    for start, stop in itertools.pairwise(bounds):
        yield order[start:stop]


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """SGD (with momentum and weight decay) or Adam, as the settings say."""
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
    return torch.optim.SGD(
        params,
        lr=settings.learning_rate,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )


def _float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def label_dtype(kind: TaskKind) -> torch.dtype:
    """The dtype of a kind's label tensor: float64 ``[time, event]`` (survival), float32
    targets (regression), int64 class indices or masks (classification, segmentation)."""
    if kind is TaskKind.SURVIVAL:
        return torch.float64
    if kind is TaskKind.REGRESSION:
        return torch.float32
    return torch.int64


def _label_tensor(y: npt.NDArray[Any], kind: TaskKind, device: torch.device) -> Tensor:
    return as_tensor(y, dtype=label_dtype(kind), device=device)


# --- the default training loop and evaluation -------------------------------------------------


def default_train(model: nn.Module, data: SiteData, ctx: TrainContext) -> Metrics:
    """Mini-batch training for ``ctx.settings.local_epochs`` epochs with the kind's loss.

    Losses: BCE on one logit (binary), cross-entropy (multiclass), Cox partial likelihood
    within each batch (survival; a batch without an event is skipped), squared error in units
    of the target's spread (regression), cross-entropy + soft Dice (segmentation); see
    :func:`medfed.site.losses.loss_for`. When the round's settings have ``proximal_mu`` > 0,
    FedProx's term (μ/2)·‖w − w_received‖² is added. Returns the last epoch's mean training
    loss (and accuracy for classification).
    """
    spec, settings = ctx.spec, ctx.settings
    n = data.num_train
    if n == 0:
        return Metrics(num_examples=0)
    x = as_tensor(data.x_train, dtype=_float_dtype(model), device=ctx.device)
    y = _label_tensor(data.y_train, spec.kind, ctx.device)
    loss_fn = loss_for(spec)
    optimizer = make_optimizer(model, settings)
    mu = ctx.round_settings.proximal_mu
    anchor = [p.detach().clone() for p in model.parameters()] if mu > 0 else []
    survival = spec.kind is TaskKind.SURVIVAL
    classifies = spec.kind in (TaskKind.BINARY, TaskKind.MULTICLASS)
    events = np.asarray(data.y_train[:, 1], dtype=np.float64) > 0 if survival else None

    model.train()
    for _ in range(settings.local_epochs):
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        correct = torch.zeros((), dtype=torch.int64, device=ctx.device)
        seen = 0
        for idx in batch_indices(n, settings.batch_size, generator=ctx.generator):
            if events is not None and not events[idx.numpy()].any():
                continue  # no event: the partial likelihood has nothing to compare
            idx_dev = idx.to(ctx.device)
            xb, yb = x[idx_dev], y[idx_dev]
            out = model(xb)
            loss = loss_fn(out, yb)
            objective = loss
            if mu > 0:
                prox = sum(
                    ((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
                )
                objective = loss + 0.5 * mu * prox
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            batch = len(idx)
            seen += batch
            loss_sum += loss.detach().to(torch.float64) * batch
            if classifies:
                correct += (_predict(out.detach(), spec) == yb).sum()
    mean_loss = float(loss_sum) / seen if seen else None
    if mean_loss is not None and not math.isfinite(mean_loss):
        raise FloatingPointError(
            f"training diverged in round {ctx.round} (the loss became {mean_loss}); "
            "lower train.learning_rate or check the site's features for extreme values"
        )
    acc = int(correct) / seen if seen and classifies else None
    return Metrics(num_examples=n, loss=mean_loss, accuracy=acc)


def _predict(logits: Tensor, spec: DataSpec) -> Tensor:
    if spec.kind is TaskKind.BINARY:
        return (logits.reshape(-1) > 0).to(torch.int64)
    return logits.argmax(dim=1)


def _chunks(model: nn.Module, x: npt.NDArray[Any], budget: int) -> Iterator[tuple[slice, Tensor]]:
    """``(rows, model output)`` for consecutive chunks of about ``budget`` bytes of input."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = _float_dtype(model)
    row_bytes = max(1, int(np.prod(x.shape[1:])) * x.itemsize)
    chunk = max(1, budget // row_bytes)
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        yield rows, model(as_tensor(x[rows], dtype=dtype, device=device)).cpu()


def _forward_all(model: nn.Module, x: npt.NDArray[Any]) -> Tensor:
    """Model outputs for all rows of ``x``, in chunks of about 64 MiB of input."""
    return torch.cat([out for _, out in _chunks(model, x, _EVAL_CHUNK_BYTES)])


def _evaluate_segmentation(
    model: nn.Module, x: npt.NDArray[Any], y: npt.NDArray[Any], spec: DataSpec
) -> Metrics:
    """Loss and mean Dice, chunk by chunk: only one chunk's logits are ever held."""
    loss_fn = loss_for(spec)
    loss_sum = 0.0
    scores = []
    for rows, out in _chunks(model, x, _SEGMENTATION_CHUNK_BYTES):
        target = as_tensor(y[rows], dtype=torch.int64, device=torch.device("cpu"))
        loss_sum += float(loss_fn(out, target)) * len(target)
        predicted = out.argmax(dim=1).numpy()
        scores.append(dice_scores(labels=y[rows], predicted=predicted, n_classes=spec.n_classes))
    per_case = np.concatenate(scores)
    measured = per_case[~np.isnan(per_case)]
    return Metrics(
        num_examples=len(x),
        loss=loss_sum / len(x),
        dice=float(measured.mean()) if measured.size else None,
    )


def default_evaluate(
    model: nn.Module, x: npt.NDArray[Any], y: npt.NDArray[Any], spec: DataSpec
) -> Metrics:
    """Loss and the kind's metrics on held-out data.

    Binary: accuracy (sigmoid ≥ 0.5, i.e. logit > 0) and AUROC; multiclass: accuracy and
    macro one-vs-rest AUROC on softmax probabilities; survival: the Cox loss over the whole
    set (None without events) and Harrell's C-index with the model output as the risk;
    regression: MAE and RMSE in the target's unit (the loss is the squared error in units of
    its spread); segmentation: mean Dice over the foreground classes and images
    (:func:`medfed.math.metrics.dice`), computed in chunks of images so that memory stays
    bounded however large the test set.
    """
    n = len(x)
    if n == 0:
        return Metrics(num_examples=0)
    with torch.no_grad():
        if spec.kind is TaskKind.SEGMENTATION:
            return _evaluate_segmentation(model, x, y, spec)
        out = _forward_all(model, x)
        if spec.kind is TaskKind.REGRESSION:
            target = _label_tensor(y, spec.kind, torch.device("cpu"))
            predicted = out.reshape(-1).to(torch.float64).numpy()
            return Metrics(
                num_examples=n,
                loss=float(loss_for(spec)(out, target)),
                mae=mae(targets=y, predicted=predicted),
                rmse=rmse(targets=y, predicted=predicted),
            )
        target = _label_tensor(y, spec.kind, torch.device("cpu"))
        if spec.kind is TaskKind.SURVIVAL:
            risk = out.reshape(-1)
            has_events = bool((target[:, 1] > 0).any())
            loss = float(cox_ph_loss(risk, target[:, 0], target[:, 1])) if has_events else None
            c_index = concordance_index(
                times=y[:, 0], events=y[:, 1], risk=risk.to(torch.float64).numpy()
            )
            return Metrics(num_examples=n, loss=loss, c_index=c_index)
        loss = float(loss_for(spec)(out, target))
        predicted = _predict(out, spec).numpy()
        if spec.kind is TaskKind.BINARY:
            scores = out.reshape(-1).to(torch.float64).numpy()
        else:
            scores = torch.softmax(out.to(torch.float64), dim=1).numpy()
    return Metrics(
        num_examples=n,
        loss=loss,
        accuracy=accuracy(labels=y, predicted=predicted),
        auroc=auroc(labels=y, scores=scores),
    )


# --- the site app ---------------------------------------------------------------------------


class TorchSiteApp:
    """A :class:`~medfed.site.app.SiteApp` for a torch task on one site's data.

    The model is built once; each call loads the received params into it. The site's state
    (:mod:`medfed.site.state`) is read from ``state`` before each training and saved after it,
    keyed by the instruction's run and this site's name.

    With ``privacy.dp == "sample"`` the site trains with DP-SGD (:mod:`medfed.site.dp_sgd`)
    instead of the task's loop, and each fit reports the site's ε so far in
    ``FitResult.report.epsilon``; ``rounds`` (the job's planned rounds) is needed only to
    calibrate the noise to ``privacy.target_epsilon``.
    """

    def __init__(
        self,
        task: Task,
        data: SiteData,
        spec: DataSpec,
        settings: TrainSettings,
        *,
        device: str | torch.device | None = None,
        privacy: PrivacyConfig | None = None,
        rounds: int | None = None,
        state: SiteStateStore | None = None,
    ) -> None:
        self.task = task
        self.state: SiteStateStore = MemoryStateStore() if state is None else state
        self.data = data
        self.spec = spec
        self.settings = settings
        self.device = resolve_device(device)
        with _seeded(0, self.device):
            model = task.build_model(spec)
        self.model = model.to(self.device)
        self._layout = params_from_model(self.model).specs
        # Training sees the training records only: the held-out set stays out of reach.
        self._train_data = replace(data, x_test=data.x_test[:0], y_test=data.y_test[:0])
        self._train: TrainFn = task.train or default_train
        self._evaluate: EvalFn = task.evaluate or default_evaluate
        self.dp_sgd: DPSGD | None = None
        if privacy is not None and privacy.dp == "sample":
            self.dp_sgd = self._private_training(privacy, rounds)
            self._train = self.dp_sgd.train

    def __repr__(self) -> str:
        return f"TorchSiteApp({self.task.name!r}, site={self.data.name!r}, device={self.device})"

    def _private_training(self, privacy: PrivacyConfig, rounds: int | None) -> DPSGD:
        from medfed.errors import ConfigError
        from medfed.site.dp_sgd import DPSGD

        if self.task.train is not None:
            raise ConfigError(
                f"task {self.task.name!r} has its own train function, but privacy.dp = "
                "'sample' trains with medfed's DP-SGD loop; drop the task's train= or use "
                "privacy.dp = 'client'"
            )
        dp_sgd = DPSGD.from_config(
            privacy, settings=self.settings, num_examples=self.data.num_train, rounds=rounds
        )
        dp_sgd.check_model(self.model, spec=self.spec)
        return dp_sgd

    def fit(self, params: Params, instruction: Instruction) -> FitResult:
        """Train from ``params`` with the instruction's seed; returns fresh arrays.

        ``params`` may carry SCAFFOLD's control variate with the model
        (:mod:`medfed.site.scaffold`): the steps are then drift-corrected and the trained
        params carry the site's change of its own variate."""
        received, control = split_control(params)
        if len(control) and self.dp_sgd is not None:
            raise ValueError(
                "SCAFFOLD's control variates cannot be trained with DP-SGD; use another "
                "strategy for privacy.dp = 'sample'"
            )
        load_params(self.model, received)
        shuffle_seed, torch_seed = np.random.SeedSequence(instruction.seed % 2**64).generate_state(
            2, np.uint64
        )
        generator = torch.Generator().manual_seed(int(shuffle_seed))
        run, site = instruction.run, self.data.name
        state = self.state.load(run, site, before=instruction.round)
        personal = instruction.settings.personal
        kept = personal_names(self.model, personal.layers) if personal is not None else []
        restore_layers(self.model, state, kept)  # the site's own norm layers / head
        # where training starts (SCAFFOLD's drift is measured from it): kept layers included
        start = params_from_model(self.model) if kept and len(control) else received
        if self.dp_sgd is not None:
            # the accountant never goes back: a round run twice was spent twice
            spent = self.state.latest(run, site).get(_DP_HISTORY)
            if spent is not None:
                self.dp_sgd.restore(spent)
        ctx = TrainContext(
            settings=self.settings,
            spec=self.spec,
            seed=instruction.seed,
            round=instruction.round,
            config=instruction.settings.task,
            round_settings=instruction.settings,
            device=self.device,
            generator=generator,
            state=state,
        )
        n = self.data.num_train
        corrected = (
            corrected_steps(self.model, control, state)
            if len(control)
            else contextlib.nullcontext()
        )
        with _seeded(int(torch_seed), self.device), _counting_steps() as steps, corrected:
            self.model.train()
            metrics = self._train(self.model, self._train_data, ctx)
        metrics = _completed(metrics, n, "train")
        keep_layers(self.model, state, kept)
        trained = params_from_model(self.model)
        if trained.specs != self._layout:
            raise ValueError(
                f"task {self.task.name!r}: training changed the model's parameter layout; "
                "a train function must update the model's weights in place"
            )
        if len(control):
            trained = with_control(
                trained,
                start,
                control,
                state,
                trainable={name for name, _ in self.model.named_parameters()},
                steps=steps[0],
                learning_rate=self.settings.learning_rate,
            )
        # the optimiser steps taken (FedNova normalises by them); under DP-SGD they would
        # tell the site's record count, so they are not reported
        report = SiteReport(local_steps=steps[0])
        if self.dp_sgd is not None:
            state[_DP_HISTORY] = self.dp_sgd.history()
            report = SiteReport(epsilon=self.dp_sgd.epsilon())
        if len(state) or state.round:  # nothing to keep: no file
            self.state.save(run, site, instruction.round, state)
        return FitResult(params=trained, num_examples=n, metrics=metrics, report=report)

    def evaluate(self, params: Params, instruction: Instruction) -> Metrics:
        """Metrics of ``params`` on the site's held-out test set.

        With ``instruction.settings.personal`` (a personalised evaluation) the site's own
        layers replace the federation's and, if asked, the model is fine-tuned on the site's
        training records first (:mod:`medfed.site.personal`)."""
        load_params(self.model, split_control(params)[0])
        if instruction.settings.personal is not None:
            self._personalise(instruction)
        self.model.eval()
        with _seeded(instruction.seed % 2**64, self.device), torch.no_grad():
            metrics = self._evaluate(self.model, self.data.x_test, self.data.y_test, self.spec)
        return _completed(metrics, self.data.num_test, "evaluate")

    def _personalise(self, instruction: Instruction) -> None:
        personal = instruction.settings.personal
        assert personal is not None
        state = self.state.latest(instruction.run, self.data.name)
        restore_layers(self.model, state, personal_names(self.model, personal.layers))
        if not personal.finetune_epochs:
            return
        if self.dp_sgd is not None:
            raise ValueError("fine-tuning is not covered by DP-SGD's ε; personalise without it")
        seed = instruction.seed % 2**63

        def train(model: nn.Module, data: SiteData, epochs: int = 1) -> None:
            ctx = TrainContext(
                settings=replace(self.settings, local_epochs=epochs),
                spec=self.spec,
                seed=seed,
                round=instruction.round,
                config=instruction.settings.task,
                device=self.device,
                generator=torch.Generator().manual_seed(seed),
                state=state.copy(),
            )
            with _seeded(seed, self.device):
                model.train()
                self._train(model, data, ctx)

        def evaluate(model: nn.Module, data: SiteData) -> Metrics:
            model.eval()
            with torch.no_grad():
                return self._evaluate(model, data.x_test, data.y_test, self.spec)

        epochs = best_finetune_epochs(
            self.model,
            self._train_data,
            max_epochs=personal.finetune_epochs,
            fraction=personal.validation_fraction,
            seed=seed,
            train_epoch=train,
            evaluate=evaluate,
        )
        if epochs:
            train(self.model, self._train_data, epochs)


@contextlib.contextmanager
def _counting_steps() -> Iterator[list[int]]:
    """Counts the optimiser steps a train function takes (any optimiser it builds; a DP
    optimiser's wrapped one counted once)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    steps = [0]

    def count(optimizer: Any, args: Any, kwargs: Any) -> None:
        if not hasattr(optimizer, "original_optimizer"):  # Opacus's wrapper: its inner counts
            steps[0] += 1

    handle = register_optimizer_step_post_hook(count)
    try:
        yield steps
    finally:
        handle.remove()


def _completed(metrics: Metrics | None, n: int, role: str) -> Metrics:
    if metrics is None:
        return Metrics(num_examples=n)
    if not isinstance(metrics, Metrics):
        raise TypeError(
            f"the task's {role} function must return medfed.records.Metrics, "
            f"got {type(metrics).__name__}"
        )
    return metrics if metrics.num_examples else replace(metrics, num_examples=n)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG for the block, and restore the caller's state afterwards.

    Only the CPU generator (and CUDA's when training there) is seeded: ``torch.manual_seed``
    also queues lazy seeding of every accelerator backend, which costs more than a small
    model's whole evaluation.
    """
    cuda = device.type == "cuda"
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed_all(seed)
        yield
