"""The data contract: the federation's declared table, checked at each site with pandera."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfed.data import load_dataset
from medfed.data.contract import read_contract
from medfed.errors import DataError

CONTRACT = """
name = "readmission"
version = "2"
task = "binary"
label = "readmitted"
positive = "yes"
id_column = "pid"
missing = "impute"

[columns.pid]
type = "integer"
[columns.age]
type = "number"
unit = "years"
min = 0
max = 120
[columns.visits]
type = "integer"
min = 0
[columns.sex]
type = "category"
categories = ["F", "M"]
required = true
[columns.readmitted]
type = "category"
categories = ["no", "yes"]
"""


def _table(seed: int, n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "pid": np.arange(n) + 1000 * seed,
            "age": rng.uniform(20, 90, n).round(1),
            "visits": rng.integers(0, 9, n),
            "sex": rng.choice(["F", "M"], n),
            "readmitted": rng.choice(["no", "yes"], n, p=[0.7, 0.3]),
        }
    )


def _consortium(tmp_path: Path, tables: dict[str, pd.DataFrame]) -> Path:
    (tmp_path / "readmission.contract.toml").write_text(CONTRACT)
    lines = ['contract = "readmission.contract.toml"']
    for site, frame in tables.items():
        frame.to_csv(tmp_path / f"{site}.csv", index=False)
        lines.append(f'[sites.{site}]\ntrain = "{site}.csv"')
    (tmp_path / "data.toml").write_text("\n".join(lines) + "\n")
    return tmp_path / "data.toml"


def test_the_spec_comes_from_the_contract_alone(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(CONTRACT)
    contract = read_contract(tmp_path / "c.toml")
    spec = contract.spec()
    assert spec.feature_names == ("age", "visits", "sex=F", "sex=M")
    assert spec.input_shape == (4,) and spec.n_outputs == 1
    assert contract.classes() == ("no", "yes")  # "yes" is class 1
    assert len(contract.sha256) == 64


def test_each_broken_rule_is_reported_with_its_column_and_row_count(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(CONTRACT)
    contract = read_contract(tmp_path / "c.toml")
    assert contract.check(_table(0)).passed
    bad = _table(1).astype({"visits": float})
    bad.loc[[3, 7, 8], "age"] = [150, -2, 121]
    bad.loc[4, "visits"] = 2.5
    bad.loc[5, "sex"] = "X"
    bad.loc[6, "sex"] = None
    bad.loc[9, "readmitted"] = "maybe"
    bad.loc[10, "pid"] = bad.loc[11, "pid"]
    report = contract.check(bad)
    said = {(p.column, p.rule): p.rows for p in report.problems}
    assert said[("age", "must be at most 120")] == 2
    assert said[("age", "must be at least 0")] == 1
    assert said[("visits", "must be a whole number")] == 1
    assert said[("sex", "must be one of ['F', 'M']")] == 1
    assert said[("sex", "missing values")] == 1
    assert said[("readmitted", "must be one of ['no', 'yes']")] == 1
    assert said[("pid", "a patient id appears more than once")] == 2
    # what may leave the site has no row numbers
    assert "data rows" in str(report) and "data rows" not in report.summary()
    report = contract.check(_table(2).drop(columns=["visits"]).assign(age="old"))
    said = {(p.column, p.rule) for p in report.problems}
    assert ("visits", "the column is missing") in said and ("age", "not a number") in said


def test_a_site_that_fails_the_contract_is_left_out_with_its_reasons(tmp_path: Path) -> None:
    bad = _table(2)
    bad.loc[[1, 2], "age"] = 500
    path = _consortium(tmp_path, {"a": _table(0), "b": _table(1), "c": bad})
    ds = load_dataset(str(path))
    assert ds.site_names == ["a", "b"]
    assert "column 'age': must be at most 120, 2 row(s)" in ds.notes["left out: c"]
    assert ds.spec.feature_names == ("age", "visits", "sex=F", "sex=M")
    a = ds.site("a")
    assert a.num_train + a.num_test == 60 and np.isfinite(a.x_train).all()
    frame = _table(0)
    assert int(a.y_train.sum() + a.y_test.sum()) == int((frame["readmitted"] == "yes").sum())


def test_missing_values_follow_the_contract_s_policy(tmp_path: Path) -> None:
    gaps = _table(0)
    gaps.loc[[0, 1], "age"] = np.nan
    path = _consortium(tmp_path, {"a": gaps, "b": _table(1)})
    assert (
        load_dataset(str(path)).site("a").num_train + load_dataset(str(path)).site("a").num_test
        == 60
    )  # imputed
    (tmp_path / "readmission.contract.toml").write_text(
        CONTRACT.replace('missing = "impute"', 'missing = "drop"')
    )
    dropped = load_dataset(str(path))
    assert dropped.site("a").num_train + dropped.site("a").num_test == 58
    assert "a: 2" in dropped.notes["rows with a missing feature (dropped)"]
    (tmp_path / "readmission.contract.toml").write_text(
        CONTRACT.replace('missing = "impute"', 'missing = "refuse"')
    )
    refused = load_dataset(str(path))
    assert refused.site_names == ["b"]
    assert "column 'age': missing values, 2 row(s)" in refused.notes["left out: a"]


def test_no_site_passing_is_an_error_naming_each_reason(tmp_path: Path) -> None:
    path = _consortium(tmp_path, {"a": _table(0).drop(columns=["sex"])})
    with pytest.raises(DataError, match=r"(?s)no site passes the data contract.*'sex'"):
        load_dataset(str(path))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('version = "2"', ""), "version"),
        (('label = "readmitted"', 'label = "outcome"'), "label must name one of"),
        (('type = "number"', 'type = "float"'), "type must be one of"),
        (("min = 0\nmax = 120", "min = 130\nmax = 120"), "min is above max"),
        (('categories = ["F", "M"]', "categories = []"), "lists its categories"),
        (('missing = "impute"', 'missing = "ignore"'), "missing must be"),
        (('positive = "yes"', 'positive = "y"'), "is not a category"),
        (('unit = "years"', 'units = "years"'), "unknown key 'units'"),
    ],
)
def test_a_bad_contract_is_one_clear_error(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    (tmp_path / "c.toml").write_text(CONTRACT.replace(*change, 1))
    with pytest.raises(DataError, match=message):
        read_contract(tmp_path / "c.toml")


@pytest.mark.data
def test_tcga_regions_under_a_contract_and_one_region_broken(
    tmp_path: Path, tcga_dir: Path
) -> None:
    """Real patients: the six Fed-TCGA-BRCA regions, one file each, under a contract written
    from the table's documented columns; a region whose ages are corrupted is left out."""
    table = pd.read_csv(tcga_dir / "brca.csv")
    split = pd.read_csv(tcga_dir / "train_test_split.csv").set_index("pid")["fold2"]
    columns = [c for c in table.columns if c not in ("pid", "T", "E")]
    lines = ['name = "tcga-brca"', 'version = "1"', 'task = "survival"', 'time = "T"']
    lines += ['event = "E"', 'id_column = "pid"', "[columns.pid]", 'type = "text"']
    lines += ["[columns.T]", 'type = "number"', "min = 0", "[columns.E]", 'type = "integer"']
    lines += ["min = 0", "max = 1"]
    for c in columns:
        bounds = "min = 0\nmax = 120" if c == "age_at_index" else "min = 0\nmax = 1"
        lines += [f'[columns."{c}"]', 'type = "number"', bounds]
    (tmp_path / "tcga.contract.toml").write_text("\n".join(lines) + "\n")
    data = ['contract = "tcga.contract.toml"', 'standardize = "none"']
    for k in range(6):
        for part in ("train", "test"):
            rows = table[table["pid"].map(split) == f"{part}_{k}"].copy()
            if k == 5 and part == "train":
                rows.loc[rows.index[:3], "age_at_index"] = -5
            rows.to_csv(tmp_path / f"r{k}_{part}.csv", index=False)
        data.append(f'[sites.region-{k}]\ntrain = "r{k}_train.csv"\ntest = "r{k}_test.csv"')
    (tmp_path / "tcga.toml").write_text("\n".join(data) + "\n")
    ds = load_dataset(str(tmp_path / "tcga.toml"))
    assert ds.site_names == [f"region-{k}" for k in range(5)]
    assert "column 'age_at_index': must be at least 0, 3 row(s)" in ds.notes["left out: region-5"]
    bundled = load_dataset("tcga-brca", data_dir=str(tcga_dir))
    for a, b in zip(bundled.sites[:5], ds.sites, strict=True):
        np.testing.assert_allclose(a.x_train, b.x_train)
        np.testing.assert_allclose(a.y_test, b.y_test)


