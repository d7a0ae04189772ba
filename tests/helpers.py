"""Small, real site apps and factories for tests (numpy only, picklable for process pools)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medfed.records import Instruction, Metrics, Params
from medfed.site.app import FitResult
from medfed.site.runtime import SiteRuntime


@dataclass
class ShiftApp:
    """Training adds a site-specific constant; evaluation reports the params' mean."""

    shift: float
    num_examples: int
    fail_on_round: int = -1
    nan_on_round: int = -1

    def fit(self, params: Params, instruction: Instruction) -> FitResult:
        if instruction.round == self.fail_on_round:
            raise RuntimeError("disk full")
        rng = np.random.default_rng(instruction.seed)
        out = []
        for k, v in params.items():
            new = v + v.dtype.type(self.shift) + rng.standard_normal(v.shape).astype(v.dtype) * 1e-3
            if instruction.round == self.nan_on_round:
                new.reshape(-1)[0] = np.nan
            out.append((k, new))
        return FitResult(Params(out), self.num_examples, Metrics(num_examples=self.num_examples))

    def evaluate(self, params: Params, instruction: Instruction) -> Metrics:
        mean = float(np.mean(np.concatenate([v.reshape(-1) for v in params.values()])))
        return Metrics(num_examples=self.num_examples, loss=mean)


@dataclass
class ShiftSites:
    """A picklable factory of ShiftApp sites: site i shifts by i and has 10·(i+1) examples."""

    n: int
    fail: dict[str, int] | None = None
    nan: dict[str, int] | None = None

    @property
    def site_names(self) -> list[str]:
        return [f"site-{i}" for i in range(self.n)]

    def make(self, name: str) -> SiteRuntime:
        i = self.site_names.index(name)
        app = ShiftApp(
            shift=float(i),
            num_examples=10 * (i + 1),
            fail_on_round=(self.fail or {}).get(name, -1),
            nan_on_round=(self.nan or {}).get(name, -1),
        )
        return SiteRuntime(name, app)


def model(size: int = 5) -> Params:
    return Params({"w": np.zeros((size, 2), np.float32), "b": np.zeros(2, np.float32)})
