"""The data-quality report over real simulated sites: a data set file with one site shifted,
one with 40 % of a feature missing and one too small to be shown; bundled data sets for the
survival and regression outcomes; figures checked against numpy on the same records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medfed.config import BackendConfig, DataConfig
from medfed.data import load_dataset
from medfed.orchestration.quality import QualityReport, QualityThresholds
from medfed.orchestration.quality_simulation import simulate_quality
from medfed.reporting.quality import render_quality_markdown

SITES = ("north", "south", "east", "west", "shifted", "holey")
N = 300


def _standard(rng: np.random.Generator, n: int) -> np.ndarray:
    z = rng.normal(size=n)
    return (z - z.mean()) / z.std()


def write_consortium(folder: Path, *, standardize: str = "none", tiny: int = 8) -> Path:
    """One CSV for all sites: age and bmi per site exactly standardised (so only the shifted
    site differs), bmi shifted by 0.8 sd at "shifted", 40 % of age missing at "holey", and a
    site "tiny" with ``tiny`` records."""
    rng = np.random.default_rng(7)
    lines = ["hospital,age,bmi,outcome"]
    for site in (*SITES, "tiny"):
        n = tiny if site == "tiny" else N
        age = 60 + 10 * _standard(rng, n)
        bmi = 27 + 4 * (_standard(rng, n) + (0.8 if site == "shifted" else 0.0))
        missing = np.zeros(n, bool)
        if site == "holey":
            missing[rng.permutation(n)[: int(0.4 * n)]] = True
            kept = age[~missing]
            age[~missing] = 60 + 10 * (kept - kept.mean()) / kept.std()
        outcome = (rng.random(n) < (0.4 if site == "east" else 0.2)).astype(int)
        for i in range(n):
            a = "" if missing[i] else f"{age[i]:.6f}"
            lines.append(f"{site},{a},{bmi[i]:.6f},{outcome[i]}")
    (folder / "all.csv").write_text("\n".join(lines) + "\n")
    path = folder / "consortium.toml"
    path.write_text(
        'task = "binary"\nlabel = "outcome"\nfile = "all.csv"\nsite_column = "hospital"\n'
        f'standardize = "{standardize}"\n'
    )
    return path


def _records(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    rows = [line.split(",") for line in (folder / "all.csv").read_text().splitlines()[1:]]
    out: dict[str, dict[str, np.ndarray]] = {}
    for site in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == site]
        out[site] = {
            "age": np.array([float(r[1]) if r[1] else np.nan for r in mine]),
            "bmi": np.array([float(r[2]) for r in mine]),
            "outcome": np.array([int(r[3]) for r in mine]),
        }
    return out


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, QualityReport]:
    folder = tmp_path_factory.mktemp("consortium")
    path = write_consortium(folder)
    return folder, simulate_quality(DataConfig(name=str(path)))


def test_flags_exactly_the_shifted_site_and_the_missing_feature(
    consortium: tuple[Path, QualityReport],
) -> None:
    _, report = consortium
    flagged = {(f.site, f.feature, f.check) for f in report.flags}
    assert not any("bundled data set" in n for n in report.notes)
    assert flagged == {("shifted", "bmi", "smd"), ("shifted", "bmi", "psi"),
                       ("holey", "age", "missing")}  # fmt: skip
    holey = report.sites["holey"].features["age"]
    assert holey.missing_fraction == pytest.approx(0.4)
    # the federation itself is not flagged: 120 of 1800 records miss age
    assert report.federation.features["age"].missing_fraction == pytest.approx(120 / 1800)
    assert report.sites["shifted"].features["bmi"].smd > 0.5
    assert all(r.features["bmi"].smd < 0.2 for n, r in report.sites.items() if n != "shifted")


def test_a_site_under_the_minimum_count_is_not_shown(
    consortium: tuple[Path, QualityReport],
) -> None:
    _, report = consortium
    assert set(report.sites) == set(SITES)
    assert "tiny" in report.not_shown and "minimum count" in report.not_shown["tiny"]
    assert report.federation.records == len(SITES) * N  # the tiny site's records are not in it
    text = render_quality_markdown(report)
    assert "| tiny |" not in text and "- tiny:" in text


def test_figures_equal_pooled_numpy_on_the_same_records(
    consortium: tuple[Path, QualityReport],
) -> None:
    folder, report = consortium
    records = {s: r for s, r in _records(folder).items() if s != "tiny"}
    keys = ("age", "bmi", "outcome")
    pooled = {k: np.concatenate([r[k] for r in records.values()]) for k in keys}
    fed = report.federation.features
    for name in ("age", "bmi"):
        x = pooled[name][~np.isnan(pooled[name])]
        assert fed[name].count == x.size
        assert fed[name].mean == pytest.approx(x.mean(), abs=1e-6)
        assert fed[name].sd == pytest.approx(x.std(ddof=1), abs=1e-6)
        width = 10 * x.std(ddof=1) / 1000  # one fine bin
        for q, value in fed[name].quantiles.items():
            assert value is not None
            assert abs(value - np.quantile(x, float(q), method="inverted_cdf")) <= width + 1e-6
    fed_bmi = pooled["bmi"]
    for site, r in records.items():
        got = report.sites[site]
        assert got.records == r["bmi"].size
        smd = abs(r["bmi"].mean() - fed_bmi.mean()) / fed_bmi.std(ddof=1)
        assert got.features["bmi"].smd == pytest.approx(smd, abs=1e-6)
        assert got.label is not None
        share = r["outcome"].mean()
        assert got.label.classes == pytest.approx({"0": 1 - share, "1": share})
    assert report.federation.label is not None
    assert report.federation.label.classes["1"] == pytest.approx(pooled["outcome"].mean())


def test_json_round_trip_and_markdown(consortium: tuple[Path, QualityReport]) -> None:
    _, report = consortium
    raw = json.loads(json.dumps(report.to_json()))
    assert QualityReport.from_json(raw) == report
    assert raw["flags"][0]["threshold"] in (0.2, 0.25)
    text = render_quality_markdown(report)
    assert text.startswith("## Data quality") and "| shifted | bmi | SMD |" in text


def test_secure_aggregation_gives_the_federation_only(tmp_path: Path) -> None:
    path = write_consortium(tmp_path)
    clear = simulate_quality(DataConfig(name=str(path)))
    secure = simulate_quality(DataConfig(name=str(path)), secure_aggregation=True)
    assert secure.secure and secure.sites == {}
    assert any("secure aggregation" in n for n in secure.notes)
    assert secure.federation.records == clear.federation.records
    assert secure.federation.label == clear.federation.label
    for name, f in secure.federation.features.items():
        c = clear.federation.features[name]
        assert (f.count, f.missing) == (c.count, c.missing)
        assert (f.mean, f.sd) == pytest.approx((c.mean, c.sd), rel=1e-9)
        assert f.quantiles == pytest.approx(c.quantiles, rel=1e-9)
    assert {f.site for f in secure.flags} <= {"federation"}
    assert "Sites (shift" not in render_quality_markdown(secure)


def test_thresholds_are_the_callers(tmp_path: Path) -> None:
    path = write_consortium(tmp_path)
    lax = simulate_quality(
        DataConfig(name=str(path)), thresholds=QualityThresholds(smd=1.0, missing=0.5, psi=5.0)
    )
    assert lax.flags == ()


def test_a_file_that_standardises_each_site_for_training_is_reported_raw(
    tmp_path: Path,
) -> None:
    """``standardize = "site"`` is how training prepares the features; the report reads the
    values as recorded, so the shift is still seen."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = simulate_quality(DataConfig(name=str(write_consortium(tmp_path / "a"))))
    site = simulate_quality(
        DataConfig(name=str(write_consortium(tmp_path / "b", standardize="site")))
    )
    assert site.to_json()["flags"] == plain.to_json()["flags"] != []


