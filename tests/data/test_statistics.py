"""Federated statistics, the pure core: the sites' sums give the pooled figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfed.data.statistics import (
    FEDERATION,
    Contribution,
    SiteQuery,
    SiteTable,
    Statistic,
    StatsQuery,
    answer_tables,
    contribution,
)
from medfed.data.statistics.exact import digits_length, from_digit_sums, to_digits
from medfed.errors import ConfigError

ALL = tuple(Statistic)


def _tables(seed: int = 0, sizes: tuple[int, ...] = (60, 90, 140)) -> dict[str, SiteTable]:
    rng = np.random.default_rng(seed)
    out = {}
    for i, n in enumerate(sizes):
        x = rng.normal([120 + 5 * i, 0.5, 1e3], [15, 0.2, 50], (n, 3))
        x[rng.random(x.shape) < 0.08] = np.nan
        time = rng.integers(1, 60, n).astype(np.float64)
        event = (rng.random(n) < 0.6).astype(np.float64)
        out[f"site-{i}"] = SiteTable(("bp", "ratio", "count"), x, time, event)
    return out


def _pooled(tables: dict[str, SiteTable]) -> np.ndarray:
    return np.concatenate([t.features for t in tables.values()])


def test_federated_mean_and_variance_equal_the_pooled_ones() -> None:
    tables = _tables()
    pooled = _pooled(tables)
    for stats in ((Statistic.COUNT, Statistic.MEAN, Statistic.VARIANCE), ALL):
        result = answer_tables(tables, StatsQuery(statistics=stats))
        for i, name in enumerate(("bp", "ratio", "count")):
            col = pooled[:, i][~np.isnan(pooled[:, i])]
            f = result.federation.features[name]
            assert f.count == col.size
            assert f.missing == int(np.isnan(pooled[:, i]).sum())
            assert f.mean == pytest.approx(col.mean(), rel=1e-12)
            assert f.variance == pytest.approx(col.var(ddof=1), rel=1e-9)
        for site, table in tables.items():
            col = table.features[:, 0][~np.isnan(table.features[:, 0])]
            assert result.rows[site].features["bp"].mean == pytest.approx(col.mean(), rel=1e-12)


def test_quantiles_are_within_one_fine_bin_of_the_pooled_ones() -> None:
    tables = _tables(1)
    result = answer_tables(tables, StatsQuery(statistics=(Statistic.QUANTILES,)))
    pooled = _pooled(tables)
    for i, name in enumerate(("bp", "ratio")):
        col = pooled[:, i][~np.isnan(pooled[:, i])]
        width = 10 * col.std(ddof=1) / 1000
        for q, value in result.federation.features[name].quantiles.items():
            assert value is not None
            # the order statistic x_(⌈qn⌉) (numpy's "inverted_cdf") lies in the same fine bin
            assert abs(value - np.quantile(col, q, method="inverted_cdf")) <= width + 1e-12


def test_histogram_on_shared_edges_adds_up_over_sites() -> None:
    tables = _tables(2)
    query = StatsQuery(statistics=(Statistic.HISTOGRAM,), edges={"bp": (100.0, 120.0, 140.0)})
    result = answer_tables(tables, query)
    col = _pooled(tables)[:, 0]
    col = col[~np.isnan(col)]
    expected = [(col < 100).sum(), ((col >= 100) & (col < 120)).sum()]
    expected += [((col >= 120) & (col < 140)).sum(), (col >= 140).sum()]
    hist = result.federation.features["bp"].histogram
    assert hist is not None and hist.edges == (100.0, 120.0, 140.0)
    assert list(hist.counts) == [c if c == 0 or c >= 10 else None for c in expected]


def _lifelines_km(times: np.ndarray, events: np.ndarray, at: tuple[float, ...]) -> np.ndarray:
    from lifelines import KaplanMeierFitter

    fitter = KaplanMeierFitter().fit(times, events)
    return np.asarray(fitter.survival_function_at_times(list(at)), np.float64)


def test_kaplan_meier_from_sites_equals_lifelines_pooled_on_the_grid() -> None:
    tables = _tables(3, sizes=(300, 400, 500))
    times = np.concatenate([t.time for t in tables.values()])  # type: ignore[misc]
    events = np.concatenate([t.event for t in tables.values()])  # type: ignore[misc]
    # a grid of every day: the curve is the pooled one itself
    grid = tuple(float(d) for d in range(1, 60))
    query = StatsQuery(statistics=(Statistic.SURVIVAL,), time_grid=grid, min_count=1)
    curve = answer_tables(tables, query).federation.survival
    assert curve is not None and curve.times == grid
    np.testing.assert_allclose(curve.survival, _lifelines_km(times, events, grid), rtol=1e-12)
    assert curve.at_risk[0] == times.size
    # a coarse grid: the pooled curve of the times carried to the grid, at every grid point
    coarse = (5.0, 12.5, 20.0, 33.0, 47.0, 59.0)
    query = StatsQuery(statistics=(Statistic.SURVIVAL,), time_grid=coarse, per_site=False)
    curve = answer_tables(tables, query).federation.survival
    assert curve is not None
    carried = np.asarray(coarse)[np.searchsorted(coarse, times, side="left")]
    np.testing.assert_allclose(
        curve.survival, _lifelines_km(carried, events, curve.times), rtol=1e-12
    )
    assert set(curve.times) <= set(coarse)


def test_kaplan_meier_merges_intervals_until_no_small_count_is_released() -> None:
    tables = _tables(4, sizes=(150, 200))
    grid = tuple(float(d) for d in range(2, 60, 2))
    result = answer_tables(tables, StatsQuery(statistics=(Statistic.SURVIVAL,), time_grid=grid))
    for row in result.rows.values():
        assert row.survival is not None
        assert len(row.survival.times) < len(grid)
        for value in (*row.survival.events, *row.survival.censored, *row.survival.at_risk):
            assert value == 0 or value >= 10
    fed, site = result.federation.survival, result.rows["site-0"].survival
    assert fed is not None and site is not None and fed.times == site.times  # same intervals
    times = np.concatenate([t.time for t in tables.values()])  # type: ignore[misc]
    events = np.concatenate([t.event for t in tables.values()])  # type: ignore[misc]
    carried = np.asarray((*fed.times, math.inf))[np.searchsorted(fed.times, times)]
    keep = np.isfinite(carried)
    ref = _lifelines_km(np.where(keep, carried, 1e9), events * keep, fed.times)
    np.testing.assert_allclose(fed.survival, ref, rtol=1e-12)


def test_digits_carry_sums_exactly() -> None:
    tables = _tables(5)
    q = SiteQuery(stage="moments", features=("bp", "ratio", "count"), survival=True)
    parts = [contribution(t, q) for t in tables.values()]
    layout = parts[0].layout
    digits = np.sum([to_digits(p) for p in parts], axis=0)
    assert digits.size == digits_length(layout)
    assert np.all(np.abs(np.stack([to_digits(p) for p in parts])) < 2**20)
    back = from_digit_sums(digits, layout)
    exact = Contribution.total(parts)
    for name in exact:
        np.testing.assert_allclose(back[name], exact[name], rtol=0, atol=3 * 2.0**-25)
    big = Contribution({"sum": np.array([-3.5e20, 7.25]), "rows": np.array([2.0**39])})
    again = from_digit_sums(to_digits(big), big.layout)
    assert again["sum"].tolist() == [-3.5e20, 7.25] and again["rows"][0] == 2.0**39


def test_small_sites_are_suppressed_with_their_complement() -> None:
    tables = _tables(6, sizes=(7, 80, 90))
    result = answer_tables(tables, StatsQuery())
    small, fed = result.rows["site-0"], result.federation
    assert small.records is None  # 7 < 10
    # one hidden record count would be the federation's minus the others': a second is hidden
    assert sum(result.rows[s].records is None for s in ("site-1", "site-2")) == 1
    assert fed.records == 177
    bp = small.features["bp"]
    assert bp.mean is None and bp.count is None and bp.withheld
    # and the means: the withheld sites hold ≥ 10 values together, else one more is withheld
    held = [s for s in ("site-0", "site-1", "site-2") if result.rows[s].features["bp"].mean is None]
    n = {s: int((~np.isnan(t.features[:, 0])).sum()) for s, t in tables.items()}
    assert sum(n[s] for s in held) >= 10 and len(held) >= 2
    assert fed.features["bp"].mean is not None


def test_suppression_holds_against_differencing_on_random_tables() -> None:
    """Every hidden small count keeps a range of possible values (linear programme over every
    released value and every line), never one value."""
    from scipy.optimize import linprog

    from medfed.data.statistics.suppression import protect, table_lines

    rng = np.random.default_rng(7)
    for _ in range(30):
        rows, cols = int(rng.integers(2, 5)), int(rng.integers(2, 6))
        inner = rng.choice([0, 1, 2, 3, 5, 8, 12, 20, 40], size=(rows, cols))
        full = np.zeros((rows + 1, cols + 1))
        full[:rows, :cols] = inner
        full[:rows, cols] = inner.sum(1)
        full[rows, :] = full[:rows, :].sum(0)
        values = full.reshape(-1)
        lines = table_lines(rows + 1, cols + 1)
        hidden = protect(values, lines, min_count=10)
        assert not np.any(hidden & (values >= 10) & False)
        unknown = np.flatnonzero(hidden)
        if unknown.size == 0:
            continue
        pos = {int(j): i for i, j in enumerate(unknown)}
        a_eq, b_eq = [], []
        for line in lines:
            row, rhs = np.zeros(unknown.size), 0.0
            for j, sign in [(p, 1.0) for p in line.parts] + [(line.total, -1.0)]:
                if j in pos:
                    row[pos[j]] += sign
                else:
                    rhs -= sign * values[j]
            if row.any():
                a_eq.append(row)
                b_eq.append(rhs)
        for j in unknown:
            if not 0 < values[j] < 10:
                continue
            c = np.zeros(unknown.size)
            c[pos[int(j)]] = 1.0
            lo = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=(0, None)).fun
            hi = -linprog(-c, A_eq=a_eq, b_eq=b_eq, bounds=(0, None)).fun
            assert hi - lo >= 1 - 1e-9, (full, j, lo, hi)


def test_dp_noise_is_accounted_and_needs_public_ranges() -> None:
    tables = _tables(8, sizes=(200, 300))
    with pytest.raises(ConfigError, match="--range"):
        answer_tables(tables, StatsQuery(epsilon=1.0))
    ranges = {"bp": (60.0, 200.0), "ratio": (0.0, 1.0), "count": (0.0, 2000.0)}
    query = StatsQuery(epsilon=1.0, ranges=ranges, per_site=False)
    result = answer_tables(tables, query)
    from medfed.privacy.accounting import epsilon, noise_for_epsilon

    sigma = noise_for_epsilon(target_epsilon=1.0, delta=1e-6, rounds=1, sample_rate=1.0)
    assert result.epsilon == pytest.approx(
        epsilon(noise_multiplier=sigma, sample_rate=1.0, rounds=1, delta=1e-6)
    )
    assert result.epsilon is not None and result.epsilon <= 1.0
    exact = answer_tables(tables, StatsQuery(per_site=False)).federation.features["ratio"]
    noisy = result.federation.features["ratio"]
    assert noisy.mean is not None and exact.mean is not None
    assert noisy.mean != exact.mean and abs(noisy.mean - exact.mean) < 0.2


def test_site_query_travels_as_json_and_rejects_garbage() -> None:
    q = SiteQuery(stage="shapes", features=("a",), edges={"a": (0.0, 1.0)}, time_grid=(1.0, 2.0))
    assert SiteQuery.from_json(q.to_json()) == q
    with pytest.raises(ConfigError):
        SiteQuery.from_json({"stage": "moments"})
    with pytest.raises(ConfigError):
        SiteQuery.from_json({"stage": "other", "features": []})
    with pytest.raises(ConfigError):
        StatsQuery(quantiles=(1.5,))
    assert FEDERATION == "federation"
