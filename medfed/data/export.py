"""Write a bundled data set as files: what a consortium would bring, and its data set file.

``medfed data export breast-cancer --out my-data`` gives a folder that looks like what a
consortium brings (``my-data/data.toml`` plus ``SITE_train.csv`` / ``SITE_test.csv``), so the
own-data path (:mod:`medfed.data.files`) can be tried, and tested, without anyone's records.

An image data set (``synthetic-imaging``, 2D ``synthetic-segmentation``) becomes one folder per
site: ``SITE/images/*.png``, ``SITE/labels.csv`` and ``SITE/test.csv`` (columns ``file`` and
``label``; segmentation: ``SITE/masks/*.png`` named like the images, and ``SITE/test.csv``
lists the test images).
The images are 16-bit grayscale PNG (8-bit for RGB) over the data set's whole intensity range;
the data set file's ``rescale = [slope, intercept]`` turns the pixels back into the
intensities and ``intensity = "none"`` keeps them, so loading the files gives the bundled
arrays up to the PNG's quantisation (half a ``slope``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tomli_w

from medfed.data.base import FederatedDataset, TaskKind
from medfed.errors import DataError
from medfed.serde import atomic_write

__all__ = ["export_dataset"]


def export_dataset(dataset: FederatedDataset, folder: str | Path) -> Path:
    """Write ``dataset`` into ``folder``; returns the path of its data set file."""
    if len(dataset.spec.input_shape) in (3, 4):  # 2D images, 3D volumes (with channels)
        from medfed.data.export_images import export_images

        return export_images(dataset, folder)
    if len(dataset.spec.input_shape) != 1:
        raise DataError(
            f"{dataset.name} holds inputs of shape {dataset.spec.input_shape}: tables, 2D images "
            "and 3D volumes can be exported (as CSV, PNG and NIfTI files)"
        )
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    features = list(dataset.spec.feature_names) or [
        f"x{i}" for i in range(dataset.spec.input_shape[0])
    ]
    survival = dataset.spec.kind is TaskKind.SURVIVAL
    outcome = ["time", "event"] if survival else ["outcome"]
    clash = set(features) & {*outcome, "patient_id"}
    if clash:
        raise DataError(f"{dataset.name}: a feature is named like an outcome column: {clash}")
    sites: dict[str, dict[str, str]] = {}
    for site in dataset.sites:
        files = {}
        parts = (("train", site.x_train, site.y_train), ("test", site.x_test, site.y_test))
        for part, x, y in parts:
            name = f"{site.name}_{part}.csv"
            _write_csv(out / name, features, outcome, x, y, prefix=f"{site.name}-{part}-")
            files[part] = name
        sites[site.name] = files
    spec: dict[str, object] = {"task": str(dataset.spec.kind)}
    if survival:
        spec.update(time="time", event="event")
    else:
        spec["label"] = "outcome"
    spec.update(id_column="patient_id", standardize="none", sites=sites)
    path = out / "data.toml"
    header = (
        f"# {dataset.name}, exported by `medfed data export` ({len(dataset.sites)} sites).\n"
        "# The features are as medfed's loader prepared them (already standardised).\n"
    )
    atomic_write(path, header + tomli_w.dumps(spec))
    return path


def _write_csv(
    path: Path,
    features: list[str],
    outcome: list[str],
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.generic],
    *,
    prefix: str,
) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patient_id", *features, *outcome])
        labels = y.reshape(len(y), -1)
        for i in range(len(x)):
            label = [f"{v:.6g}" if labels.dtype.kind == "f" else int(v) for v in labels[i]]
            if len(outcome) == 2:  # survival: time, then a whole event flag
                label[1] = int(float(label[1]))
            writer.writerow([f"{prefix}{i}", *(repr(float(v)) for v in x[i]), *label])
    tmp.replace(path)
