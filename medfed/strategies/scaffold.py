"""SCAFFOLD (Karimireddy et al., ICML 2020): control variates that correct client drift.

"SCAFFOLD: Stochastic Controlled Averaging for Federated Learning". With heterogeneous sites
and many local steps, FedAvg's sites drift towards their own optima and the average lands
away from the federation's. SCAFFOLD keeps a server control variate ``c`` and one ``c_i`` per
site (estimates of the federation's and the site's gradient); every local step follows the
corrected gradient ``g_i(y) − c_i + c``. After ``K`` local steps of size ``η_l`` a site sets
(the paper's option II)::

    c_i⁺ = c_i − c + (x − y_i) / (K·η_l)

and returns ``Δy_i = y_i − x`` and ``Δc_i = c_i⁺ − c_i``. The server, with ``|S|`` of ``N``
sites in the round::

    x ← x + η_g · mean(Δy)          c ← c + |S|/N · mean(Δc)

Where the pieces live: ``c`` is this strategy's state (checkpointed with every round) and
travels with the model as the params named ``CONTROL_PREFIX + name``
(:meth:`Scaffold.payload`); ``c_i`` is the site's state, kept where the site runs
(:mod:`medfed.site.scaffold`); a site's ``Δc_i`` comes back inside its update under the same
names, so both means are the one weighted mean of the updates: SCAFFOLD needs a sum and runs
under secure aggregation. Both means are weighted by the sites' examples, so ``c`` estimates
the gradient of the same example-weighted objective that FedAvg's mean optimises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from medfed.messages import CONTROL_PREFIX
from medfed.records import Params, Update
from medfed.strategies.base import (
    Aggregate,
    Aggregator,
    SecureSum,
    SitePlan,
    Strategy,
    StrategyState,
)
from medfed.strategies.fedavg import MeanDelta, apply_delta

__all__ = ["Scaffold", "split_control"]


def split_control(params: Params) -> tuple[Params, Params]:
    """``(model params, control variate)`` of a SCAFFOLD payload (the variate's names without
    the prefix); a plain model gives an empty variate."""
    model = [(k, v) for k, v in params.items() if not k.startswith(CONTROL_PREFIX)]
    control = [
        (k.removeprefix(CONTROL_PREFIX), v)
        for k, v in params.items()
        if k.startswith(CONTROL_PREFIX)
    ]
    return Params(model), Params(control)


def _floats(params: Params) -> list[str]:
    return [name for name, value in params.items() if value.dtype.kind == "f"]


class Scaffold(Strategy):
    """SCAFFOLD; see the module for the update rules."""

    name = "scaffold"
    dp_covered: ClassVar[bool] = False
    parameters: ClassVar[dict[str, str]] = {"server_lr": "server step size η_g [1.0]"}

    def __init__(
        self, *, fraction: float = 1.0, min_sites: int = 1, server_lr: float = 1.0
    ) -> None:
        super().__init__(fraction=fraction, min_sites=min_sites)
        if not (math.isfinite(server_lr) and server_lr > 0):
            raise ValueError(f"server_lr = {server_lr} must be a positive number")
        self.server_lr = float(server_lr)
        self._available = 0  # N, the sites the round was sampled from (set each round)

    def init_state(self, params: Params) -> StrategyState:
        zeros = [(f"c.{k}", np.zeros(params[k].shape, params[k].dtype)) for k in _floats(params)]
        return StrategyState(Params(zeros), {"rounds": 0})

    def configure_train(
        self, *, round: int, params: Params, sites: Sequence[str], rng: np.random.Generator
    ) -> list[SitePlan]:
        self._available = len(sites)
        return super().configure_train(round=round, params=params, sites=sites, rng=rng)

    def payload(self, params: Params, state: StrategyState) -> Params:
        control = [(CONTROL_PREFIX + k, state.tensors[f"c.{k}"]) for k in _floats(params)]
        return Params([*params.items(), *control])

    def aggregator(self, *, round: int, params: Params, state: StrategyState) -> Aggregator:
        return _ScaffoldMean(self, params, state)

    def step(
        self, params: Params, mean: Params | None, state: StrategyState, *, contributed: int
    ) -> Aggregate:
        """The server's update from the round's mean of ``(Δy, Δc)`` over ``contributed``
        sites (None: no site contributed, nothing changes)."""
        if mean is None or contributed == 0:
            return Aggregate(params, state)
        dy, dc = split_control(mean)
        new_params = apply_delta(params, dy, scale=self.server_lr)
        # |S| / N: the sites that contributed, of those the round could have asked
        share = contributed / max(self._available, contributed)
        control: list[tuple[str, npt.NDArray[Any]]] = []
        for k in _floats(params):
            c_old: npt.NDArray[Any] = state.tensors[f"c.{k}"]
            step = np.asarray(dc[k]).astype(c_old.dtype, copy=False) * c_old.dtype.type(share)
            c = (c_old + step).astype(c_old.dtype)
            c.flags.writeable = False
            control.append((f"c.{k}", c))
        rounds = int(state.values.get("rounds", 0)) + 1
        return Aggregate(new_params, StrategyState(Params(control), {"rounds": rounds}))


class _ScaffoldMean(MeanDelta):
    """FedAvg's streamed weighted mean over the payload's layout (model and Δc), counting
    the contributors (each update, or the secure sum's sites) for SCAFFOLD's |S|/N."""

    def __init__(self, strategy: Scaffold, params: Params, state: StrategyState) -> None:
        super().__init__(strategy.payload(params, state), state, self._finish_step)
        self._strategy = strategy
        self._model = params
        self._count = 0

    def add(self, site: str, update: Update, *, steps: int | None = None) -> None:
        super().add(site, update, steps=steps)
        if update.num_examples > 0:
            self._count += 1

    def add_sum(self, total: SecureSum) -> None:
        super().add_sum(total)
        self._count = len(total.sites)

    def _finish_step(self, _sent: Params, mean: Params | None, state: StrategyState) -> Aggregate:
        return self._strategy.step(self._model, mean, state, contributed=self._count)
