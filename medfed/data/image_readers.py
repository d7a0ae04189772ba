"""One image (or volume) file as an array, whatever its format, and resizing.

Every reader gives float32 ``(channels, height, width)`` for a 2D image or ``(channels,
depth, height, width)`` for a volume, in the file's own units: PNG/JPEG pixel values
(0–255, 0–65535 for 16-bit PNG), DICOM values after its rescale (:mod:`.images_dicom`),
NIfTI values after its ``scl_slope``/``scl_inter``. A NIfTI volume is first turned to the
closest canonical (RAS+) orientation, so that volumes stored in different axis orders at
different sites line up; its array is then read as ``(depth, height, width) = (z, y, x)``.

An entry of an images folder is a file with one of :data:`SUFFIXES` or a folder (one DICOM
series). A file that cannot be read is a :class:`~medfed.errors.DataError` naming it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from medfed.data.images_dicom import read_dicom_file, read_dicom_series
from medfed.errors import DataError

__all__ = ["SUFFIXES", "Stored", "entry_format", "image_entries", "read_image", "resize"]

SUFFIXES = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".dcm": "dicom",
    ".nii": "nifti",
    ".nii.gz": "nifti",
}

Pixels = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Stored:
    """An image as stored: its pixels, format, DICOM modality and, for 8/16-bit PNG/JPEG, the
    largest value its pixel type holds (for ``intensity = "unit"``)."""

    path: Path
    pixels: Pixels  # (channels, *spatial)
    format: str  # png | jpeg | dicom | nifti
    modality: str | None = None
    type_max: float | None = None

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.pixels.shape[1:])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[0])


def entry_name(path: Path) -> str:
    """A file's name without its image suffix (``p1.nii.gz`` -> ``p1``): how an image and
    its mask, which may differ in format, are paired."""
    lower = path.name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def entry_format(path: Path) -> str | None:
    """The format of an images folder's entry: ``"dicom"`` for a folder (a series), by the
    suffix for a file, None for a file that is not an image."""
    if path.is_dir():
        return "dicom"
    lower = path.name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return SUFFIXES[suffix]
    return None


def image_entries(folder: Path) -> tuple[dict[str, Path], list[Path]]:
    """The images in ``folder`` by name (files with an image suffix, and folders: DICOM
    series), and the other files (not images: left out). Hidden entries are skipped."""
    images: dict[str, Path] = {}
    others: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if entry_format(path) is None:
            others.append(path)
        else:
            images[path.name] = path
    return images, others


def read_image(path: Path) -> Stored:
    """The entry at ``path`` read by the reader of its format."""
    fmt = entry_format(path)
    if path.is_dir():
        pixels, modality = read_dicom_series(path)
        return Stored(path, pixels, "dicom", modality)
    if fmt in ("png", "jpeg"):
        return _read_picture(path, fmt)
    if fmt == "dicom":
        pixels, modality = read_dicom_file(path)
        return Stored(path, pixels, "dicom", modality)
    if fmt == "nifti":
        return Stored(path, _read_nifti(path), "nifti")
    raise DataError(f"{path}: not an image medfed reads ({', '.join(sorted(SUFFIXES))})")


def _read_picture(path: Path, fmt: str) -> Stored:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr, type_max = np.asarray(im, dtype=np.uint16), 65535.0
            elif mode == "I":  # 16-bit PNG as some Pillow versions open it
                arr, type_max = np.asarray(im), 65535.0
            elif mode == "F":
                arr, type_max = np.asarray(im), None
            elif mode in ("1", "L", "LA", "La"):
                arr, type_max = np.asarray(im.convert("L")), 255.0
            else:  # RGB, RGBA, P (palette), CMYK, YCbCr: as RGB (an alpha channel dropped)
                arr, type_max = np.asarray(im.convert("RGB")), 255.0
    except UnidentifiedImageError:
        raise DataError(
            f"{path}: not a {fmt.upper()} image (Pillow does not recognise its contents); "
            "export it again or leave it out of the images folder"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{path}: a damaged {fmt.upper()} file ({exc}): truncated or corrupt; export it again"
        ) from None
    pixels = arr.astype(np.float32)
    pixels = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)
    return Stored(path, np.ascontiguousarray(pixels), fmt, None, type_max)


def _read_nifti(path: Path) -> Pixels:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(path)
        if isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            img = nib.as_closest_canonical(img)  # type: ignore[no-untyped-call]
        data = np.asarray(img.get_fdata(dtype=np.float32))  # type: ignore[attr-defined]
    except ImageFileError as exc:
        raise DataError(
            f"{path}: not a readable NIfTI file: truncated, damaged or another format ({exc}); "
            "export it again"
        ) from None
    except (OSError, EOFError, ValueError, zlib.error, MemoryError) as exc:
        raise DataError(
            f"{path}: a damaged NIfTI file ({str(exc).splitlines()[0] or type(exc).__name__}): "
            "truncated or corrupt; export it again"
        ) from None
    while data.ndim > 2 and data.shape[-1] == 1:  # (x, y, 1) is a 2D image
        data = data[..., 0]
    if data.ndim == 2:
        return np.ascontiguousarray(data.T[None])
    if data.ndim == 3:
        return np.ascontiguousarray(data.transpose(2, 1, 0)[None])
    raise DataError(
        f"{path}: a {data.ndim}D NIfTI image of shape {data.shape}; medfed reads 2D images and "
        "3D volumes (split a time series or a multi-channel file into volumes)"
    )


def resize(pixels: Pixels, size: tuple[int, ...], *, nearest: bool = False) -> Pixels:
    """``(channels, *spatial)`` resized to ``size``: linear interpolation for an image,
    nearest neighbour for a mask (``nearest``: a class index is never blended)."""
    if tuple(pixels.shape[1:]) == tuple(size):
        return pixels
    if len(size) == 2:
        from PIL import Image

        method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
        planes = [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(ch, np.float32)).resize(
                    (size[1], size[0]), method
                )
            )
            for ch in pixels
        ]
        return np.stack(planes).astype(np.float32)
    from scipy import ndimage

    factors = [t / s for t, s in zip(size, pixels.shape[1:], strict=True)]
    planes = [
        ndimage.zoom(ch, factors, order=0 if nearest else 1, mode="nearest", grid_mode=False)
        for ch in pixels
    ]
    return np.stack(planes).astype(np.float32)
