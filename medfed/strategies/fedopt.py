"""Adaptive server optimisers: FedAdam, FedYogi, FedAdagrad (Reddi et al., ICLR 2021).

Algorithm 2 of "Adaptive Federated Optimization": the round's mean delta ``Δ`` (the example-
weighted mean of the sites' updates, so a secure sum is all it needs) is a pseudo-gradient,
and the server keeps first and second moments across rounds::

    m ← β₁·m + (1 − β₁)·Δ
    v ← v + Δ²                                   (FedAdagrad)
    v ← β₂·v + (1 − β₂)·Δ²                       (FedAdam)
    v ← v − (1 − β₂)·Δ²·sign(v − Δ²)             (FedYogi)
    x ← x + η·m / (√v + τ)

with ``m₋₁ = 0`` and ``v₋₁ = τ²``, no bias correction (as in the paper). The moments are the
strategy's state (:class:`~medfed.strategies.base.StrategyState`), checkpointed with every
round, so a restarted run continues with the same moments. Non-float tensors (a batch-norm
counter) take the plain mean step.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from medfed.records import Params
from medfed.strategies.base import Aggregate, Aggregator, Strategy, StrategyState
from medfed.strategies.fedavg import MeanDelta, apply_delta

__all__ = ["FedAdagrad", "FedAdam", "FedOpt", "FedYogi"]

Variant = Literal["adam", "yogi", "adagrad"]


class FedOpt(Strategy):
    """A server optimiser over the round's mean delta; see the module for the update rules."""

    name = "fedopt"
    variant: ClassVar[Variant] = "adam"
    parameters: ClassVar[dict[str, str]] = {
        "server_lr": "server step size η [0.01]",
        "beta1": "first-moment decay β₁ in [0, 1) [0.9]",
        "beta2": "second-moment decay β₂ in [0, 1) [0.99] (FedAdagrad: unused)",
        "tau": "adaptivity τ > 0 [1e-3]",
    }

    def __init__(
        self,
        *,
        fraction: float = 1.0,
        min_sites: int = 1,
        server_lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        super().__init__(fraction=fraction, min_sites=min_sites)
        for name, value, ok in (
            ("server_lr", server_lr, server_lr > 0),
            ("beta1", beta1, 0 <= beta1 < 1),
            ("beta2", beta2, 0 <= beta2 < 1),
            ("tau", tau, tau > 0),
        ):
            if not (math.isfinite(value) and ok):
                raise ValueError(f"{name} = {value} is out of range (see `medfed strategy list`)")
        self.server_lr, self.beta1, self.beta2, self.tau = server_lr, beta1, beta2, tau

    def init_state(self, params: Params) -> StrategyState:
        tensors: list[tuple[str, npt.NDArray[Any]]] = []
        for name, value in params.items():
            if value.dtype.kind == "f":
                tensors.append((f"m.{name}", np.zeros(value.shape, value.dtype)))
                tensors.append((f"v.{name}", np.full(value.shape, self.tau**2, value.dtype)))
        return StrategyState(Params(tensors), {"rounds": 0})

    def aggregator(self, *, round: int, params: Params, state: StrategyState) -> Aggregator:
        return MeanDelta(params, state, self._step)

    def _step(self, params: Params, mean: Params | None, state: StrategyState) -> Aggregate:
        if mean is None:
            return Aggregate(params, state)
        b1, b2 = self.beta1, self.beta2
        out: list[tuple[str, npt.NDArray[Any]]] = []
        moments: list[tuple[str, npt.NDArray[Any]]] = []
        for name, value in params.items():
            delta = np.asarray(mean[name])
            if value.dtype.kind != "f":
                out.append((name, apply_delta(Params({name: value}), Params({name: delta}))[name]))
                continue
            d: npt.NDArray[np.floating[Any]] = delta.astype(value.dtype, copy=False)
            m_old: npt.NDArray[np.floating[Any]] = state.tensors[f"m.{name}"]  # type: ignore[assignment]
            v_old: npt.NDArray[np.floating[Any]] = state.tensors[f"v.{name}"]  # type: ignore[assignment]
            m = b1 * m_old + (1 - b1) * d
            d2 = d * d
            if self.variant == "adagrad":
                v = v_old + d2
            elif self.variant == "adam":
                v = b2 * v_old + (1 - b2) * d2
            else:
                v = v_old - (1 - b2) * d2 * np.sign(v_old - d2)
            new = (value + self.server_lr * m / (np.sqrt(v) + self.tau)).astype(value.dtype)
            for arr in (m, v, new):
                arr.flags.writeable = False
            out.append((name, new))
            moments += [(f"m.{name}", m.astype(value.dtype)), (f"v.{name}", v.astype(value.dtype))]
        rounds = int(state.values.get("rounds", 0)) + 1
        return Aggregate(Params(out), StrategyState(Params(moments), {"rounds": rounds}))


class FedAdam(FedOpt):
    """Adam on the server over the round's mean delta (Reddi et al. 2021)."""

    name = "fedadam"
    variant = "adam"


class FedYogi(FedOpt):
    """Yogi on the server: a second moment that grows more cautiously than Adam's."""

    name = "fedyogi"
    variant = "yogi"


class FedAdagrad(FedOpt):
    """Adagrad on the server: the squared deltas summed over rounds."""

    name = "fedadagrad"
    variant = "adagrad"
