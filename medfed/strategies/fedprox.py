"""FedProx (Li et al., MLSys 2020) and FedAvgM (Hsu, Qi & Brown, 2019).

FedProx: "Federated Optimization in Heterogeneous Networks" adds a proximal term
``μ/2 · ‖w − w_global‖²`` to every site's local objective, so a site's model cannot drift far
from the round's global model however many local steps it takes; the server aggregates as
FedAvg. The term is the site trainer's (:func:`medfed.site.torch_app.default_train` reads
``RoundSettings.proximal_mu``); this strategy only sends μ. With μ = 0 it is FedAvg, step for
step.

FedAvgM: "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
Classification" keeps server momentum over the round's mean delta ``Δ``::

    v ← β·v + Δ
    x ← x + η·v

(``v₀ = 0``). With β = 0 and η = 1 it is FedAvg. The momentum ``v`` is the strategy's state,
checkpointed with every round. Both need only the weighted mean of the updates, so both run
under secure aggregation.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from medfed.messages import RoundSettings
from medfed.records import Params
from medfed.strategies.base import Aggregate, Aggregator, Strategy, StrategyState
from medfed.strategies.fedavg import FedAvg, MeanDelta, apply_delta

__all__ = ["FedAvgM", "FedProx"]


class FedProx(FedAvg):
    """FedAvg's aggregation; every site trains with the proximal term μ/2‖w − w_t‖²."""

    name = "fedprox"
    parameters: ClassVar[dict[str, str]] = {
        "mu": "proximal weight μ ≥ 0 (0: FedAvg) [0.01]",
        "server_lr": "server step size [1.0]",
    }

    def __init__(
        self, *, fraction: float = 1.0, min_sites: int = 1, mu: float = 0.01, server_lr: float = 1.0
    ) -> None:
        super().__init__(fraction=fraction, min_sites=min_sites, server_lr=server_lr)
        if not (math.isfinite(mu) and mu >= 0):
            raise ValueError(f"mu = {mu} must be a number >= 0 (see `medfed strategy list`)")
        self.mu = float(mu)

    def round_settings(self, *, round: int) -> RoundSettings:
        return RoundSettings(proximal_mu=self.mu)


class FedAvgM(Strategy):
    """FedAvg with server momentum; see the module for the update rule."""

    name = "fedavgm"
    parameters: ClassVar[dict[str, str]] = {
        "server_lr": "server step size η [1.0]",
        "momentum": "server momentum β in [0, 1) [0.9]",
    }

    def __init__(
        self,
        *,
        fraction: float = 1.0,
        min_sites: int = 1,
        server_lr: float = 1.0,
        momentum: float = 0.9,
    ) -> None:
        super().__init__(fraction=fraction, min_sites=min_sites)
        if not (math.isfinite(server_lr) and server_lr > 0):
            raise ValueError(f"server_lr = {server_lr} must be a positive number")
        if not (math.isfinite(momentum) and 0 <= momentum < 1):
            raise ValueError(f"momentum = {momentum} must be in [0, 1)")
        self.server_lr, self.momentum = float(server_lr), float(momentum)

    def init_state(self, params: Params) -> StrategyState:
        tensors = [
            (f"v.{name}", np.zeros(value.shape, value.dtype))
            for name, value in params.items()
            if value.dtype.kind == "f"
        ]
        return StrategyState(Params(tensors), {"rounds": 0})

    def aggregator(self, *, round: int, params: Params, state: StrategyState) -> Aggregator:
        return MeanDelta(params, state, self._step)

    def _step(self, params: Params, mean: Params | None, state: StrategyState) -> Aggregate:
        if mean is None:
            return Aggregate(params, state)
        out: list[tuple[str, npt.NDArray[Any]]] = []
        velocity: list[tuple[str, npt.NDArray[Any]]] = []
        for name, value in params.items():
            delta = np.asarray(mean[name])
            if value.dtype.kind != "f":  # a counter: the plain mean step
                out.append((name, apply_delta(Params({name: value}), Params({name: delta}))[name]))
                continue
            v_old: npt.NDArray[np.floating[Any]] = state.tensors[f"v.{name}"]  # type: ignore[assignment]
            d: npt.NDArray[np.floating[Any]] = delta.astype(value.dtype, copy=False)
            v: npt.NDArray[np.floating[Any]] = (self.momentum * v_old + d).astype(value.dtype)
            x: npt.NDArray[np.floating[Any]] = value  # type: ignore[assignment]
            new = (x + self.server_lr * v).astype(value.dtype)
            for arr in (v, new):
                arr.flags.writeable = False
            out.append((name, new))
            velocity.append((f"v.{name}", v))
        rounds = int(state.values.get("rounds", 0)) + 1
        return Aggregate(Params(out), StrategyState(Params(velocity), {"rounds": rounds}))
