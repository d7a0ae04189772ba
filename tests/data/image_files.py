"""Real image files for the image tests: PNG (Pillow), DICOM (pydicom's writer), NIfTI
(nibabel), and a data set file naming them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt


def png(path: Path, pixels: npt.ArrayLike) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels)).save(path)
    return path


def nifti(path: Path, volume: npt.ArrayLike) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(volume), np.eye(4)), path)
    return path


def dicom(
    path: Path,
    pixels: npt.NDArray[np.integer] | None,
    *,
    series: str = "1.2.826.0.1.3680043.8.498.1",
    z: float | None = 0.0,
    instance: int = 1,
    slope: float = 1.0,
    intercept: float = 0.0,
    modality: str = "CT",
) -> Path:
    """A single-frame 16-bit DICOM file written by pydicom (no pixel data: ``pixels=None``)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SeriesInstanceUID = series
    ds.InstanceNumber = instance
    if z is not None:
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if pixels is not None:
        arr = np.asarray(pixels, dtype=np.uint16)
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def labels(path: Path, rows: list[tuple[str, object]], header: str = "file,label") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(f"{f},{v}\n" for f, v in rows))
    return path


def png_site(
    root: Path, site: str, n: int = 6, *, shape: tuple[int, int] = (12, 10), seed: int = 0
) -> list[tuple[str, object]]:
    """``n`` 8-bit PNGs in ``root/site/images`` and their labels file (yes/no alternating)."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, object]] = []
    for i in range(n):
        png(root / site / "images" / f"p{i}.png", (rng.random(shape) * 255).astype(np.uint8))
        rows.append((f"p{i}.png", "yes" if i % 2 else "no"))
    labels(root / site / "labels.csv", rows)
    return rows


def data_file(root: Path, head: str, sites: dict[str, dict[str, str]]) -> Path:
    text = head.strip() + "\n"
    for name, entry in sites.items():
        text += f"[sites.{name}]\n" + "".join(f'{k} = "{v}"\n' for k, v in entry.items())
    (root / "data.toml").write_text(text)
    return root / "data.toml"


def classified(site: str) -> dict[str, str]:
    return {"images": f"{site}/images", "labels": f"{site}/labels.csv"}
