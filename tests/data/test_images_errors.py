"""Each bad image file is one clear DataError: which file, which rule, where — no traceback
from a reader, and nothing read out of the site (the message names files, never pixels)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from medfed.cli.main import cli
from medfed.data.files import load_data_file
from medfed.errors import DataError
from tests.data.image_files import classified, data_file, dicom, labels, nifti, png, png_site


def _load_fails(path: Path, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_data_file(path)


def _one_site(tmp_path: Path, head: str = 'task = "binary"') -> Path:
    png_site(tmp_path, "a", n=4)
    return data_file(tmp_path, head, {"a": classified("a")})


def test_a_dicom_file_without_pixel_data(tmp_path: Path) -> None:
    path = _one_site(tmp_path)
    dicom(tmp_path / "a" / "images" / "p0.dcm", None)  # a header-only object
    labels(tmp_path / "a" / "labels.csv", [("p0.dcm", 0), ("p1.png", 1), ("p2.png", 0)])
    _load_fails(path, r"p0.dcm: has no pixel data \(no \(7FE0,0010\) Pixel Data element\)")


def test_a_truncated_dicom_file_from_pydicom(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    truncated = Path(str(get_testdata_file("MR_truncated.dcm", download=False)))
    path = _one_site(tmp_path)
    (tmp_path / "a" / "images" / "mr.dcm").write_bytes(truncated.read_bytes())
    labels(tmp_path / "a" / "labels.csv", [("mr.dcm", 0), ("p1.png", 1), ("p2.png", 0)])
    _load_fails(path, r"mr.dcm: its pixel data cannot be decoded .*truncated")


def test_a_file_that_is_not_dicom(tmp_path: Path) -> None:
    path = _one_site(tmp_path)
    (tmp_path / "a" / "images" / "x.dcm").write_bytes(b"\0" * 300)
    labels(tmp_path / "a" / "labels.csv", [("x.dcm", 0), ("p1.png", 1), ("p2.png", 0)])
    _load_fails(path, r"x.dcm: not a DICOM file")


def test_a_truncated_nifti(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        nifti(tmp_path / "a" / "images" / f"v{i}.nii.gz", rng.normal(size=(16, 16, 8)))
    whole = (tmp_path / "a" / "images" / "v1.nii.gz").read_bytes()
    (tmp_path / "a" / "images" / "v1.nii.gz").write_bytes(whole[: len(whole) // 2])
    labels(tmp_path / "a" / "labels.csv", [(f"v{i}.nii.gz", i % 2) for i in range(3)])
    path = data_file(tmp_path, 'task = "binary"', {"a": classified("a")})
    _load_fails(path, r"v1.nii.gz: a damaged NIfTI file .*truncated or corrupt")


@pytest.mark.parametrize("cut", ["half", "header"])
def test_a_truncated_or_corrupt_png(tmp_path: Path, cut: str) -> None:
    path = _one_site(tmp_path)
    target = tmp_path / "a" / "images" / "p2.png"
    whole = target.read_bytes()
    target.write_bytes(whole[: len(whole) // 2] if cut == "half" else b"\x89PNG garbage")
    rule = "a damaged PNG file" if cut == "half" else "not a PNG image"
    _load_fails(path, rf"p2.png: {rule}")


def test_a_labels_row_naming_an_image_that_does_not_exist(tmp_path: Path) -> None:
    path = _one_site(tmp_path)
    labels(tmp_path / "a" / "labels.csv", [("p0.png", 0), ("p9.png", 1)])
    _load_fails(path, r"labels.csv, data row 2: image 'p9.png' is not in .*images")


def test_an_image_not_in_the_labels_file_is_left_out_and_counted(tmp_path: Path) -> None:
    path = _one_site(tmp_path)
    labels(tmp_path / "a" / "labels.csv", [("p0.png", 0), ("p1.png", 1), ("p2.png", 1)])
    ds = load_data_file(path)
    assert ds.site("a").num_train + ds.site("a").num_test == 3
    assert ds.notes["images without a label (left out)"] == "a: 1"


def test_mixed_sizes_without_size(tmp_path: Path) -> None:
    path = _one_site(tmp_path)
    png(tmp_path / "a" / "images" / "p3.png", np.zeros((30, 20), np.uint8))
    _load_fails(path, r"p3.png is 30×20 but .*p0.png is 12×10: .* give size = \[12, 10\]")


def test_a_mask_of_another_shape_than_its_image(tmp_path: Path) -> None:
    for i in range(3):
        png(tmp_path / "a" / "images" / f"s{i}.png", np.zeros((8, 8), np.uint8))
        png(tmp_path / "a" / "masks" / f"s{i}.png", np.zeros((8, 8) if i else (8, 7), np.uint8))
    path = data_file(
        tmp_path, 'task = "segmentation"', {"a": {"images": "a/images", "masks": "a/masks"}}
    )
    _load_fails(path, r"masks/s0.png: the mask is 8×7 but its image s0.png is 8×8")


def test_mask_values_outside_the_classes(tmp_path: Path) -> None:
    for i in range(3):
        png(tmp_path / "a" / "images" / f"s{i}.png", np.zeros((8, 8), np.uint8))
        png(tmp_path / "a" / "masks" / f"s{i}.png", np.full((8, 8), 2 * i, np.uint8))
    path = data_file(
        tmp_path,
        'task = "segmentation"\nclasses = ["background", "tumour"]',
        {"a": {"images": "a/images", "masks": "a/masks"}},
    )
    _load_fails(path, r"s1.png: mask value 2 is not a class: classes = \['background', 'tumour'\]")


def test_a_mask_without_an_image(tmp_path: Path) -> None:
    for i in range(3):
        png(tmp_path / "a" / "images" / f"s{i}.png", np.zeros((8, 8), np.uint8))
        png(tmp_path / "a" / "masks" / f"s{i}.png", np.zeros((8, 8), np.uint8))
    png(tmp_path / "a" / "masks" / "s7.png", np.zeros((8, 8), np.uint8))
    path = data_file(
        tmp_path, 'task = "segmentation"', {"a": {"images": "a/images", "masks": "a/masks"}}
    )
    _load_fails(path, r"s7.png: a mask without an image \(no s7.\* in")


@pytest.mark.parametrize(
    ("head", "site", "message"),
    [
        ('task = "binary"\nsize = [0, 4]', None, "size must be"),
        ('task = "binary"\nchannels = 2', None, "channels must be 1"),
        ('task = "binary"\nintensity = "zscor"', None, "intensity must be one of"),
        ('task = "binary"\nwindow = [400, -1000]', None, "low < high"),
        ('task = "survival"', None, "an image task is one of"),
        ('task = "binary"\nclasses = ["a", "b"]', None, "classes names the mask classes"),
        ('task = "segmentation"', {"images": "a/images", "labels": "a/labels.csv"}, "masks ="),
        ('task = "binary"', {"images": "a/nope", "labels": "a/labels.csv"}, "no such folder"),
        ('task = "binary"\nsizes = [2, 2]', None, "did you mean 'size'"),
    ],
)
def test_each_bad_image_data_set_file_is_one_clear_error(
    tmp_path: Path, head: str, site: dict[str, str] | None, message: str
) -> None:
    png_site(tmp_path, "a", n=4)
    _load_fails(data_file(tmp_path, head, {"a": site or classified("a")}), message)


def test_the_command_line_shows_one_sentence_and_exit_2(tmp_path: Path) -> None:
    path = _one_site(tmp_path)
    (tmp_path / "a" / "images" / "p1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    result = CliRunner().invoke(cli, ["simulate", "--data", str(path), "--rounds", "1"])
    assert result.exit_code == 2, result.output
    assert re.search(r"p1.png: a damaged PNG file|p1.png: not a PNG image", result.output)
    assert "Traceback" not in result.output
