"""SCAFFOLD's site side: the drift-corrected local steps and the site's control variate.

The server's control variate ``c`` arrives with the model (:mod:`medfed.strategies.scaffold`);
the site's own ``c_i`` is kept in its state (:mod:`medfed.site.state`: on the node's disk, in a
simulation's run folder), never sent. Every optimiser step the task's train function takes,
whichever optimiser it builds, follows the corrected gradient ``g − c_i + c`` (a pre-step hook
on torch's optimisers, so a task's own training loop is corrected too). After training::

    c_i⁺ = c_i − c + (x − y) / (K·η)     (K optimiser steps of learning rate η)

the site keeps ``c_i⁺`` and sends ``Δc_i = c_i⁺ − c_i`` inside its update. Float buffers
(a batch norm's running statistics) take no gradient steps: their ``Δc`` is 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from medfed.messages import CONTROL_PREFIX
from medfed.records import Params
from medfed.site.state import SiteState

__all__ = ["corrected_steps", "with_control"]

_STATE = "medfed.scaffold.c/"
"""Site-state name prefix of the site's control variate ``c_i``."""


def _site_control(state: SiteState, control: Params) -> dict[str, np.ndarray[Any, Any]]:
    """``c_i`` from the site's state (0 before the site's first SCAFFOLD round)."""
    out = {}
    for name, c in control.items():
        kept = state.get(_STATE + name)
        out[name] = np.zeros(c.shape, c.dtype) if kept is None else kept
    return out


@contextlib.contextmanager
def corrected_steps(model: nn.Module, control: Params, state: SiteState) -> Iterator[None]:
    """Within the block, every optimiser step on ``model``'s parameters uses ``g − c_i + c``."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    site = _site_control(state, control)
    device = next(iter(model.parameters())).device
    correction: dict[int, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if name in control and p.requires_grad:
            c = np.asarray(control[name]) - site[name]
            correction[id(p)] = torch.from_numpy(np.ascontiguousarray(c)).to(device, p.dtype)

    def correct(optimizer: Any, args: Any, kwargs: Any) -> None:
        if hasattr(optimizer, "original_optimizer"):  # a wrapper: its inner one steps
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                extra = correction.get(id(p))
                if extra is not None and p.grad is not None:
                    p.grad.add_(extra)

    handle = register_optimizer_step_pre_hook(correct)
    try:
        yield
    finally:
        handle.remove()


def with_control(
    trained: Params,
    received: Params,
    control: Params,
    state: SiteState,
    *,
    trainable: set[str],
    steps: int,
    learning_rate: float,
) -> Params:
    """The trained params followed by ``c + Δc_i`` under the control names (so that the
    update's delta holds ``Δc_i``); the site's new ``c_i`` is written to ``state``.
    ``trainable``: the model's parameter names (buffers keep ``c_i`` = 0)."""
    site = _site_control(state, control)
    out = list(trained.items())
    for name, c in control.items():
        c_arr = np.asarray(c)
        if steps > 0 and name in trainable:
            moved = np.asarray(received[name], np.float64) - np.asarray(trained[name], np.float64)
            drift = moved / (steps * learning_rate)
            new_site = (site[name] - c_arr + drift).astype(c_arr.dtype)
        else:  # no step taken: nothing learnt about the site's gradient
            new_site = site[name]
        state[_STATE + name] = new_site
        sent = (c_arr + (new_site - site[name])).astype(c_arr.dtype)
        out.append((CONTROL_PREFIX + name, sent))
    return Params(out)
