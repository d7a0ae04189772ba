"""Personalisation at a site: layers it keeps for itself, and fine-tuning chosen on its own
validation records.

- **Kept layers** (``PersonalSettings.layers``): ``"norm"`` — every normalisation layer
  (batch, layer, group, instance norm: weights, biases and running statistics; FedBN, Li et
  al. 2021), ``"head"`` — the model's last layer with weights (FedPer, Arivazhagan et al.
  2019). The site trains them with the rest every round, keeps its own copy in its state
  (:mod:`medfed.site.state`) and puts it back over the federation's before training and
  before a personalised evaluation. Its update still holds their change from the global
  model, so the global model stays complete (its norm layers and head are the average of
  the sites'), usable by a hospital that joins later.
- **Fine-tuning** (``PersonalSettings.finetune_epochs``): before a personalised evaluation,
  the site carves a validation split from its *training* records, trains one epoch at a
  time on the rest and measures the validation loss after each; the number of epochs with
  the lowest loss (0: the model as it came) is then trained on all its training records.
  The test records are only ever evaluated on.

Nothing here leaves the site but the evaluation's metrics.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from torch import nn

from medfed.data.base import SiteData
from medfed.messages import PersonalLayers
from medfed.records import Metrics
from medfed.site.state import SiteState

__all__ = ["best_finetune_epochs", "keep_layers", "personal_names", "restore_layers"]

_STATE = "medfed.personal/"
"""Site-state name prefix of the layers a site keeps."""
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
_MIN_RECORDS = 10  # below this, a validation split says nothing: no fine-tuning


def personal_names(model: nn.Module, layers: tuple[PersonalLayers, ...]) -> list[str]:
    """The ``state_dict`` names of the layers a site keeps, in the model's order."""
    keys = list(model.state_dict())
    prefixes: list[str] = []
    if "norm" in layers:
        prefixes += [name for name, m in model.named_modules() if isinstance(m, _NORMS)]
    if "head" in layers:
        with_weights = [name for name, m in model.named_modules() if m._parameters]
        if with_weights:
            prefixes.append(with_weights[-1])
    out = []
    for key in keys:
        owner = key.rpartition(".")[0]
        if owner in prefixes:
            out.append(key)
    return out


def restore_layers(model: nn.Module, state: SiteState, names: list[str]) -> int:
    """Put the site's own copy of ``names`` (if it has one) into the model; how many."""
    own = {n: state[_STATE + n] for n in names if _STATE + n in state}
    if not own:
        return 0
    current = model.state_dict()
    for name, value in own.items():
        target = current[name]
        if tuple(target.shape) != value.shape:
            raise ValueError(
                f"the site's own {name!r} has shape {list(value.shape)} but the model's is "
                f"{list(target.shape)}; the model changed since the site kept its layers"
            )
    import torch

    with torch.no_grad():
        for name, value in own.items():
            current[name].copy_(torch.from_numpy(np.array(value)))
    return len(own)


def keep_layers(model: nn.Module, state: SiteState, names: list[str]) -> None:
    """Save the model's ``names`` as the site's own copy."""
    current = model.state_dict()
    for name in names:
        state[_STATE + name] = current[name].detach().cpu().numpy().copy()


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    held = max(2, round(fraction * n))
    return np.sort(order[held:]), np.sort(order[:held])


def _criterion(metrics: Metrics) -> float | None:
    """Lower is better: the loss, else (survival without events in the split) −C-index."""
    if metrics.loss is not None and math.isfinite(metrics.loss):
        return metrics.loss
    if metrics.c_index is not None:
        return -metrics.c_index
    return None


def best_finetune_epochs(
    model: nn.Module,
    data: SiteData,
    *,
    max_epochs: int,
    fraction: float,
    seed: int,
    train_epoch: Callable[[nn.Module, SiteData], None],
    evaluate: Callable[[nn.Module, SiteData], Metrics],
) -> int:
    """How many epochs of fine-tuning the validation split favours (0 to ``max_epochs``).

    ``train_epoch`` trains the model one epoch on a site's training records, ``evaluate``
    measures it on a site's *test* arrays (here: the validation split). The model is left as
    it was given.
    """
    n = data.num_train
    if max_epochs == 0 or n < _MIN_RECORDS:
        return 0
    fit_rows, val_rows = _split(n, fraction, seed)
    fit = replace(
        data,
        x_train=data.x_train[fit_rows],
        y_train=data.y_train[fit_rows],
        x_test=data.x_test[:0],
        y_test=data.y_test[:0],
    )
    val = replace(
        data,
        x_train=data.x_train[:0],
        y_train=data.y_train[:0],
        x_test=data.x_train[val_rows],
        y_test=data.y_train[val_rows],
    )
    start = copy.deepcopy(model.state_dict())
    best, best_score = 0, _criterion(evaluate(model, val))
    if best_score is None:
        return 0
    for epoch in range(1, max_epochs + 1):
        train_epoch(model, fit)
        score = _criterion(evaluate(model, val))
        if score is not None and score < best_score - 1e-12:
            best, best_score = epoch, score
    model.load_state_dict(start)
    return best
