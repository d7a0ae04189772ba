"""Loading by name: the catalogue, every error path, and a light import."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from medfed.data import DatasetInfo, TaskKind, available_datasets, load_dataset
from medfed.errors import DataError, UsageError

NAMES = [
    "breast-cancer",
    "diabetes",
    "lung",
    "synthetic-ehr",
    "synthetic-imaging",
    "synthetic-segmentation",
    "tcga-brca",
]
SHIPPED = [n for n in NAMES if n != "tcga-brca"]


def test_the_catalogue() -> None:
    infos = available_datasets()
    assert [i.name for i in infos] == NAMES
    assert all(isinstance(i, DatasetInfo) and i.description for i in infos)
    by_name = {i.name: i for i in infos}
    assert by_name["lung"].kind is TaskKind.SURVIVAL and by_name["lung"].fixed_sites
    assert by_name["tcga-brca"].needs_data_dir and by_name["tcga-brca"].sites == 6
    assert not by_name["synthetic-ehr"].real and by_name["breast-cancer"].real


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_data_set_loads_quickly_with_its_catalogued_site_count(name: str) -> None:
    info = {i.name: i for i in available_datasets()}[name]
    load_dataset(name)  # warm caches (file system, numpy)
    start = time.perf_counter()
    ds = load_dataset(name)
    assert time.perf_counter() - start < 1.5
    assert ds.name == name and ds.spec.kind is info.kind
    assert len(ds.sites) == info.sites
    for option in info.options:  # every catalogued default is accepted as given
        load_dataset(name, options={option.name: option.default})


@pytest.mark.parametrize("name", SHIPPED)
def test_label_conventions(name: str) -> None:
    ds = load_dataset(name)
    for site in ds.sites:
        assert site.num_train >= 1 and site.num_test >= 1
        assert site.x_train.dtype == np.float32
        assert site.x_train.shape[1:] == ds.spec.input_shape
        if ds.spec.kind is TaskKind.SURVIVAL:
            assert site.y_train.dtype == np.float64 and site.y_train.shape[1] == 2
        elif ds.spec.kind is TaskKind.REGRESSION:
            assert site.y_train.dtype == np.float32 and site.y_train.ndim == 1
        elif ds.spec.kind is TaskKind.SEGMENTATION:
            assert site.y_train.dtype == np.int64
            assert site.y_train.shape[1:] == ds.spec.input_shape[1:]
            assert site.y_train.min() >= 0 and site.y_train.max() < ds.spec.n_classes
        else:
            assert site.y_train.dtype == np.int64 and site.y_train.ndim == 1
            assert site.y_train.max() < ds.spec.n_classes


def test_names_are_forgiving_about_case_and_underscores() -> None:
    assert load_dataset("Breast_Cancer").name == "breast-cancer"


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("breast-cancr", "breast-cancer"), ("synthetic_ehrs", "synthetic-ehr"), ("lungs", "lung")],
)
def test_an_unknown_name_suggests_the_closest_and_lists_all(name: str, suggestion: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(name)
    message = str(info.value)
    assert f"did you mean {suggestion!r}" in message
    assert all(n in message for n in NAMES)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_an_unrelated_name_lists_the_choices() -> None:
    with pytest.raises(DataError, match="choose one of breast-cancer, diabetes, lung"):
        load_dataset("mnist")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("breast-cancer", {"options": {"alpha": 1}}, "takes no options: remove 'alpha'"),
        ("synthetic-ehr", {"options": {"alfa": 1}}, "did you mean 'alpha'.*covariate_shift"),
        ("synthetic-ehr", {"options": {"alpha": True}}, "alpha must be a number"),
        ("synthetic-ehr", {"options": {"alpha": [1]}}, "alpha must be a number"),
        ("synthetic-imaging", {"options": {"image_size": "big"}}, "whole number"),
        ("synthetic-ehr", {"num_sites": 0}, "whole number >= 1"),
        ("synthetic-ehr", {"num_sites": 2.5}, "whole number >= 1"),
        ("synthetic-ehr", {"num_sites": True}, "whole number >= 1"),
        ("synthetic-ehr", {"num_sites": 10_001}, "at most 10000"),
        ("synthetic-ehr", {"seed": -1}, "seed must be"),
        ("breast-cancer", {"num_sites": 12}, "2 to 8"),
        ("lung", {"num_sites": 2}, "lung has 8 sites"),
    ],
)
def test_bad_requests_raise_data_error_with_advice(name: str, kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(DataError, match=match):
        load_dataset(name, **kwargs)


def test_seed_changes_synthetic_data_only() -> None:
    for name in ("synthetic-ehr", "synthetic-imaging"):
        a, b = load_dataset(name, seed=1), load_dataset(name, seed=2)
        assert not np.array_equal(a.sites[0].x_train[:5], b.sites[0].x_train[:5])
    for name in ("breast-cancer", "lung"):
        a, b = load_dataset(name, seed=1), load_dataset(name, seed=2)
        assert np.array_equal(a.sites[0].x_train, b.sites[0].x_train)


def test_importing_the_package_stays_light() -> None:
    code = (
        "import sys, medfed.data; "
        "heavy = [m for m in ('sklearn', 'lifelines', 'pandas', 'scipy', 'torch') "
        "if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_loading_shipped_data_does_not_import_their_packages() -> None:
    code = (
        "import sys; from medfed.data import load_dataset; "
        "[load_dataset(n) for n in ('breast-cancer', 'lung')]; "
        "print(','.join(m for m in ('sklearn', 'lifelines', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
