"""The round driver's update bounds, on real in-process sites: relative bounds hold a round's
updates and bound the outlier; no bounds (a simulation's default) stream them unchanged; an
absolute cap on claimed examples applies as each update arrives."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medfed.config import UpdateBounds
from medfed.orchestration.backends import InProcessBackend
from medfed.orchestration.driver import RoundDriver, RoundResult
from medfed.site.runtime import SiteRuntime
from medfed.strategies import FedAvg
from tests.helpers import ShiftApp, ShiftSites, model


@dataclass
class OneHugeSite(ShiftSites):
    """Site i shifts by i + 1, except the last, which shifts by 1e6."""

    def make(self, name: str) -> SiteRuntime:
        i = self.site_names.index(name)
        shift = 1e6 if i == self.n - 1 else float(i + 1)
        return SiteRuntime(name, ShiftApp(shift=shift, num_examples=10 * (i + 1)))


def _round(bounds: UpdateBounds | None) -> tuple[RoundResult, float]:
    results: list[RoundResult] = []

    class Keep:
        def on_round_end(self, result: RoundResult) -> None:
            results.append(result)

    backend = InProcessBackend(OneHugeSite(4))
    try:
        driver = RoundDriver(
            strategy=FedAvg(), backend=backend, seed=0, observers=[Keep()], bounds=bounds
        )
        params = driver.run(model(), rounds=1)
    finally:
        backend.close()
    return results[0], float(np.max(np.abs(params["b"])))


def test_relative_bounds_clip_the_outlier_to_its_rounds_median_norm() -> None:
    result, moved = _round(UpdateBounds(norm_factor=10))
    assert set(result.update_norms) == {f"site-{i}" for i in range(4)}
    assert list(result.bounded) == ["site-3"]
    assert "clipped" in result.bounded["site-3"] and "10 x" in result.bounded["site-3"]
    # the lower median norm is site-1's (shift 2): site-3 counts as a shift of at most 20
    assert moved <= (1 * 10 + 2 * 20 + 3 * 30 + 20 * 40) / 100 + 1e-3


def test_without_bounds_updates_stream_unchanged() -> None:
    result, moved = _round(None)
    assert result.bounded == {} and result.update_norms == {}
    assert math.isclose(moved, (1 * 10 + 2 * 20 + 3 * 30 + 1e6 * 40) / 100, rel_tol=1e-4)


def test_an_absolute_cap_on_claims_applies_as_updates_arrive() -> None:
    result, _ = _round(UpdateBounds(norm_factor=0, examples_factor=0, max_examples=15))
    assert sorted(result.bounded) == ["site-1", "site-2", "site-3"]
    assert "counted as 15" in result.bounded["site-3"]
    assert result.update_norms == {}