REGRESSION = """
name = "stay"
version = "1"
task = "regression"
label = "days"
[columns.age]
type = "number"
min = 0
[columns.days]
type = "number"
min = 0
max = 365
"""


def test_a_regression_contract_takes_a_number_label(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(REGRESSION)
    contract = read_contract(tmp_path / "c.toml")
    assert contract.classes() == () and contract.spec().input_shape == (1,)
    spec = contract.spec()  # the target's centre and scale from the declared range alone
    assert (spec.target_center, spec.target_scale) == (182.5, 91.25)
    frame = pd.DataFrame({"age": [50.0, 61.0, 70.0], "days": [3.5, 400.0, "x"]})
    report = contract.check(frame)
    assert not report.passed
    assert "column 'days': not a number, 1 row(s)" in report.summary()
    assert "column 'days': must be at most 365, 1 row(s)" in report.summary()
    _, y = contract.encode(frame.iloc[:1])
    assert y.dtype == np.float32 and y.tolist() == [3.5]
    (tmp_path / "c.toml").write_text(
        REGRESSION.replace(
            'type = "number"\nmin = 0\nmax', 'type = "category"\ncategories = ["a", "b"]\n#'
        )
    )
    with pytest.raises(DataError, match="a regression label 'days' is a number"):
        read_contract(tmp_path / "c.toml")