def test_survival_event_rate_and_median_follow_up_equal_numpy() -> None:
    report = simulate_quality(DataConfig(name="lung"))
    d = load_dataset("lung", seed=0)
    y = np.concatenate([np.concatenate([s.y_train, s.y_test]) for s in d.sites]).astype(float)
    label = report.federation.label
    assert label is not None and label.kind == "survival"
    assert label.event_rate == pytest.approx(y[:, 1].mean())
    t = y[:, 0]
    assert label.median_follow_up is not None
    assert abs(label.median_follow_up - np.quantile(t, 0.5, method="inverted_cdf")) <= (
        10 * t.std(ddof=1) / 1000 + 1e-9
    )


def test_regression_target_mean_and_sd_equal_numpy() -> None:
    report = simulate_quality(DataConfig(name="diabetes"))
    d = load_dataset("diabetes", seed=0)
    y = np.concatenate([np.concatenate([s.y_train, s.y_test]) for s in d.sites]).astype(float)
    label = report.federation.label
    assert label is not None and label.kind == "regression"
    assert any("bundled data set" in n for n in report.notes)
    assert label.mean == pytest.approx(y.mean(), rel=1e-6)
    assert label.sd == pytest.approx(y.std(ddof=1), rel=1e-6)
    site = next(iter(report.sites.values())).label
    assert site is not None and site.mean is not None


def test_a_process_pool_gives_the_same_report(
    consortium: tuple[Path, QualityReport],
) -> None:
    folder, report = consortium
    pool = simulate_quality(
        DataConfig(name=str(folder / "consortium.toml")),
        backend=BackendConfig(kind="process", workers=2),
    )
    assert pool.flags == report.flags and set(pool.sites) == set(report.sites)
    assert pool.not_shown.keys() == report.not_shown.keys()


def test_multiclass_fractions_and_a_rare_class_is_suppressed(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    # site one: 5 records of class "c" (below the minimum count); site two: 20 of each
    classes = {"one": ["a"] * 40 + ["b"] * 35 + ["c"] * 5, "two": ["a", "b", "c"] * 20}
    lines = ["hospital,x,kind"]
    for site, labels in classes.items():
        lines += [f"{site},{rng.normal():.6f},{k}" for k in labels]
    (tmp_path / "all.csv").write_text("\n".join(lines) + "\n")
    path = tmp_path / "mc.toml"
    path.write_text(
        'task = "multiclass"\nlabel = "kind"\nfile = "all.csv"\nsite_column = "hospital"\n'
        'standardize = "none"\n'
    )
    report = simulate_quality(DataConfig(name=str(path)))
    codes = {"a": "0", "b": "1", "c": "2"}
    rows = {**{s: report.sites[s] for s in classes}, "federation": report.federation}
    truth = {**classes, "federation": classes["one"] + classes["two"]}
    shown = 0
    for name, row in rows.items():
        assert row.label is not None and set(row.label.classes) == {"0", "1", "2"}
        for k, code in codes.items():
            value = row.label.classes[code]
            if value is not None:  # a shown fraction is the true one
                assert value == pytest.approx(truth[name].count(k) / len(truth[name]))
                shown += 1
    one = rows["one"].label
    assert one is not None and one.classes["2"] is None  # 5 records: suppressed
    # and not recoverable from the others: at least one more class of that site is hidden
    assert sum(v is None for v in one.classes.values()) >= 2
    assert shown >= 4
