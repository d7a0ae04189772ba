"""Fed-TCGA-BRCA from the shared data folder: published sizes, integrity, helpful errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from medfed.data import TaskKind, load_dataset
from medfed.data.tcga_brca import PUBLISHED_SIZES
from medfed.errors import DataError


def test_regions_have_the_published_sizes(tcga_dir: Path) -> None:
    ds = load_dataset("tcga-brca", data_dir=tcga_dir)
    assert ds.site_names == [f"region-{k}" for k in range(6)]
    assert [(s.num_train, s.num_test) for s in ds.sites] == list(PUBLISHED_SIZES)
    assert sum(s.num_train + s.num_test for s in ds.sites) == 1088


def test_shapes_dtypes_and_survival_labels(tcga_dir: Path) -> None:
    ds = load_dataset("tcga-brca", data_dir=tcga_dir)
    assert ds.spec.kind is TaskKind.SURVIVAL
    assert ds.spec.input_shape == (39,) and len(ds.spec.feature_names) == 39
    assert ds.spec.feature_names[0] == "age_at_index"
    for site in ds.sites:
        for x, y in ((site.x_train, site.y_train), (site.x_test, site.y_test)):
            assert x.dtype == np.float32 and x.shape[1] == 39 and np.isfinite(x).all()
            assert y.dtype == np.float64 and y.shape == (len(x), 2)
            assert (y[:, 0] >= 0).all() and set(np.unique(y[:, 1])) <= {0.0, 1.0}
            assert np.isin(x[:, 1:], [0.0, 1.0]).all(), "FLamby's one-hot columns"
    # Real heterogeneity: death rates in the training sets range from 5 % to 22 %.
    rates = [s.y_train[:, 1].mean() for s in ds.sites]
    assert min(rates) < 0.06 and max(rates) > 0.2


def test_features_match_flamby_row_by_row(tcga_dir: Path) -> None:
    import pandas as pd

    frame = pd.read_csv(tcga_dir / "brca.csv")
    split = pd.read_csv(tcga_dir / "train_test_split.csv")
    region3_test = frame[frame["pid"].isin(split.query("fold2 == 'test_3'")["pid"])]
    site = load_dataset("tcga-brca", data_dir=tcga_dir).site("region-3")
    assert np.array_equal(site.x_test, region3_test.iloc[:, 1:40].to_numpy(np.float32))
    assert np.array_equal(site.y_test, region3_test[["T", "E"]].to_numpy(np.float64))


def test_the_parent_folder_is_accepted_too(tcga_dir: Path) -> None:
    assert load_dataset("tcga-brca", data_dir=tcga_dir.parent).site_names[0] == "region-0"


def test_standardize_rescales_age_only(tcga_dir: Path) -> None:
    raw = load_dataset("tcga-brca", data_dir=tcga_dir).pooled()
    scaled = load_dataset("tcga-brca", data_dir=tcga_dir, options={"standardize": True}).pooled()
    assert np.array_equal(raw.x_train[:, 1:], scaled.x_train[:, 1:])
    assert abs(float(scaled.x_train[:, 0].mean())) < 0.2 and raw.x_train[:, 0].mean() > 40


def test_a_modified_file_is_refused(tcga_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tcga_brca"
    shutil.copytree(tcga_dir, copy)
    (copy / "brca.csv").chmod(0o644)
    with (copy / "brca.csv").open("a") as f:
        f.write("\n")
    with pytest.raises(DataError, match=r"sha256 .* not the published one"):
        load_dataset("tcga-brca", data_dir=copy)


def test_an_incomplete_folder_is_refused(tcga_dir: Path, tmp_path: Path) -> None:
    shutil.copy(tcga_dir / "brca.csv", tmp_path / "brca.csv")
    with pytest.raises(DataError, match=r"lacks train_test_split.csv.*--data-dir PATH"):
        load_dataset("tcga-brca", data_dir=tmp_path)


def test_a_missing_folder_says_to_pass_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-dir PATH"):
        load_dataset("tcga-brca", data_dir=tmp_path / "nowhere")
    with pytest.raises(DataError, match="--data-dir PATH"):
        load_dataset("tcga-brca")
    with pytest.raises(DataError, match="--data-dir PATH"):
        load_dataset("tcga-brca", data_dir=tmp_path)  # exists, but empty


@pytest.mark.parametrize("num_sites", [1, 4, 7])
def test_the_site_count_is_fixed(num_sites: int, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="exactly 6 sites"):
        load_dataset("tcga-brca", num_sites=num_sites, data_dir=tmp_path)
