"""DICOM images as arrays: one file is a 2D image (or a volume when it holds several frames);
a folder of files of one series is a 3D volume.

A series folder's slices are put in order along the patient axis they were acquired on: the
position of each slice (``ImagePositionPatient``) projected on the normal of its orientation
(``ImageOrientationPatient``), or ``InstanceNumber`` when a file lacks either. The stored
values become the scanner's units through ``RescaleSlope`` and ``RescaleIntercept`` (CT:
Hounsfield units) and ``MONOCHROME1`` images are inverted, so that a higher value is always
brighter. Every file is read by pydicom alone (nothing is decoded by guessing): a file that is
not DICOM, has no pixel data, or whose pixels pydicom cannot decode is a
:class:`~medfed.errors.DataError` naming the file and what to do.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medfed.errors import DataError

__all__ = ["read_dicom_file", "read_dicom_series"]

Pixels = npt.NDArray[np.float32]
MAX_SERIES_FILES = 5000  # slices of one series folder (a CT is a few hundred)


def _dataset(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        raise DataError(
            f"{path}: not a DICOM file (no 'DICM' preamble); export the images as DICOM "
            "Part 10 files, or leave this file out of the images folder"
        ) from None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: a damaged DICOM file ({exc}); export it again") from None


def _pixels(path: Path, ds: Any) -> npt.NDArray[np.float32]:
    """The frames of ``ds`` as float32 ``(frames, rows, cols, samples)`` in stored units."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(
            f"{path}: has no pixel data (no (7FE0,0010) Pixel Data element): a DICOM object "
            "that is not an image (a report, a structure set, a header-only export); leave it "
            "out of the images folder"
        )
    try:
        raw = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, TypeError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "unknown")
        raise DataError(
            f"{path}: its pixel data cannot be decoded (transfer syntax {name}: "
            f"{str(exc).splitlines()[0]}); the file is truncated, or it needs a decoder "
            "plugin: export it uncompressed"
        ) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    arr = np.asarray(raw)
    if frames == 1:
        arr = arr[None]
    if samples == 1:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise DataError(f"{path}: pixel data of shape {raw.shape} are not an image medfed reads")
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        bits = int(ds.get("BitsStored", 16) or 16)
        arr = (2**bits - 1) - arr if int(ds.get("PixelRepresentation", 0)) == 0 else -arr
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return (arr.astype(np.float64) * slope + intercept).astype(np.float32)


def read_dicom_file(path: Path) -> tuple[Pixels, str | None]:
    """One DICOM file: ``(channels, rows, cols)`` for a single frame, ``(channels, frames,
    rows, cols)`` for a multi-frame file; and its Modality."""
    ds = _dataset(path)
    px = _pixels(path, ds)  # (frames, rows, cols, samples)
    modality = str(ds.get("Modality", "")) or None
    if px.shape[0] == 1:
        return np.moveaxis(px[0], -1, 0), modality
    return np.moveaxis(px, -1, 0), modality


def _position(ds: Any) -> float | None:
    try:
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient], np.float64)
        position = np.asarray([float(v) for v in ds.ImagePositionPatient], np.float64)
    except (AttributeError, TypeError, ValueError):
        return None
    if orientation.shape != (6,) or position.shape != (3,):
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    return float(position @ normal)


def read_dicom_series(folder: Path) -> tuple[Pixels, str | None]:
    """A folder of one series' single-frame files as one ``(channels, slices, rows, cols)``
    volume in the patient axis order; and the series' Modality.

    The files may sit in nested folders (a patient's ``study/series/`` tree as a PACS export
    writes it), as long as they are all one series and all inside ``folder``.
    """
    inside = folder.resolve()
    files = []
    for p in sorted(folder.rglob("*")):
        parts = p.relative_to(folder).parts
        if any(part.startswith(".") for part in parts) or p.name.upper() == "DICOMDIR":
            continue
        if not p.is_file():
            continue
        if not p.resolve().is_relative_to(inside):
            raise DataError(
                f"{p}: a link to {p.resolve()}, outside the series folder {folder}; copy the "
                "file in instead"
            )
        files.append(p)
        if len(files) > MAX_SERIES_FILES:
            raise DataError(
                f"{folder}: more than {MAX_SERIES_FILES} files; a folder in images holds one "
                "series (one volume)"
            )
    if not files:
        raise DataError(f"{folder}: an empty folder; a folder in images is one DICOM series")
    slices: list[tuple[Path, Any]] = [(p, _dataset(p)) for p in files]
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) != 1 or "" in series:
        raise DataError(
            f"{folder}: the files belong to {len(series - {''})} series"
            + (" (some have no SeriesInstanceUID)" if "" in series else "")
            + "; a folder in images holds one series (one volume): put each series in its own "
            "folder"
        )
    keyed: list[tuple[float, Path, Any]] = []
    positions = [_position(ds) for _, ds in slices]
    numbers = [ds.get("InstanceNumber") for _, ds in slices]
    if all(p is not None for p in positions):
        keyed = [(float(k), p, ds) for k, (p, ds) in zip(positions, slices, strict=True)]  # type: ignore[arg-type]
    elif all(n is not None for n in numbers):
        keyed = [(float(k), p, ds) for k, (p, ds) in zip(numbers, slices, strict=True)]
    else:
        raise DataError(
            f"{folder}: cannot put the slices in order: some files have neither "
            "ImagePositionPatient with ImageOrientationPatient nor InstanceNumber"
        )
    keyed.sort(key=lambda t: t[0])
    for (k0, p0, _), (k1, p1, _) in itertools.pairwise(keyed):
        if k0 == k1:
            raise DataError(
                f"{folder}: {p0.name} and {p1.name} are at the same slice position; a series "
                "folder holds each slice once"
            )
    planes = []
    for _, p, ds in keyed:
        px = _pixels(p, ds)
        if px.shape[0] != 1:
            raise DataError(
                f"{p}: a multi-frame file inside a series folder; give it as a file of its own"
            )
        planes.append(px[0])
    shapes = {pl.shape for pl in planes}
    if len(shapes) != 1:
        raise DataError(
            f"{folder}: the slices differ in size ({', '.join(sorted(map(str, shapes)))}); "
            "a series folder holds slices of one size"
        )
    volume = np.stack(planes)  # (slices, rows, cols, samples)
    modality = str(keyed[0][2].get("Modality", "")) or None
    return np.moveaxis(volume, -1, 0), modality
