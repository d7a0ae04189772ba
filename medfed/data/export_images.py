"""Write an image data set as files per site, labels files and its data set file (the layout
is in :mod:`medfed.data.export`): 2D images as PNG, 3D volumes as NIfTI (``.nii.gz``, float32
as they are, masks as uint8)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tomli_w

from medfed.data.base import FederatedDataset, TaskKind
from medfed.errors import DataError
from medfed.serde import atomic_write

__all__ = ["export_images"]

_LEVELS = {1: 65535, 3: 255}  # 16-bit grayscale PNG; Pillow writes RGB as 8 bits


def export_images(dataset: FederatedDataset, folder: str | Path) -> Path:
    """Write ``dataset``'s images into ``folder``; returns the path of its data set file."""
    spec = dataset.spec
    channels = spec.input_shape[0]
    volumes = len(spec.input_shape) == 4
    if volumes and channels != 1:
        raise DataError(f"{dataset.name}: {channels} channels; NIfTI export takes 1")
    if not volumes and channels not in _LEVELS:
        raise DataError(f"{dataset.name}: {channels} channels; PNG export takes 1 or 3")
    segmentation = spec.kind is TaskKind.SEGMENTATION
    if segmentation and spec.n_classes > 256:
        raise DataError(f"{dataset.name}: {spec.n_classes} classes do not fit an 8-bit mask")
    xs = [x for s in dataset.sites for x in (s.x_train, s.x_test) if len(x)]
    low = float(min(x.min() for x in xs))
    high = float(max(x.max() for x in xs))
    levels = _LEVELS.get(channels, 1)
    slope = (high - low) / levels if high > low else 1.0
    if volumes:  # float32 as they are
        low, slope = 0.0, 1.0
    suffix = ".nii.gz" if volumes else ".png"
    out = Path(folder)
    sites: dict[str, dict[str, str]] = {}
    for site in dataset.sites:
        base = out / site.name
        (base / "images").mkdir(parents=True, exist_ok=True)
        if segmentation:
            (base / "masks").mkdir(parents=True, exist_ok=True)
        for part, x, y in (
            ("train", site.x_train, site.y_train),
            ("test", site.x_test, site.y_test),
        ):
            names = [f"{part}-{i:05d}{suffix}" for i in range(len(x))]
            for name, image in zip(names, x, strict=True):
                if volumes:
                    _nifti(base / "images" / name, image[0].astype(np.float32))
                else:
                    _png(base / "images" / name, image, low, slope, levels)
            if segmentation:
                for name, mask in zip(names, y, strict=True):
                    if volumes:
                        _nifti(base / "masks" / name, np.asarray(mask, dtype=np.uint8))
                    else:
                        _mask_png(base / "masks" / name, mask)
            if part == "test" or not segmentation:  # segmentation: the test list only
                _labels(
                    base / f"{'labels' if part == 'train' else 'test'}.csv", names, y, spec.kind
                )
        entry = {"images": f"{site.name}/images", "test": f"{site.name}/test.csv"}
        if segmentation:
            entry["masks"] = f"{site.name}/masks"
        else:
            entry["labels"] = f"{site.name}/labels.csv"
        sites[site.name] = entry
    body: dict[str, object] = {"task": str(spec.kind), "channels": channels}
    if segmentation:
        body["classes"] = ["background", *[f"class-{k}" for k in range(1, spec.n_classes)]]
    body.update(intensity="none", rescale=[slope, low], sites=sites)
    path = out / "data.toml"
    header = (
        f"# {dataset.name}, exported by `medfed data export` ({len(dataset.sites)} sites).\n"
        + (
            "# NIfTI volumes hold the bundled intensities as they are.\n"
            if volumes
            else "# PNG pixels * slope + intercept (rescale) are the bundled intensities.\n"
        )
    )
    atomic_write(path, header + tomli_w.dumps(body))
    return path


def _png(path: Path, image: npt.NDArray[np.float32], low: float, slope: float, levels: int) -> None:
    from PIL import Image

    q = np.clip(np.rint((image.astype(np.float64) - low) / slope), 0, levels)
    if image.shape[0] == 1:
        Image.fromarray(q[0].astype(np.uint16)).save(path)
    else:
        Image.fromarray(np.moveaxis(q, 0, -1).astype(np.uint8), mode="RGB").save(path)


def _nifti(path: Path, volume: npt.NDArray[np.generic]) -> None:
    """A (depth, height, width) volume as NIfTI (x = width, y = height, z = depth; identity
    affine), the axes medfed's reader gives back."""
    import nibabel as nib

    data = np.ascontiguousarray(volume.transpose(2, 1, 0))
    image = nib.Nifti1Image(data, np.eye(4))  # type: ignore[no-untyped-call]
    nib.save(image, str(path))


def _mask_png(path: Path, mask: npt.NDArray[np.generic]) -> None:
    from PIL import Image

    Image.fromarray(np.asarray(mask, dtype=np.uint8)).save(path)


def _labels(path: Path, names: list[str], y: npt.NDArray[np.generic], kind: TaskKind) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if kind is TaskKind.SEGMENTATION:
            writer.writerow(["file"])
            writer.writerows([n] for n in names)
            return
        writer.writerow(["file", "label"])
        for name, value in zip(names, y, strict=True):
            label = repr(float(value)) if kind is TaskKind.REGRESSION else int(value)
            writer.writerow([name, label])
