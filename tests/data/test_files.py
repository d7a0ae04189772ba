"""Data set files: a consortium's own CSV/Parquet tables as a data set, and their mistakes.

The round trips use real patients: the bundled breast-cancer hospitals exported as CSV, and
(when ../shared/data is there) the Fed-TCGA-BRCA regions written as one file per region.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfed.data import load_dataset
from medfed.data.base import TaskKind
from medfed.data.export import export_dataset
from medfed.data.files import load_data_file
from medfed.errors import DataError


def _write(folder: Path, toml: str, **tables: pd.DataFrame | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        path = folder / name.replace("__", ".")
        if isinstance(table, bytes):
            path.write_bytes(table)
        elif path.suffix == ".parquet":
            table.to_parquet(path)
        else:
            table.to_csv(path, index=False)
    (folder / "data.toml").write_text(toml)
    return folder / "data.toml"


def test_exported_hospitals_read_back_as_the_same_data_set(tmp_path: Path) -> None:
    bundled = load_dataset("breast-cancer")
    path = export_dataset(bundled, tmp_path / "bc")
    again = load_dataset(str(path))
    assert again.site_names == bundled.site_names
    assert again.spec == bundled.spec
    for a, b in zip(bundled.sites, again.sites, strict=True):
        np.testing.assert_array_equal(a.x_train, b.x_train)
        np.testing.assert_array_equal(a.y_test, b.y_test)
        assert b.y_train.dtype == np.int64


@pytest.mark.data
def test_tcga_regions_as_parquet_files_equal_the_bundled_loader(
    tmp_path: Path, tcga_dir: Path
) -> None:
    """Fed-TCGA-BRCA, one Parquet file per region and part, described by a data set file."""
    bundled = load_dataset("tcga-brca", data_dir=str(tcga_dir))
    table = pd.read_csv(tcga_dir / "brca.csv")
    split = pd.read_csv(tcga_dir / "train_test_split.csv").set_index("pid")["fold2"]
    sites = []
    for k in range(6):
        for part in ("train", "test"):
            rows = table[table["pid"].map(split) == f"{part}_{k}"]
            rows.to_parquet(tmp_path / f"r{k}_{part}.parquet")
        sites.append(
            f'[sites.region-{k}]\ntrain = "r{k}_train.parquet"\ntest = "r{k}_test.parquet"\n'
        )
    toml = 'task = "survival"\ntime = "T"\nevent = "E"\nid_column = "pid"\n'
    toml += 'standardize = "none"\n' + "".join(sites)
    (tmp_path / "tcga.toml").write_text(toml)
    mine = load_data_file(tmp_path / "tcga.toml")
    assert mine.spec.kind is TaskKind.SURVIVAL
    assert mine.spec.feature_names == bundled.spec.feature_names
    for a, b in zip(bundled.sites, mine.sites, strict=True):
        np.testing.assert_allclose(a.x_train, b.x_train)
        np.testing.assert_allclose(a.y_train, b.y_train)
        np.testing.assert_allclose(a.x_test, b.x_test)


def test_one_table_with_a_site_column_text_columns_and_gaps(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame(
        {
            "hospital": np.where(np.arange(n) < 70, "north", "south"),
            "age": rng.normal(60, 10, n).round(),
            "sex": rng.choice(["F", "M"], n),
            "ward": rng.choice(["icu", "general", None], n),
            "readmitted": rng.choice(["yes", "no"], n),
        }
    )
    frame.loc[3, "age"] = np.nan
    frame.loc[5, "readmitted"] = None  # no outcome: left out, counted
    path = _write(
        tmp_path,
        'task = "binary"\nlabel = "readmitted"\npositive = "yes"\nfile = "all.csv"\n'
        'site_column = "hospital"\ntest_fraction = 0.25\n',
        all__csv=frame,
    )
    ds = load_data_file(path)
    assert ds.site_names == ["north", "south"]
    assert ds.spec.feature_names == ("age", "sex=F", "sex=M", "ward=general", "ward=icu")
    north = ds.site("north")
    assert north.num_train + north.num_test == 69 and north.num_test == 17
    assert np.isfinite(north.x_train).all()
    assert abs(float(north.x_train[:, 0].mean())) < 1e-5  # standardised at the site
    assert "north: 1" in ds.notes["rows without an outcome (left out)"]
    yes = (frame["readmitted"] == "yes") & (frame["hospital"] == "south")
    south = ds.site("south")
    assert int(south.y_train.sum() + south.y_test.sum()) == int(yes.sum())  # "yes" is class 1
    # the split is stratified and fixed by the file's seed, not the run's
    again = load_data_file(path)
    np.testing.assert_array_equal(again.site("south").y_test, south.y_test)


def _two_sites(tmp_path: Path, a: pd.DataFrame | bytes, b: pd.DataFrame | bytes) -> Path:
    return _write(
        tmp_path,
        'task = "binary"\nlabel = "y"\nid_column = "pid"\n'
        '[sites.a]\ntrain = "a.csv"\n[sites.b]\ntrain = "b.csv"\n',
        a__csv=a,
        b__csv=b,
    )


GOOD = pd.DataFrame({"pid": range(10), "x": np.arange(10.0), "y": [0, 1] * 5})


@pytest.mark.parametrize(
    ("b", "message"),
    [
        (b"", "b.csv: the file is empty"),
        (b"pid,x,y\n", "b.csv: the file has a header but no rows"),
        (b"pid,x,y\n1,\xff\xfe,1\n", "not UTF-8 text"),
        (GOOD.drop(columns=["x"]), "b.csv (site b): no column 'x'"),
        (GOOD.assign(x=["high"] * 10), "column 'x' holds numbers at a but text at b"),
        (GOOD.assign(y=[0, 1, 2, 0, 1] * 2), "label 'y' has 3 values"),
        (GOOD.assign(pid=[1, 1, *range(2, 10)]), "patient id 1 appears twice"),
        (GOOD.assign(z=1.0), "column 'z' is not in"),
    ],
)
def test_each_bad_table_is_one_clear_error(
    tmp_path: Path, b: pd.DataFrame | bytes, message: str
) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_data_file(_two_sites(tmp_path, GOOD, b))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('task = "binary"\nlabel = "y"\nfile = "a.csv"\n', "needs site_column"),
        ('task = "binary"\nlabl = "y"\n[sites.a]\ntrain = "a.csv"\n', "did you mean 'label'"),
        ('task = "regresion"\nlabel = "y"\n', "task must be one of"),
        ('task = "survival"\nlabel = "y"\n[sites.a]\ntrain = "a.csv"\n', "time = "),
        ('task = "binary"\nlabel = "y"\n[sites.a]\ntrain = "nope.csv"\n', "no such file"),
        ('task = "binary"\nlabel = "y"\n[sites.a]\ntrain = "a.xlsx"\n', ".csv and .parquet"),
        (
            'task = "binary"\nlabel = "y"\nfeatures = ["y"]\n[sites.a]\ntrain = "a.csv"\n',
            "cannot include the outcome",
        ),
        ("task = [", "not valid TOML"),
    ],
)
def test_each_bad_data_set_file_is_one_clear_error(tmp_path: Path, toml: str, message: str) -> None:
    path = _write(tmp_path, toml, a__csv=GOOD)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_data_file(path)


def test_a_data_set_file_takes_no_options_folder_or_other_site_count(tmp_path: Path) -> None:
    path = str(_two_sites(tmp_path, GOOD, GOOD.assign(pid=range(10, 20))))
    assert load_dataset(path, num_sites=2).site_names == ["a", "b"]
    with pytest.raises(DataError, match="has 2 sites"):
        load_dataset(path, num_sites=3)
    with pytest.raises(DataError, match="takes no options"):
        load_dataset(path, options={"alpha": 1})
    with pytest.raises(DataError, match="drop the data folder"):
        load_dataset(path, data_dir=str(tmp_path))


def test_a_regression_label_is_a_float32_target_split_by_seed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"pid": range(40), "age": rng.normal(60, 10, 40), "stay": rng.gamma(2, 3, 40).round(1)}
    )
    frame.loc[7, "stay"] = None  # no outcome: left out, counted
    path = _write(
        tmp_path,
        'task = "regression"\nlabel = "stay"\nid_column = "pid"\n[sites.a]\ntrain = "a.csv"\n',
        a__csv=frame,
    )
    ds = load_data_file(path)
    assert ds.spec.kind is TaskKind.REGRESSION and ds.spec.feature_names == ("age",)
    a = ds.site("a")
    assert a.y_train.dtype == np.float32 and a.num_train + a.num_test == 39 and a.num_test == 8
    kept = frame["stay"].dropna().to_numpy(np.float32)
    np.testing.assert_array_equal(np.sort(np.concatenate([a.y_train, a.y_test])), np.sort(kept))
    np.testing.assert_array_equal(load_data_file(path).site("a").y_test, a.y_test)  # the seed's
    # the model's target centre and scale: the sites' training targets
    assert ds.spec.target_center == pytest.approx(float(a.y_train.mean()), rel=1e-5)
    assert ds.spec.target_scale == pytest.approx(float(a.y_train.std()), rel=1e-4)
    frame["stay"] = frame["stay"].astype(object)
    frame.loc[12, "stay"] = "long"
    frame.to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(DataError, match=r"a.csv, data row 13: label 'stay' must be a finite"):
        load_data_file(path)
