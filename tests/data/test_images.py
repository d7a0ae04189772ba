"""Image data set files: a hospital's own PNG, DICOM and NIfTI files as a data set.

Every file is real: written by Pillow, nibabel and pydicom's writer into tmp_path, or one of
the test files shipped inside the pydicom wheel (never downloaded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfed.data import load_dataset
from medfed.data.base import TaskKind
from medfed.data.files import load_data_file
from medfed.errors import DataError
from tests.data.image_files import (
    classified,
    data_file,
    dicom,
    labels,
    nifti,
    png,
    png_site,
)


def test_png_folders_with_labels_files_are_a_data_set(tmp_path: Path) -> None:
    rows = png_site(tmp_path, "a", n=10)
    png_site(tmp_path, "b", n=8, seed=1)
    (tmp_path / "a" / "images" / "notes.txt").write_text("not an image")
    png(tmp_path / "b" / "images" / "extra.png", np.zeros((12, 10), np.uint8))  # no label
    path = data_file(
        tmp_path,
        'task = "binary"\npositive = "yes"\ntest_fraction = 0.25\n',
        {"a": classified("a"), "b": classified("b")},
    )
    ds = load_data_file(path)
    assert ds.site_names == ["a", "b"]
    assert ds.spec.kind is TaskKind.BINARY and ds.spec.input_shape == (1, 12, 10)
    a = ds.site("a")
    assert a.num_train + a.num_test == 10 and a.num_test == 2  # round(25 % of 10)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert int(a.y_train.sum() + a.y_test.sum()) == sum(v == "yes" for _, v in rows)
    # intensity "zscore": each image has mean 0 and sd 1
    np.testing.assert_allclose(a.x_train.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(a.x_train.std(axis=(1, 2, 3)), 1, atol=1e-4)
    assert ds.notes["images without a label (left out)"] == "b: 1"
    assert ds.notes["files that are not images (left out)"] == "a: 1"
    again = load_dataset(str(path))  # the run file's [data] name takes the path
    np.testing.assert_array_equal(again.site("b").x_test, ds.site("b").x_test)  # a fixed split


def test_size_channels_intensity_and_a_test_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):  # RGB PNGs of two sizes, resized to one
        shape = (20, 16, 3) if i % 2 else (10, 8, 3)
        png(tmp_path / "a" / "images" / f"r{i}.png", (rng.random(shape) * 255).astype(np.uint8))
        rows.append((f"r{i}.png", ["cat", "dog", "eel"][i % 3]))
    labels(tmp_path / "a" / "labels.csv", rows[:4])
    labels(tmp_path / "a" / "test.csv", rows[4:])
    path = data_file(
        tmp_path,
        'task = "multiclass"\nsize = [5, 4]\nchannels = 3\nintensity = "unit"\n',
        {"a": {**classified("a"), "test": "a/test.csv"}},
    )
    site = load_data_file(path).site("a")
    assert site.x_train.shape == (4, 3, 5, 4) and site.x_test.shape == (2, 3, 5, 4)
    assert site.x_train.min() >= 0 and site.x_train.max() <= 1  # pixel / 255
    np.testing.assert_array_equal(site.y_train, [0, 1, 2, 0])  # the labels file's order
    np.testing.assert_array_equal(site.y_test, [1, 2])
    gray = data_file(
        tmp_path,
        'task = "multiclass"\nsize = [5, 4]\nintensity = "minmax"\n',
        {"a": {**classified("a"), "test": "a/test.csv"}},
    )
    x = load_data_file(gray).site("a").x_train
    assert x.shape == (4, 1, 5, 4)  # RGB to its luminance
    np.testing.assert_allclose(x.min(axis=(1, 2, 3)), 0)
    np.testing.assert_allclose(x.max(axis=(1, 2, 3)), 1)


def test_regression_labels_are_float32_targets(tmp_path: Path) -> None:
    png_site(tmp_path, "a", n=6)
    labels(tmp_path / "a" / "labels.csv", [(f"p{i}.png", 40.5 + i) for i in range(6)])
    path = data_file(tmp_path, 'task = "regression"\nlabel = "label"\n', {"a": classified("a")})
    ds = load_data_file(path)
    site = ds.site("a")
    assert site.y_train.dtype == np.float32
    assert ds.spec.target_center == pytest.approx(float(site.y_train.mean()))
    assert sorted([*site.y_train, *site.y_test]) == [40.5 + i for i in range(6)]
    labels(tmp_path / "a" / "labels.csv", [("p0.png", 1), ("p1.png", "high"), ("p2.png", 3)])
    with pytest.raises(DataError, match=r"labels.csv, data row 2: label 'label' must be a finite"):
        load_data_file(path)


def _series(folder: Path, z_order: list[float], *, series: str = "1.2.3.4") -> np.ndarray:
    """Slices written in the order given, each a constant 100*k + a ramp; returns the volume
    in patient order (z ascending) in Hounsfield units (slope 2, intercept -1024)."""
    planes = {}
    for k, z in enumerate(z_order):
        raw = (100 * k + np.arange(12).reshape(3, 4)).astype(np.uint16)
        dicom(
            folder / f"s{k}.dcm",
            raw,
            z=z,
            instance=k + 1,
            slope=2.0,
            intercept=-1024.0,
            series=series,
        )
        planes[z] = raw * 2.0 - 1024.0
    return np.stack([planes[z] for z in sorted(planes)])


def test_dicom_files_and_series_folders(tmp_path: Path) -> None:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    ct_small = Path(str(get_testdata_file("CT_small.dcm", download=False)))
    ref = dcmread(ct_small)
    images = tmp_path / "ct" / "images"
    images.mkdir(parents=True)
    (images / "ct1.dcm").write_bytes(ct_small.read_bytes())
    (images / "ct2.dcm").write_bytes(ct_small.read_bytes())
    labels(tmp_path / "ct" / "labels.csv", [("ct1.dcm", 0), ("ct2.dcm", 1)])
    path = data_file(tmp_path, 'task = "binary"\nintensity = "none"\n', {"ct": classified("ct")})
    site = load_data_file(path).site("ct")
    x = np.concatenate([site.x_train, site.x_test])
    hu = ref.pixel_array * float(ref.RescaleSlope) + float(ref.RescaleIntercept)
    np.testing.assert_allclose(x[0, 0], hu)  # values in Hounsfield units
    windowed = data_file(
        tmp_path, 'task = "binary"\nwindow = [-100, 200]\n', {"ct": classified("ct")}
    )
    site = load_data_file(windowed).site("ct")
    x = np.concatenate([site.x_train, site.x_test])
    np.testing.assert_allclose(x[0, 0], (np.clip(hu, -100, 200) + 100) / 300, rtol=1e-5)

    # a folder of one series' files is one volume, slices in patient order
    expected = _series(tmp_path / "v" / "images" / "vol1", [5.0, -5.0, 0.0])
    _series(tmp_path / "v" / "images" / "vol2", [1.0, 2.0, 3.0], series="1.2.3.5")
    labels(tmp_path / "v" / "labels.csv", [("vol1", 7.5), ("vol2", 2.5)])
    path = data_file(tmp_path, 'task = "regression"\nintensity = "none"\n', {"v": classified("v")})
    ds = load_data_file(path)
    assert ds.spec.input_shape == (1, 3, 3, 4)
    site = ds.site("v")
    volumes = {
        float(y): x
        for x, y in zip([*site.x_train, *site.x_test], [*site.y_train, *site.y_test], strict=True)
    }
    np.testing.assert_allclose(volumes[7.5][0], expected)


def test_a_patients_nested_dicom_tree_is_one_series_and_links_out_are_refused(
    tmp_path: Path,
) -> None:
    """A PACS export's ``patient/study/series/`` tree is read as the patient's volume."""
    root = tmp_path / "v" / "images"
    expected = _series(root / "p1" / "study-1" / "series-3", [2.0, 0.0, 1.0])
    _series(root / "p2" / "study-9" / "series-1", [0.0, 1.0, 2.0], series="1.2.3.9")
    labels(tmp_path / "v" / "labels.csv", [("p1", 1.0), ("p2", 2.0)])
    path = data_file(tmp_path, 'task = "regression"\nintensity = "none"\n', {"v": classified("v")})
    site = load_data_file(path).site("v")
    volumes = {
        float(y): x
        for x, y in zip([*site.x_train, *site.x_test], [*site.y_train, *site.y_test], strict=True)
    }
    np.testing.assert_allclose(volumes[1.0][0], expected)
    # a second series in the patient's tree: one entry is one volume
    _series(root / "p2" / "study-9" / "series-2", [0.0, 1.0, 2.0], series="1.2.3.10")
    with pytest.raises(DataError, match=r"p2: the files belong to 2 series"):
        load_data_file(path)
    for extra in (root / "p2" / "study-9" / "series-2").iterdir():
        extra.unlink()
    outside = tmp_path / "elsewhere.dcm"
    outside.write_bytes((root / "p1" / "study-1" / "series-3" / "s0.dcm").read_bytes())
    (root / "p2" / "study-9" / "series-2" / "link.dcm").symlink_to(outside)
    with pytest.raises(DataError, match=r"link\.dcm: a link to .*outside the series folder"):
        load_data_file(path)


def test_nifti_volumes_with_masks_are_a_segmentation_data_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(5):
        vol = rng.normal(size=(8, 6, 4)).astype(np.float32)  # (x, y, z) as NIfTI stores it
        mask = (vol > 0.5).astype(np.uint8) + (vol > 1.5)
        nifti(tmp_path / "a" / "images" / f"case{i}.nii.gz", vol)
        nifti(tmp_path / "a" / "masks" / f"case{i}.nii.gz", mask)
        truth[f"case{i}"] = mask.transpose(2, 1, 0)  # read as (z, y, x)
    path = data_file(
        tmp_path,
        'task = "segmentation"\nclasses = ["background", "edge", "core"]\n',
        {"a": {"images": "a/images", "masks": "a/masks"}},
    )
    ds = load_data_file(path)
    assert ds.spec.kind is TaskKind.SEGMENTATION and ds.spec.n_classes == 3
    assert ds.spec.input_shape == (1, 4, 6, 8)
    site = ds.site("a")
    assert site.y_train.dtype == np.int64 and site.y_train.shape[1:] == (4, 6, 8)
    masks = sorted(truth.values(), key=lambda m: m.tobytes())
    got = sorted([*site.y_train, *site.y_test], key=lambda m: m.astype(np.uint8).tobytes())
    for a, b in zip(masks, got, strict=True):
        np.testing.assert_array_equal(a, b)
    # resized volumes: masks by nearest neighbour (still class indices), images linearly
    resized = data_file(
        tmp_path,
        'task = "segmentation"\nsize = [2, 3, 4]\n',
        {"a": {"images": "a/images", "masks": "a/masks"}},
    )
    ds = load_data_file(resized)
    assert ds.spec.input_shape == (1, 2, 3, 4) and ds.spec.n_classes == 3  # from the masks
    assert set(np.unique(ds.site("a").y_train)) <= {0, 1, 2}


def test_png_masks_pair_with_images_by_name_and_a_test_list(tmp_path: Path) -> None:
    for i in range(4):
        png(tmp_path / "a" / "images" / f"s{i}.png", np.full((6, 6), 10 * i, np.uint8))
        mask = np.zeros((6, 6), np.uint8)
        mask[i:, :2] = 1
        png(tmp_path / "a" / "masks" / f"s{i}.png", mask)
    png(tmp_path / "a" / "images" / "nomask.png", np.zeros((6, 6), np.uint8))
    (tmp_path / "a" / "test.csv").write_text("file\ns3.png\n")
    path = data_file(
        tmp_path,
        'task = "segmentation"\n',
        {"a": {"images": "a/images", "masks": "a/masks", "test": "a/test.csv"}},
    )
    ds = load_data_file(path)
    site = ds.site("a")
    assert site.x_train.shape == (3, 1, 6, 6) and site.y_test.shape == (1, 6, 6)
    assert int(site.y_test.sum()) == 3 * 2  # s3's mask
    assert ds.notes["images without a mask (left out)"] == "a: 1"


def test_an_exported_imaging_set_loads_back_as_the_same_arrays(tmp_path: Path) -> None:
    from medfed.data.export import export_dataset

    bundled = load_dataset("synthetic-imaging", num_sites=2, options={"num_images": 80})
    path = export_dataset(bundled, tmp_path / "imgs")
    assert (tmp_path / "imgs" / "imaging-site-01" / "images" / "train-00000.png").is_file()
    assert (
        (tmp_path / "imgs" / "imaging-site-01" / "labels.csv")
        .read_text()
        .startswith("file,label\n")
    )
    again = load_data_file(path)
    assert again.spec == bundled.spec and again.site_names == bundled.site_names
    import tomllib

    slope = tomllib.loads(path.read_text())["rescale"][0]
    for a, b in zip(bundled.sites, again.sites, strict=True):
        np.testing.assert_allclose(b.x_train, a.x_train, atol=slope / 2 + 1e-6)  # 16-bit PNG
        np.testing.assert_allclose(b.x_test, a.x_test, atol=slope / 2 + 1e-6)
        np.testing.assert_array_equal(b.y_train, a.y_train)
        np.testing.assert_array_equal(b.y_test, a.y_test)


def test_exported_segmentation_scans_and_masks_load_back(tmp_path: Path) -> None:
    from medfed.data.export import export_dataset

    options = {"num_images": 24, "image_size": 16}
    bundled = load_dataset("synthetic-segmentation", num_sites=2, options=options)
    again = load_data_file(export_dataset(bundled, tmp_path / "seg"))
    assert again.spec == bundled.spec and again.spec.n_classes == 2
    for a, b in zip(bundled.sites, again.sites, strict=True):
        np.testing.assert_allclose(b.x_test, a.x_test, atol=1e-4)
        np.testing.assert_array_equal(b.y_train, a.y_train)
        np.testing.assert_array_equal(b.y_test, a.y_test)
        assert b.y_train.dtype == np.int64


def test_exported_volumes_and_masks_load_back_exactly(tmp_path: Path) -> None:
    """3D volumes go out as NIfTI (float32 as they are) and come back voxel for voxel."""
    from medfed.data.export import export_dataset

    options = {"num_images": 24, "image_size": 16, "depth": 8, "volume": True}
    bundled = load_dataset("synthetic-segmentation", num_sites=2, options=options)
    path = export_dataset(bundled, tmp_path / "vol")
    assert (tmp_path / "vol" / bundled.site_names[0] / "masks" / "test-00000.nii.gz").is_file()
    again = load_data_file(path)
    assert again.spec == bundled.spec and again.spec.input_shape == (1, 8, 16, 16)
    for a, b in zip(bundled.sites, again.sites, strict=True):
        np.testing.assert_array_equal(b.x_train, a.x_train)
        np.testing.assert_array_equal(b.x_test, a.x_test)
        np.testing.assert_array_equal(b.y_train, a.y_train)
        np.testing.assert_array_equal(b.y_test, a.y_test)
