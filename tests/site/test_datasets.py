"""A node's registered data sets: added once by the steward, served by name, under a contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfed.errors import DataError
from medfed.site.datasets import DatasetRegistry
from tests.data.test_contract import CONTRACT, _table


def _files(tmp_path: Path) -> tuple[Path, Path]:
    contract = tmp_path / "readmission.contract.toml"
    contract.write_text(CONTRACT)
    table = tmp_path / "export.csv"
    _table(0, n=80).to_csv(table, index=False)
    return table, contract


def test_a_table_is_registered_under_its_contract_and_served_by_name(tmp_path: Path) -> None:
    table, contract = _files(tmp_path)
    registry = DatasetRegistry.in_state(tmp_path / "state")
    served = registry.add("readmission", table, contract=contract, by="dana")
    assert served.data.num_train + served.data.num_test == 80 and served.data.num_test == 16
    assert served.spec.feature_names == ("age", "visits", "sex=F", "sex=M")
    [entry] = registry.list()
    assert entry.added_by == "dana" and entry.contract_title == "contract readmission v2"
    again = registry.load("readmission")
    np.testing.assert_array_equal(again.data.x_test, served.data.x_test)  # a fixed split
    # the contract is pinned as registered: editing the original changes nothing
    contract.write_text(CONTRACT.replace("max = 120", "max = 60"))
    assert registry.check("readmission").passed
    assert not registry.check("readmission", contract).passed  # the edited one, on request
    with pytest.raises(DataError, match="registered already"):
        registry.add("readmission", table, contract=contract, by="dana")
    registry.remove("readmission")
    with pytest.raises(DataError, match="no data set 'readmission' is registered"):
        registry.load("readmission")


def test_a_failing_table_is_refused_with_every_rule_it_breaks(tmp_path: Path) -> None:
    table, contract = _files(tmp_path)
    bad = pd.read_csv(table)
    bad.loc[[0, 1], "age"] = 200
    bad.loc[2, "sex"] = "unknown"
    bad.to_csv(table, index=False)
    registry = DatasetRegistry.in_state(tmp_path / "state")
    with pytest.raises(DataError, match="must be at most 120, 2 row"):
        registry.add("readmission", table, contract=contract, by="dana")
    assert registry.list() == []  # nothing registered


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no-contract", "served under a data contract"),
        ("outside", "outside its folder"),
        ("bad-name", "lower-case letters"),
        ("missing", "no file at"),
    ],
)
def test_what_a_node_will_not_register(tmp_path: Path, setup: str, message: str) -> None:
    table, contract = _files(tmp_path)
    registry = DatasetRegistry.in_state(tmp_path / "state")
    kwargs: dict[str, object] = {"contract": contract}
    name, path = "readmission", table
    if setup == "no-contract":
        kwargs = {}
    elif setup == "outside":
        inner = tmp_path / "hospital"
        inner.mkdir()
        path = inner / "data.toml"
        path.write_text(
            'contract = "../readmission.contract.toml"\n[sites.a]\ntrain = "../export.csv"\n'
        )
        kwargs = {}
    elif setup == "bad-name":
        name = "Readmission/../x"
    else:
        path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=message):
        registry.add(name, path, by="dana", **kwargs)  # type: ignore[arg-type]


# --- image data sets ------------------------------------------------------------------


def _xray(tmp_path: Path, n: int = 8) -> Path:
    from tests.data.image_files import classified, data_file, labels, png_site
    from tests.data.test_images_contract import XRAY

    folder = tmp_path / "hospital"
    png_site(folder, "a", n=n)
    names = ["normal", "pneumonia"]
    labels(
        folder / "a" / "labels.csv", [(f"p{i}.png", names[i % 2]) for i in range(n)], "file,finding"
    )
    (folder / "xray.contract.toml").write_text(XRAY)
    return data_file(folder, 'contract = "xray.contract.toml"', {"a": classified("a")})


def test_an_image_data_set_is_registered_pinned_and_served(tmp_path: Path) -> None:
    from tests.data.image_files import png

    path = _xray(tmp_path)
    registry = DatasetRegistry.in_state(tmp_path / "state")
    served = registry.add("xray", path, by="dana")
    assert served.spec.input_shape == (1, 8, 8) and served.data.x_train.shape[1:] == (1, 8, 8)
    assert served.data.num_train + served.data.num_test == 8
    [entry] = registry.list()
    assert entry.contract_title == "contract xray v3" and entry.manifest_sha256
    assert registry.check("xray").passed
    again = registry.load("xray")
    np.testing.assert_array_equal(again.data.x_test, served.data.x_test)

    # a new image in the folder: the node does not serve what the steward did not register
    png(path.parent / "a" / "images" / "p99.png", np.zeros((12, 10), np.uint8))
    with pytest.raises(
        DataError,
        match=r"changed since they were registered \(1 file\(s\) added \(a/images/p99.png",
    ):
        registry.load("xray")
    (path.parent / "a" / "images" / "p99.png").unlink()
    registry.load("xray")
    # an edited labels file (same images): caught by its sha256
    text = (path.parent / "a" / "labels.csv").read_text()
    (path.parent / "a" / "labels.csv").write_text(text.replace("pneumonia", "normal", 1))
    with pytest.raises(DataError, match=r"labels file\(s\) changed: a/labels.csv.*--replace"):
        registry.load("xray")
    served = registry.add("xray", path, by="dana", replace=True)  # registered again
    assert registry.load("xray").data.num_train == served.data.num_train


def test_registered_images_that_break_their_contract_are_served_empty_with_the_report(
    tmp_path: Path,
) -> None:
    from tests.data.image_files import labels

    path = _xray(tmp_path)
    registry = DatasetRegistry.in_state(tmp_path / "state")
    with_covid = [(f"p{i}.png", "covid" if i < 2 else "normal") for i in range(8)]
    labels(path.parent / "a" / "labels.csv", with_covid, "file,finding")
    with pytest.raises(DataError, match=r"must be one of \['normal', 'pneumonia'\], 2 row"):
        registry.add("xray", path, by="dana")
    assert registry.list() == []
    # registered once they pass; checked against another contract, that contract's report
    labels(
        path.parent / "a" / "labels.csv",
        [(f"p{i}.png", "normal" if i % 2 else "pneumonia") for i in range(8)],
        "file,finding",
    )
    registry.add("xray", path, by="dana")
    strict = path.parent / "strict.toml"
    strict.write_text(
        (path.parent / "xray.contract.toml")
        .read_text()
        .replace('format = "png"', 'format = "dicom"')
    )
    report = registry.check("xray", strict)
    assert not report.passed and "format: must be dicom, 8 image(s)" in report.summary()
    assert "p0.png" not in report.summary()  # file names stay at the site


@pytest.mark.parametrize("how", ["symlink", "folder"])
def test_images_outside_the_data_set_folder_are_refused(tmp_path: Path, how: str) -> None:
    from tests.data.image_files import png

    path = _xray(tmp_path)
    outside = png(tmp_path / "elsewhere" / "x.png", np.zeros((12, 10), np.uint8))
    if how == "symlink":
        (path.parent / "a" / "images" / "p7.png").unlink()
        (path.parent / "a" / "images" / "p7.png").symlink_to(outside)
        message = r"p7.png \(a symbolic link\), which is outside its folder"
    else:
        png(tmp_path / "elsewhere" / "p0.png", np.zeros((12, 10), np.uint8))
        path.write_text(path.read_text().replace('images = "a/images"', 'images = "../elsewhere"'))
        message = "elsewhere, which is outside its folder"
    registry = DatasetRegistry.in_state(tmp_path / "state")
    with pytest.raises(DataError, match=message):
        registry.add("xray", path, by="dana")
    assert registry.list() == []
