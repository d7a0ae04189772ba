"""The task: what a researcher writes to say which model a federation trains, and how.

A task is a Python module with one :class:`Task` in it::

    from torch import nn
    from medfed.site.task import Task

    def build_model(spec):                       # spec: medfed.data.base.DataSpec
        return nn.Sequential(nn.Linear(spec.input_shape[0], 16), nn.ReLU(),
                             nn.Linear(16, spec.n_outputs))

    task = Task(model=build_model)               # default training and evaluation

``train`` and ``evaluate`` replace the default loop and the default metrics
(:func:`medfed.site.torch_app.default_train` / :func:`~medfed.site.torch_app.default_evaluate`,
which have exactly the :data:`TrainFn` / :data:`EvalFn` signatures, so a custom function can
call them). The model's output must be ``(batch, *spec.output_shape)``: one logit for binary
labels, one logit per class, one risk score (log hazard ratio) for survival, one prediction
in the target's unit for regression, and ``(n_classes, *spatial)`` logits per pixel for
segmentation.

torch is imported only when a task builds or runs a model, so importing this module (and
``medfed``) stays light.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from medfed.config import TrainSettings
from medfed.data.base import DataSpec, SiteData
from medfed.errors import TaskLoadError
from medfed.messages import RoundSettings
from medfed.records import ConfigValue, Metrics, Params
from medfed.site.state import SiteState

if TYPE_CHECKING:
    import torch
    from torch import nn

    from medfed.privacy.config import PrivacyConfig
    from medfed.site.state import SiteStateStore
    from medfed.site.torch_app import TorchSiteApp

__all__ = ["EvalFn", "ModelFn", "Task", "TrainContext", "TrainFn", "default_task"]


@dataclass(frozen=True)
class TrainContext:
    """Everything a training function may need besides the model and the data.

    ``generator`` is a CPU ``torch.Generator`` seeded from the instruction's seed: draw all
    shuffling from it (``torch.randperm(n, generator=ctx.generator)``) and the training is
    reproducible. The global torch RNG (dropout, augmentation) is seeded too, for the call.
    ``round_settings`` is what the strategy sent for this round (for example
    ``round_settings.proximal_mu``, FedProx's μ); ``config`` is its ``task`` part, a task's own
    options. ``state`` is the site's memory across rounds (:mod:`medfed.site.state`): what the
    train function leaves in it is saved after the round, where the site is, and handed back
    in the site's next round, also after a restart.
    """

    settings: TrainSettings
    spec: DataSpec
    seed: int
    round: int
    config: Mapping[str, ConfigValue]
    device: torch.device
    generator: torch.Generator
    round_settings: RoundSettings = field(default_factory=RoundSettings)
    state: SiteState = field(default_factory=SiteState)


ModelFn = Callable[[DataSpec], "nn.Module"]
"""Builds a fresh, untrained model for a data spec."""

TrainFn = Callable[["nn.Module", SiteData, TrainContext], Metrics | None]
"""Trains the model in place on ``data.x_train``/``data.y_train``; returns training metrics.

The model is already on ``ctx.device`` and in train mode; ``data``'s test arrays are empty
(the held-out patients are for evaluation only). ``num_examples`` of the returned
metrics defaults to the site's training set size when left at 0 (or when None is returned).
"""

EvalFn = Callable[["nn.Module", npt.NDArray[Any], npt.NDArray[Any], DataSpec], Metrics]
"""Evaluates the model on held-out features and labels (numpy); returns metrics.

Called with the model in eval mode and gradients off.
"""


def _describe(obj: object) -> str:
    return f"{type(obj).__name__} {obj!r}" if not callable(obj) else repr(obj)


def _check_callable(role: str, fn: object, n_args: int) -> None:
    if not callable(fn):
        raise TaskLoadError(
            f"Task({role}=...) must be a function, got {_describe(fn)}; "
            f"pass the function itself, without calling it"
        )
    try:
        inspect.signature(fn).bind(*range(n_args))
    except TypeError:
        raise TaskLoadError(
            f"Task({role}=...) must accept {n_args} positional argument"
            f"{'s' if n_args > 1 else ''}, but {getattr(fn, '__name__', fn)!r} "
            f"has the signature {inspect.signature(fn)}"
        ) from None
    except ValueError:  # some builtins have no signature: accept them
        pass


class Task:
    """A model builder, and optionally a training loop and an evaluation, for one federation.

    ``model(spec)`` must return a fresh ``torch.nn.Module`` whose output has shape
    ``(batch, *spec.output_shape)``; this is checked on a dry run when the model is built.
    """

    __slots__ = ("evaluate", "is_default", "model", "name", "train")

    def __init__(
        self,
        model: ModelFn,
        *,
        train: TrainFn | None = None,
        evaluate: EvalFn | None = None,
        name: str | None = None,
    ) -> None:
        torch_nn = sys.modules.get("torch.nn")  # a module object implies torch is imported
        if torch_nn is not None and isinstance(model, torch_nn.Module):
            raise TaskLoadError(
                f"Task(model=...) takes a function that builds the model, not a model object "
                f"({type(model).__name__}); write def build_model(spec): return "
                f"{type(model).__name__}(...) and pass build_model"
            )
        _check_callable("model", model, 1)
        if train is not None:
            _check_callable("train", train, 3)
        if evaluate is not None:
            _check_callable("evaluate", evaluate, 4)
        if name is not None and (not isinstance(name, str) or not name):
            raise TaskLoadError(f"Task(name=...) must be a non-empty string, got {name!r}")
        self.model = model
        self.train = train
        self.evaluate = evaluate
        self.name = name or getattr(model, "__name__", type(model).__name__)
        self.is_default = False
        """True for :func:`default_task`'s tasks, which any process can rebuild from the spec."""

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}"]
        for role in ("train", "evaluate"):
            fn = getattr(self, role)
            if fn is not None:
                parts.append(f"{role}={getattr(fn, '__name__', fn)!r}")
        return f"Task({', '.join(parts)})"

    def build_model(self, spec: DataSpec) -> nn.Module:
        """Build the model and check it on a dry run (one batch of zeros, in eval mode).

        Uses the global torch RNG for initialisation; :meth:`initial_params` seeds it.
        """
        import torch
        from torch import nn

        try:
            model = self.model(spec)
        except TaskLoadError:
            raise
        except Exception as exc:
            raise TaskLoadError(
                f"task {self.name!r}: building the model failed with {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(model, nn.Module):
            raise TaskLoadError(
                f"task {self.name!r}: the model function must return a torch.nn.Module, "
                f"got {type(model).__name__}"
            )
        self._dry_run(model, spec, torch)
        return model

    def _dry_run(self, model: nn.Module, spec: DataSpec, torch: Any) -> None:
        dtype, device = torch.float32, None
        for param in model.parameters():
            device = param.device
            if param.is_floating_point():
                dtype = param.dtype
            break
        x = torch.zeros((2, *spec.input_shape), dtype=dtype, device=device)
        was_training = model.training
        model.eval()  # no running-statistics update, no dropout
        try:
            with torch.no_grad():
                out = model(x)
        except Exception as exc:
            raise TaskLoadError(
                f"task {self.name!r}: the model fails on an input of shape "
                f"(batch, {', '.join(map(str, spec.input_shape))}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            model.train(was_training)
        expected = (2, *spec.output_shape)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        if shape != expected:
            got = f"shape {shape}" if shape is not None else type(out).__name__
            wanted = ", ".join(map(str, spec.output_shape))
            raise TaskLoadError(
                f"task {self.name!r}: the model must output (batch, {wanted}) "
                f"for {spec.kind.value} data ({_outputs_hint(spec)}), but gave {got}; "
                "change the width of its last layer"
            )

    def initial_params(self, spec: DataSpec, *, seed: int) -> Params:
        """The model's initial weights, built under ``torch.manual_seed(seed)``.

        Deterministic for a given seed; the caller's torch RNG state is left untouched.
        """
        import torch

        from medfed.site.torch_app import params_from_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed % 2**64)
            model = self.build_model(spec)
        return params_from_model(model)

    def site_app(
        self,
        data: SiteData,
        spec: DataSpec,
        settings: TrainSettings,
        *,
        device: str | torch.device | None = None,
        privacy: PrivacyConfig | None = None,
        rounds: int | None = None,
        state: SiteStateStore | None = None,
    ) -> TorchSiteApp:
        """A :class:`~medfed.site.app.SiteApp` that trains this task on one site's data.

        ``device`` defaults to CUDA when available, else the CPU. ``privacy`` with
        ``dp = "sample"`` trains with DP-SGD (see :class:`~medfed.site.torch_app.TorchSiteApp`).
        ``state`` keeps the site's state between rounds (in memory when not given).
        """
        from medfed.site.torch_app import TorchSiteApp

        return TorchSiteApp(
            self,
            data,
            spec,
            settings,
            device=device,
            privacy=privacy,
            rounds=rounds,
            state=state,
        )


def _outputs_hint(spec: DataSpec) -> str:
    return {
        "binary": "one logit",
        "multiclass": f"one logit per class, {spec.n_classes} classes",
        "survival": "one risk score",
        "regression": "one prediction in the target's unit",
        "segmentation": f"one logit per class and pixel, {spec.n_classes} classes",
    }[spec.kind.value]


def _default_model(spec: DataSpec) -> nn.Module:
    from medfed.site.models import default_model

    return default_model(spec)


def default_task(spec: DataSpec) -> Task:
    """The task used when none is given: a default model for the spec, default training.

    Raises :class:`~medfed.errors.TaskLoadError` when no default model fits the data.
    """
    if spec.kind.value == "segmentation":
        kind = "unet3d" if spec.is_volume else "unet2d"
    elif spec.is_image:
        kind = "cnn"
    elif len(spec.input_shape) == 1:
        kind = {"survival": "cox", "regression": "regressor"}.get(spec.kind.value, "mlp")
    else:
        raise TaskLoadError(
            f"there is no default model for inputs of shape {spec.input_shape}; "
            "write a task module with your own model (see examples/breast_mlp.py)"
        )
    task = Task(model=_default_model, name=f"default-{kind}")
    task.is_default = True
    return task
