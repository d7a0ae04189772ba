"""FedAvg (McMahan et al., 2017): the example-weighted mean of the sites' updates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from medfed.math.aggregate import WeightedMean
from medfed.records import Params, Update
from medfed.scan import windows
from medfed.strategies.base import Aggregate, Aggregator, SecureSum, Strategy, StrategyState

__all__ = ["FedAvg", "MeanDelta", "apply_delta"]


def apply_delta(params: Params, delta: Params | None, *, scale: float = 1.0) -> Params:
    """``params + scale × delta`` as new read-only arrays (no delta: params unchanged)."""
    if delta is None:
        return params
    out = []
    for name, value in params.items():
        step: npt.NDArray[Any] = delta[name].reshape(-1)
        new = np.empty(value.shape, value.dtype)
        flat, at = new.reshape(-1), 0
        # in windows: a memory-mapped model's pages are released behind the scan
        for part in windows(value):
            end = at + part.size
            d = step[at:end] if scale == 1.0 else step[at:end] * value.dtype.type(scale)
            np.add(part, d, out=flat[at:end], casting="unsafe")
            at = end
        new.flags.writeable = False
        out.append((name, new))
    return Params(out)


class MeanDelta(Aggregator):
    """The weighted mean of the round's deltas, streamed; or the secure sum's mean as it is.

    ``finish`` hands the mean to ``step`` (the server's update rule: ``params + lr × mean`` for
    FedAvg, an adaptive optimiser for FedOpt) together with the strategy's state.
    """

    def __init__(self, params: Params, state: StrategyState, step: Step) -> None:
        self._params = params
        self._state = state
        self._mean = WeightedMean(params)
        self._sum: SecureSum | None = None
        self._step = step

    def add(self, site: str, update: Update, *, steps: int | None = None) -> None:
        if self._sum is not None:
            raise TypeError("a round has either individual updates or one secure sum")
        self._mean.add(update.delta, weight=float(update.num_examples))

    def add_sum(self, total: SecureSum) -> None:
        if self._sum is not None or self._mean.count:
            raise TypeError("a round has either individual updates or one secure sum")
        self._sum = total

    def finish(self) -> Aggregate:
        mean = self._sum.mean if self._sum is not None else self._mean.result()
        return self._step(self._params, mean, self._state)


Step = Callable[[Params, "Params | None", StrategyState], Aggregate]
"""The server's update rule: (params, mean delta or None, state) -> next params and state."""


class FedAvg(Strategy):
    """The mean of the updates weighted by each site's training examples (McMahan et al. 2017)."""

    name = "fedavg"
    parameters: ClassVar[dict[str, str]] = {"server_lr": "server step size [1.0]"}

    def __init__(
        self, *, fraction: float = 1.0, min_sites: int = 1, server_lr: float = 1.0
    ) -> None:
        super().__init__(fraction=fraction, min_sites=min_sites)
        if not (server_lr > 0 and np.isfinite(server_lr)):
            raise ValueError("server_lr must be a positive number")
        self.server_lr = server_lr

    def aggregator(self, *, round: int, params: Params, state: StrategyState) -> Aggregator:
        return MeanDelta(params, state, self._step)

    def _step(self, params: Params, mean: Params | None, state: StrategyState) -> Aggregate:
        return Aggregate(apply_delta(params, mean, scale=self.server_lr), state)
