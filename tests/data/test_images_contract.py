"""Image contracts: the model's input from the contract alone, each site's images checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfed.data.base import TaskKind
from medfed.data.contract import read_contract
from medfed.data.files import load_data_file
from medfed.data.image_contract import ImageContract, read_any_contract
from medfed.errors import DataError
from tests.data.image_files import classified, data_file, dicom, labels, png, png_site

XRAY = """
name = "xray"
version = "3"
task = "binary"
format = "png"
size = [8, 8]
channels = 1
intensity = "minmax"
label = "finding"
classes = ["normal", "pneumonia"]
positive = "pneumonia"
"""


def _site(root: Path, site: str, values: list[str]) -> None:
    png_site(root, site, n=len(values))
    labels(
        root / site / "labels.csv", [(f"p{i}.png", v) for i, v in enumerate(values)], "file,finding"
    )


def test_the_spec_comes_from_the_contract_and_failing_sites_are_left_out(tmp_path: Path) -> None:
    (tmp_path / "xray.contract.toml").write_text(XRAY)
    contract = read_any_contract(tmp_path / "xray.contract.toml")
    assert isinstance(contract, ImageContract) and len(contract.sha256) == 64
    spec = contract.spec()
    assert spec.kind is TaskKind.BINARY and spec.input_shape == (1, 8, 8)
    assert contract.classes() == ("normal", "pneumonia")
    _site(tmp_path, "good", ["normal", "pneumonia"] * 3)
    _site(tmp_path, "badlabel", ["normal", "pneumonia", "covid", "covid", "normal"])
    _site(tmp_path, "dicom", ["normal", "pneumonia", "normal"])
    dicom(tmp_path / "dicom" / "images" / "p0.dcm", np.zeros((8, 8), np.uint16))
    labels(
        tmp_path / "dicom" / "labels.csv",
        [("p0.dcm", "normal"), ("p1.png", "pneumonia"), ("p2.png", "normal")],
        "file,finding",
    )
    path = data_file(
        tmp_path,
        'contract = "xray.contract.toml"',
        {s: classified(s) for s in ("good", "badlabel", "dicom")},
    )
    ds = load_data_file(path)
    assert ds.site_names == ["good"] and ds.spec == spec
    good = ds.site("good")
    assert good.x_train.shape[1:] == (1, 8, 8)  # 12×10 PNGs resized to the contract's size
    assert int(good.y_train.sum() + good.y_test.sum()) == 3  # pneumonia is class 1
    assert (
        "column 'finding': must be one of ['normal', 'pneumonia'], 2 row(s) (data rows 3, 4"
        in ds.notes["left out: badlabel"]
    )
    assert "format: must be png, 1 image(s) (p0.dcm" in ds.notes["left out: dicom"]
    assert "contract xray v3" in ds.notes["contract"]


def test_a_contract_for_images_is_not_a_table_contract_and_the_reverse(tmp_path: Path) -> None:
    from tests.data.test_contract import CONTRACT

    (tmp_path / "xray.toml").write_text(XRAY)
    with pytest.raises(DataError, match="is a contract for images"):
        read_contract(tmp_path / "xray.toml")
    (tmp_path / "table.toml").write_text(CONTRACT)
    png_site(tmp_path, "a", n=4)
    path = data_file(tmp_path, 'contract = "table.toml"', {"a": classified("a")})
    with pytest.raises(DataError, match="is a contract for tables"):
        load_data_file(path)
    path = data_file(tmp_path, 'contract = "xray.toml"\nsize = [4, 4]', {"a": classified("a")})
    with pytest.raises(DataError, match=r"come from it: drop \['size'\]"):
        load_data_file(path)


def test_modality_dimensions_and_mask_classes_are_checked(tmp_path: Path) -> None:
    (tmp_path / "seg.toml").write_text(
        'name = "seg"\nversion = "1"\ntask = "segmentation"\nformat = ["dicom", "png"]\n'
        'modality = "MR"\nsize = [6, 6]\nclasses = ["background", "lesion"]\n'
    )
    for i in range(3):
        dicom(tmp_path / "a" / "images" / f"s{i}.dcm", np.full((6, 6), i, np.uint16), modality="CT")
        png(tmp_path / "a" / "masks" / f"s{i}.png", np.full((6, 6), i, np.uint8))  # 2 is no class
    path = data_file(
        tmp_path, 'contract = "seg.toml"', {"a": {"images": "a/images", "masks": "a/masks"}}
    )
    with pytest.raises(DataError, match="no site passes the data contract") as err:
        load_data_file(path)
    said = str(err.value)
    assert "modality: must be DICOM Modality MR, 3 image(s)" in said
    assert "masks: values must be classes 0–1 (background, lesion), 1 image(s) (s2.dcm" in said


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('format = "png"', 'format = "tiff"'), "format must be one of"),
        (("size = [8, 8]", ""), "size = \\[height, width\\]"),
        (('classes = ["normal", "pneumonia"]', 'classes = ["normal"]'), "lists its classes"),
        (('positive = "pneumonia"', 'positive = "covid"'), "positive = 'covid'"),
        (("channels = 1", "chanels = 1"), "did you mean 'channels'"),
        (('task = "binary"', 'task = "survival"'), "an image task is one of"),
    ],
)
def test_each_bad_image_contract_is_one_clear_error(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    (tmp_path / "c.toml").write_text(XRAY.replace(*change))
    with pytest.raises(DataError, match=message):
        read_any_contract(tmp_path / "c.toml")
