from __future__ import annotations

import numpy as np
import pytest

from medfed.errors import RoundFailed
from medfed.orchestration.backends import InProcessBackend, ProcessPoolBackend
from medfed.orchestration.driver import RoundDriver
from medfed.records import Params
from medfed.site.runtime import SiteRuntime
from medfed.strategies import FedAvg
from tests.helpers import ShiftApp, ShiftSites, model


def _run(backend, *, rounds=3, seed=0, **strategy) -> tuple[Params, list]:
    results = []

    class Keep:
        def on_round_end(self, result) -> None:
            results.append(result)

    driver = RoundDriver(
        strategy=FedAvg(**strategy), backend=backend, seed=seed, observers=[Keep()]
    )
    try:
        params = driver.run(model(), rounds=rounds)
    finally:
        backend.close()
    return params, results


def test_fedavg_moves_by_the_example_weighted_mean_shift() -> None:
    params, results = _run(InProcessBackend(ShiftSites(3)), rounds=1)
    # site i shifts by i with 10(i+1) examples: (0*10 + 1*20 + 2*30) / 60
    np.testing.assert_allclose(params["b"], 80 / 60, atol=5e-3)
    assert results[0].trained == ("site-0", "site-1", "site-2")
    assert set(results[0].eval_metrics) == {"site-0", "site-1", "site-2"}


def test_same_seed_repeats_bit_for_bit_and_other_seed_differs() -> None:
    a, _ = _run(InProcessBackend(ShiftSites(4)), seed=7, fraction=0.5)
    b, _ = _run(InProcessBackend(ShiftSites(4)), seed=7, fraction=0.5)
    c, _ = _run(InProcessBackend(ShiftSites(4)), seed=8, fraction=0.5)
    assert a == b
    assert a != c


def test_process_pool_gives_the_same_model_as_in_process() -> None:
    a, ra = _run(InProcessBackend(ShiftSites(5)), seed=3, fraction=0.6)
    b, rb = _run(ProcessPoolBackend(ShiftSites(5), workers=2), seed=3, fraction=0.6)
    assert a == b
    assert [r.trained for r in ra] == [r.trained for r in rb]


def test_partial_participation_samples_fraction_with_minimum() -> None:
    _, results = _run(InProcessBackend(ShiftSites(10)), rounds=4, fraction=0.3, min_sites=4)
    sizes = {len(r.trained) for r in results}
    assert sizes == {4}
    assert len({r.trained for r in results}) > 1  # different sites in different rounds


def test_a_failing_site_is_reported_and_left_out() -> None:
    sites = ShiftSites(3, fail={"site-2": 2}, nan={"site-1": 3})
    _, results = _run(InProcessBackend(sites), rounds=3, min_sites=2)
    assert results[1].trained == ("site-0", "site-1")
    failure = results[1].failures["site-2"]
    assert failure.kind == "RuntimeError" and "disk full" in failure.message
    assert "InvalidUpdate" in str(results[2].failures["site-1"])


def test_round_fails_below_the_minimum() -> None:
    sites = ShiftSites(3, fail={"site-1": 2, "site-2": 2})
    with pytest.raises(RoundFailed, match=r"round 2: 1 of 3 sites .* at least 2"):
        _run(InProcessBackend(sites), rounds=3, min_sites=2)


def test_dead_worker_becomes_a_failure_and_is_replaced() -> None:
    backend = ProcessPoolBackend(CrashingSites(4), workers=2)  # worker 1 hosts sites 1 and 3
    driver = RoundDriver(strategy=FedAvg(min_sites=2), backend=backend, seed=0)
    try:
        params = driver.run_round(1, model()).params
        result = driver.run_round(2, params)  # site-1 kills its worker process
        assert set(result.failures) == {"site-1", "site-3"}
        assert result.failures["site-1"].kind == "WorkerDied"
        assert result.trained == ("site-0", "site-2")
        result = driver.run_round(3, result.params)  # a new worker took over
        assert result.trained == ("site-0", "site-1", "site-2", "site-3")
    finally:
        backend.close()


def test_timeout_turns_slow_sites_into_failures() -> None:
    backend = ProcessPoolBackend(SlowSites(2), workers=2)
    driver = RoundDriver(
        strategy=FedAvg(min_sites=1), backend=backend, seed=0, timeout=2.0, evaluate_every=0
    )
    try:
        result = driver.train_round(1, model())
        assert result.trained == ("site-0",)
        assert result.failures["site-1"].kind == "Timeout"
    finally:
        backend.close()


class SlowSites(ShiftSites):
    def make(self, name):
        runtime = super().make(name)
        if name == "site-1":
            import time

            fit = runtime.app.fit

            def slow(params, instruction):
                time.sleep(30)
                return fit(params, instruction)

            runtime.app.fit = slow  # type: ignore[method-assign]
        return runtime


class CrashingSites(ShiftSites):
    def make(self, name):
        runtime = super().make(name)
        if name == "site-1":
            import os

            fit = runtime.app.fit

            def crash(params, instruction):
                if instruction.round == 2:
                    os._exit(1)
                return fit(params, instruction)

            runtime.app.fit = crash  # type: ignore[method-assign]
        return runtime


class ListedSites(ShiftSites):
    """ShiftSites whose backend lists its sites in a given order (each site's app the same)."""

    def __init__(self, order: list[str]) -> None:
        super().__init__(len(order))
        self.order = order

    @property
    def site_names(self) -> list[str]:
        return list(getattr(self, "order", None) or [f"site-{i}" for i in range(self.n)])

    def make(self, name: str) -> SiteRuntime:
        i = int(name.removeprefix("site-"))
        return SiteRuntime(name, ShiftApp(shift=float(i) / 3, num_examples=7 * (i + 1)))


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_the_model_does_not_depend_on_the_order_a_backend_lists_its_sites_in(
    fraction: float,
) -> None:
    """A simulation lists its sites in the data set's order, a federation's coordinator in
    name order: the same run must pick the same sites and sum their updates in the same order
    (float addition is not associative), so both train the same model bit for bit."""
    names = [f"site-{i}" for i in (3, 11, 0, 7, 2, 5)]
    a, ra = _run(InProcessBackend(ListedSites(names)), seed=5, fraction=fraction)
    b, rb = _run(InProcessBackend(ListedSites(sorted(names))), seed=5, fraction=fraction)
    assert [set(r.trained) for r in ra] == [set(r.trained) for r in rb]
    assert all(np.array_equal(a[k], b[k]) for k in a)
