"""FedAvg (McMahan et al., 2017): the example-weighted mean of the sites' updates."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from medfed.math.aggregate import WeightedMean
from medfed.records import Params, Update
from medfed.scan import windows
from medfed.strategies.base import Aggregator, Strategy

__all__ = ["FedAvg", "apply_delta"]


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


class _MeanDelta(Aggregator):
    def __init__(self, params: Params, server_lr: float) -> None:
        self._params = params
        self._mean = WeightedMean(params)
        self._server_lr = server_lr

    def add(self, site: str, update: Update) -> None:
        self._mean.add(update.delta, weight=float(update.num_examples))

    def finish(self) -> Params:
        return apply_delta(self._params, self._mean.result(), scale=self._server_lr)


class FedAvg(Strategy):
    """Weighted by each site's number of training examples; ``server_lr`` scales the step."""

    name = "fedavg"

    def __init__(
        self, *, fraction: float = 1.0, min_sites: int = 1, server_lr: float = 1.0
    ) -> None:
        super().__init__(fraction=fraction, min_sites=min_sites)
        if not (server_lr > 0 and np.isfinite(server_lr)):
            raise ValueError("server_lr must be a positive number")
        self.server_lr = server_lr

    def aggregator(self, *, round: int, params: Params) -> Aggregator:
        return _MeanDelta(params, self.server_lr)
