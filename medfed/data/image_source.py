"""An image data set file, parsed and checked (the syntax is in :mod:`medfed.data.images`)."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfed.data.base import TaskKind
from medfed.data.data_file import read_toml
from medfed.data.image_contract import (
    IMAGE_KINDS,
    ImageContract,
    ImageSettings,
    image_settings,
    read_any_contract,
)
from medfed.errors import DataError

__all__ = ["ImageSite", "ImageSource", "read_image_source"]

_KEYS = {
    "task",
    "label",
    "file_column",
    "positive",
    "classes",
    "size",
    "channels",
    "intensity",
    "window",
    "rescale",
    "test_fraction",
    "seed",
    "contract",
    "sites",
}
_FROM_CONTRACT = ("task", "label", "positive", "classes", "size", "channels", "intensity", "window")
_SITE_KEYS = {"images", "labels", "masks", "test"}
_TABLES = {".csv", ".parquet", ".pq"}


@dataclass(frozen=True)
class ImageSite:
    name: str
    images: Path  # a folder
    labels: Path | None = None  # classification/regression: file,label rows
    masks: Path | None = None  # segmentation: a folder of masks named like the images
    test: Path | None = None  # the site's test images: a labels file (segmentation: file list)

    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.images, self.labels, self.masks, self.test) if p is not None)


@dataclass(frozen=True)
class ImageSource:
    """An image data set file, read and checked (the images themselves are read later)."""

    path: Path
    kind: TaskKind
    settings: ImageSettings
    label: str = "label"
    file_column: str = "file"
    positive: Any = None
    classes: tuple[str, ...] = ()  # segmentation: the mask classes (empty: from the masks)
    rescale: tuple[float, float] | None = None
    test_fraction: float = 0.2
    seed: int = 0
    sites: tuple[ImageSite, ...] = ()
    contract: ImageContract | None = None


def _fail(path: Path, message: str) -> DataError:
    return DataError(f"{path}: {message}")


def read_image_source(path: str | Path) -> ImageSource:
    """Parse and check an image data set file; every problem is one :class:`DataError`."""
    p, raw = read_toml(path)
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        hints = [difflib.get_close_matches(k, sorted(_KEYS), n=1) for k in unknown]
        said = ", ".join(
            f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "")
            for k, h in zip(unknown, hints, strict=True)
        )
        raise _fail(
            p, f"unknown key(s) {said}; an image data set's keys are {', '.join(sorted(_KEYS))}"
        )
    contract = None
    if "contract" in raw:
        given = [k for k in _FROM_CONTRACT if k in raw]
        if given:
            raise _fail(
                p, f"with a contract the task, label and image settings come from it: drop {given}"
            )
        if not isinstance(raw["contract"], str):
            raise _fail(p, 'contract = "…" is the path of a contract file')
        found = read_any_contract(p.parent / raw["contract"])
        if not isinstance(found, ImageContract):
            raise _fail(
                p,
                f"{raw['contract']} is a contract for tables ({found.title}); images need an "
                'image contract (format = "…", size = [...])',
            )
        contract = found
    kind = contract.kind if contract else raw.get("task")
    if kind not in IMAGE_KINDS:
        raise _fail(p, f"an image task is one of {', '.join(IMAGE_KINDS)}, not {kind!r}")
    task = TaskKind(kind)
    settings = contract.settings if contract else image_settings(raw, lambda m: _fail(p, m))
    label = contract.label if contract and contract.label else raw.get("label", "label")
    file_column = raw.get("file_column", "file")
    for key, value in (("label", label), ("file_column", file_column)):
        if not isinstance(value, str) or not value:
            raise _fail(p, f"{key} must be a column name of the labels files, not {value!r}")
    if label == file_column:
        raise _fail(p, "label and file_column name the same column")
    positive = contract.positive if contract else raw.get("positive")
    if positive is not None and task is not TaskKind.BINARY:
        raise _fail(p, "positive is for a binary task only")
    classes: list[Any] = list(contract.class_names) if contract else raw.get("classes", [])
    if "classes" in raw and task is not TaskKind.SEGMENTATION:
        raise _fail(p, "classes names the mask classes of a segmentation task")
    if not isinstance(classes, list) or (classes and len(classes) < 2):
        raise _fail(p, 'classes = ["background", "lesion", …] names the mask values 0, 1, …')
    rescale = raw.get("rescale")
    if rescale is not None:
        if (
            not isinstance(rescale, list)
            or len(rescale) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in rescale)
            or not all(math.isfinite(v) for v in rescale)
            or rescale[0] == 0
        ):
            raise _fail(p, f"rescale must be [slope, intercept] (slope not 0), not {rescale!r}")
        rescale = (float(rescale[0]), float(rescale[1]))
    fraction = raw.get("test_fraction", 0.2)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise _fail(p, f"test_fraction must be a number in (0, 1), not {fraction!r}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _fail(p, f"seed must be a whole number >= 0, not {seed!r}")
    sites = _sites(p, raw.get("sites"), task)
    return ImageSource(
        path=p,
        kind=task,
        settings=settings,
        label=label,
        file_column=file_column,
        positive=positive,
        classes=tuple(str(c) for c in classes),
        rescale=rescale,
        test_fraction=float(fraction),
        seed=seed,
        sites=sites,
        contract=contract,
    )


def _sites(p: Path, table: Any, task: TaskKind) -> tuple[ImageSite, ...]:
    if not isinstance(table, dict) or not table:
        raise _fail(
            p, '[sites.NAME] tables are required: images = "folder" and labels = "file.csv"'
        )
    segmentation = task is TaskKind.SEGMENTATION
    out = []
    for name, entry in table.items():
        where = f"[sites.{name}]"
        if not isinstance(entry, dict) or "images" not in entry:
            raise _fail(p, f'{where} needs images = "…" (a folder of images)')
        extra = sorted(set(entry) - _SITE_KEYS)
        if extra:
            raise _fail(p, f"{where}: unknown key(s) {extra}; the keys are {sorted(_SITE_KEYS)}")
        if segmentation and ("masks" not in entry or "labels" in entry):
            raise _fail(
                p,
                f'{where}: a segmentation site names masks = "folder" (masks named like '
                "their images) and no labels file",
            )
        if not segmentation and ("labels" not in entry or "masks" in entry):
            raise _fail(
                p,
                f'{where}: a {task} site names labels = "file.csv" (columns file and label) '
                "and no masks",
            )
        images = _path(p, entry["images"], f"sites.{name}.images", folder=True)
        masks = (
            _path(p, entry["masks"], f"sites.{name}.masks", folder=True) if segmentation else None
        )
        labels = None if segmentation else _path(p, entry["labels"], f"sites.{name}.labels")
        test = _path(p, entry["test"], f"sites.{name}.test") if "test" in entry else None
        out.append(ImageSite(str(name), images, labels, masks, test))
    return tuple(out)


def _path(source: Path, value: object, key: str, *, folder: bool = False) -> Path:
    if not isinstance(value, str) or not value:
        raise _fail(source, f"{key} must be a path (text)")
    path = (source.parent / value).expanduser()
    if folder:
        if not path.is_dir():
            raise _fail(source, f"{key} = {value!r}: no such folder ({path})")
        return path
    if path.suffix.lower() not in _TABLES:
        raise _fail(source, f"{key} = {value!r}: a labels file is .csv or .parquet")
    if not path.is_file():
        raise _fail(source, f"{key} = {value!r}: no such file ({path})")
    return path
