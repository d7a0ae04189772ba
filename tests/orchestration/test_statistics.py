"""STATS exchanges through real backends, in the clear and under secure aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from medfed.config import BackendConfig, DataConfig
from medfed.data import load_dataset
from medfed.data.statistics import Statistic, StatsQuery
from medfed.orchestration.statistics import simulate_statistics

EHR = DataConfig(name="synthetic-ehr", options={"standardize": False})


def _pooled(config: DataConfig) -> tuple[tuple[str, ...], np.ndarray]:
    d = load_dataset(config.name, num_sites=config.sites, seed=0, options=config.options)
    x = np.concatenate([np.concatenate([s.x_train, s.x_test]) for s in d.sites])
    return d.spec.feature_names, x.astype(np.float64)


@pytest.mark.parametrize("secure", [False, True])
def test_federated_mean_and_variance_equal_the_pooled_ones(secure: bool) -> None:
    names, pooled = _pooled(EHR)
    result = simulate_statistics(EHR, StatsQuery(), secure_aggregation=secure)
    assert result.secure is secure and not result.failures
    assert len(result.sites) == 5
    for i, name in enumerate(names):
        f = result.federation.features[name]
        assert f.count == pooled.shape[0]
        assert f.mean == pytest.approx(pooled[:, i].mean(), rel=1e-9, abs=1e-9)
        assert f.variance == pytest.approx(pooled[:, i].var(ddof=1), rel=1e-9, abs=1e-9)
    # the coordinator of a secure exchange never saw a site's sums: no per-site figures
    assert (result.per_site == {}) is secure


def test_secure_shapes_equal_the_clear_ones_and_a_process_pool_gives_the_same() -> None:
    query = StatsQuery(statistics=(Statistic.HISTOGRAM, Statistic.QUANTILES), per_site=False)
    clear = simulate_statistics(EHR, query)
    secure = simulate_statistics(EHR, query, secure_aggregation=True)
    pool = simulate_statistics(EHR, query, backend=BackendConfig(kind="process", workers=2))
    for name, f in clear.federation.features.items():
        s, p = secure.federation.features[name], pool.federation.features[name]
        assert f.histogram == s.histogram == p.histogram
        for q, v in f.quantiles.items():
            assert s.quantiles[q] == pytest.approx(v, abs=1e-6)
            assert p.quantiles[q] == v


def test_survival_curve_over_sites_equals_lifelines_pooled() -> None:
    from lifelines import KaplanMeierFitter

    lung = DataConfig(name="lung")
    d = load_dataset("lung", seed=0)
    y = np.concatenate([np.concatenate([s.y_train, s.y_test]) for s in d.sites])
    grid = (100.0, 200.0, 300.0, 400.0, 500.0, 700.0)
    query = StatsQuery(statistics=(Statistic.SURVIVAL,), time_grid=grid, per_site=False)
    curve = simulate_statistics(lung, query, secure_aggregation=True).federation.survival
    assert curve is not None and curve.times
    carried = np.append(np.asarray(curve.times), np.inf)[np.searchsorted(curve.times, y[:, 0])]
    beyond = ~np.isfinite(carried)
    fitter = KaplanMeierFitter().fit(np.where(beyond, 1e9, carried), y[:, 1] * ~beyond)
    expected = fitter.survival_function_at_times(list(curve.times)).to_numpy()
    np.testing.assert_allclose(curve.survival, expected, rtol=1e-12)


def test_a_site_with_too_few_records_declines_and_the_others_answer() -> None:
    lung = DataConfig(name="lung")
    result = simulate_statistics(lung, StatsQuery(min_count=20), secure_aggregation=True)
    sizes = {s.name: s.num_train + s.num_test for s in load_dataset("lung", seed=0).sites}
    declined = {s for s, n in sizes.items() if n < 20}
    assert declined and set(result.failures) == declined
    assert set(result.sites) == set(sizes) - declined
    for site, reason in result.failures.items():  # the refusal does not say how many
        assert "fewer than the minimum count 20" in reason
        assert str(sizes[site]) not in reason.replace("20", ""), reason
