"""The data contract of an image federation: what every site's images and labels must be.

::

    # chest-xray.contract.toml — versioned with the job
    name = "chest-xray"
    version = "1"
    task = "binary"            # binary | multiclass | regression | segmentation
    format = "png"             # png | jpeg | dicom | nifti, or a list: ["dicom", "nifti"]
    modality = "CR"            # optional: the DICOM Modality every image carries
    size = [64, 64]            # the model's input: every site resizes to it ([D, H, W]: volumes)
    channels = 1               # 1 grayscale, 3 RGB
    intensity = "zscore"       # zscore | minmax | unit | none, or window = [lo, hi]
    label = "finding"          # the labels files' column (not for segmentation)
    classes = ["normal", "pneumonia"]  # the label's values in class order;
                                       # segmentation: the mask classes, 0 (background) first
    positive = "pneumonia"     # binary: the class 1 (else the second of classes)
    # regression: min = 0, max = 120 bound the label instead of classes (and give the
    # model's target centre, their middle, and scale, a quarter of their width)

The model's input (``channels × size``) and its classes come from the contract alone
(:meth:`ImageContract.spec`), so a researcher submits a job without any image. A site's
images are checked at the site (:meth:`ImageContract.check`): each broken rule with how many
images (or labels-file rows) break it; the file names stay at the site and only that summary
may reach the coordinator. :func:`image_settings` parses ``size``, ``channels``,
``intensity`` and ``window`` for contracts and data set files alike.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfed.data.base import DataSpec, TaskKind
from medfed.data.contract import (
    ContractReport,
    DataContract,
    Problem,
    contract_from_dict,
    is_image_contract,
    read_contract_file,
)
from medfed.data.outcomes import range_scaling
from medfed.errors import DataError

__all__ = [
    "FORMATS",
    "INTENSITIES",
    "ImageContract",
    "ImageFacts",
    "ImageSettings",
    "image_settings",
    "read_any_contract",
]

FORMATS = ("png", "jpeg", "dicom", "nifti")
INTENSITIES = ("zscore", "minmax", "unit", "none")
IMAGE_KINDS = ("binary", "multiclass", "regression", "segmentation")
MAX_SIDE = 4096
_TOP = {
    "name",
    "version",
    "task",
    "format",
    "modality",
    "size",
    "channels",
    "intensity",
    "window",
    "label",
    "classes",
    "positive",
    "min",
    "max",
}


@dataclass(frozen=True)
class ImageSettings:
    """How stored images become the model's input (the same at every site)."""

    size: tuple[int, ...] | None = None  # None: the first image's size (data set files only)
    channels: int = 1
    intensity: str = "zscore"  # or "window" with window = (lo, hi)
    window: tuple[float, float] | None = None

    def describe(self) -> str:
        if self.intensity == "window":
            assert self.window is not None
            return f"clipped to [{self.window[0]:g}, {self.window[1]:g}] and scaled to [0, 1]"
        return {
            "zscore": "each image to mean 0 and sd 1",
            "minmax": "each image scaled to [0, 1] (its minimum to 0, its maximum to 1)",
            "unit": "pixel value / the largest value of its type (255, 65535)",
            "none": "as stored (DICOM after its rescale slope and intercept)",
        }[self.intensity]


def image_settings(raw: dict[str, Any], fail: Callable[[str], DataError]) -> ImageSettings:
    size = raw.get("size")
    if size is not None:
        if (
            not isinstance(size, list)
            or len(size) not in (2, 3)
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in size)
            or not all(1 <= n <= MAX_SIDE for n in size)
        ):
            raise fail(
                f"size must be [height, width] or [depth, height, width] in pixels "
                f"(1–{MAX_SIDE}), not {size!r}"
            )
        size = tuple(size)
    channels = raw.get("channels", 1)
    if channels not in (1, 3) or isinstance(channels, bool):
        raise fail(f"channels must be 1 (grayscale) or 3 (RGB), not {channels!r}")
    window = raw.get("window")
    intensity = raw.get("intensity", "window" if window is not None else "zscore")
    if window is not None:
        if (
            not isinstance(window, list)
            or len(window) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in window)
            or not all(math.isfinite(v) for v in window)
            or not window[0] < window[1]
        ):
            raise fail(f"window must be [low, high] with low < high, not {window!r}")
        if intensity != "window":
            raise fail("window = [low, high] sets the intensity itself: drop intensity")
        window = (float(window[0]), float(window[1]))
    elif intensity not in INTENSITIES:
        raise fail(f"intensity must be one of {', '.join(INTENSITIES)}, not {intensity!r}")
    return ImageSettings(size, int(channels), str(intensity), window)


@dataclass(frozen=True)
class ImageFacts:
    """What a contract checks of one image, as read at the site."""

    name: str
    format: str
    modality: str | None
    spatial: tuple[int, ...]
    channels: int
    mask_values: tuple[int, ...] = ()  # segmentation: the values its mask holds


@dataclass(frozen=True)
class ImageContract:
    name: str
    version: str
    kind: TaskKind
    formats: tuple[str, ...]
    settings: ImageSettings
    modality: str | None = None
    label: str | None = None
    class_names: tuple[str, ...] = ()
    positive: str | None = None
    min: float | None = None
    max: float | None = None
    sha256: str = ""
    path: Path | None = field(default=None, compare=False)

    @property
    def title(self) -> str:
        return f"contract {self.name} v{self.version}"

    @property
    def size(self) -> tuple[int, ...]:
        assert self.settings.size is not None
        return self.settings.size

    def classes(self) -> tuple[str, ...]:
        """Class names in index order (binary: the positive one is class 1)."""
        if self.kind is TaskKind.BINARY and self.positive is not None:
            return (*[c for c in self.class_names if c != self.positive], self.positive)
        return self.class_names

    def spec(self) -> DataSpec:
        """The federation's data spec, from the contract alone (no image needed)."""
        n = (
            len(self.class_names)
            if self.kind in (TaskKind.MULTICLASS, TaskKind.SEGMENTATION)
            else 2
        )
        regression = self.kind is TaskKind.REGRESSION
        center, scale = range_scaling(self.min, self.max) if regression else (0.0, 1.0)
        return DataSpec(
            self.kind,
            (self.settings.channels, *self.size),
            n_classes=n,
            target_center=center,
            target_scale=scale,
        )

    def check(
        self, images: Sequence[ImageFacts], labels: Sequence[Any] = (), *, label_rows: int = 0
    ) -> ContractReport:
        """Every rule on a site's images and (classification, regression) its label values.

        ``labels`` are the labels files' values in row order (``label_rows`` rows in all).
        """
        problems: list[Problem] = []

        def broken(what: str, rule: str, bad: list[ImageFacts]) -> None:
            if bad:
                names = tuple(f.name for f in bad[:3])
                problems.append(Problem(what, rule, len(bad), unit="image", examples=names))

        broken(
            "format",
            f"must be {' or '.join(self.formats)}",
            [f for f in images if f.format not in self.formats],
        )
        if self.modality is not None:
            broken(
                "modality",
                f"must be DICOM Modality {self.modality}",
                [f for f in images if f.modality != self.modality],
            )
        dims = len(self.size)
        broken(
            "size",
            "must be a 2D image" if dims == 2 else "must be a 3D volume",
            [f for f in images if len(f.spatial) != dims],
        )
        broken(
            "channels",
            "must be 1 (grayscale) or 3 (RGB)",
            [f for f in images if f.channels not in (1, 3)],
        )
        if self.kind is TaskKind.SEGMENTATION:
            k = len(self.class_names)
            broken(
                "masks",
                f"values must be classes 0–{k - 1} ({', '.join(self.class_names[:6])})",
                [f for f in images if any(v < 0 or v >= k for v in f.mask_values)],
            )
        else:
            problems += self._label_problems(labels)
        return ContractReport(self.title, tuple(problems), rows=len(images), unit="image")

    def _label_problems(self, labels: Sequence[Any]) -> list[Problem]:
        label = str(self.label)
        bad: list[int] = []
        rule = ""
        if self.kind is TaskKind.REGRESSION:
            for row, value in enumerate(labels, start=1):
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    number = math.nan
                if not math.isfinite(number):
                    bad.append(row)
            out = []
            if bad:
                out.append(Problem(label, "not a number", len(bad), tuple(bad[:5])))
            numbers = [(r, _number(v)) for r, v in enumerate(labels, start=1)]
            if self.min is not None:
                low = [r for r, v in numbers if v is not None and v < self.min]
                if low:
                    rule = f"must be at least {self.min:g}"
                    out.append(Problem(label, rule, len(low), tuple(low[:5])))
            if self.max is not None:
                high = [r for r, v in numbers if v is not None and v > self.max]
                if high:
                    rule = f"must be at most {self.max:g}"
                    out.append(Problem(label, rule, len(high), tuple(high[:5])))
            return out
        rule = f"must be one of {list(self.class_names)[:8]}"
        bad = [r for r, v in enumerate(labels, start=1) if _text(v) not in self.class_names]
        return [Problem(label, rule, len(bad), tuple(bad[:5]))] if bad else []


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    """A label value as the contract's classes spell it (1.0 read from a CSV is "1")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_any_contract(path: str | Path) -> DataContract | ImageContract:
    """A table's or an image contract (it names a ``format``), parsed and checked."""
    p, raw, sha256 = read_contract_file(path)
    if is_image_contract(raw):
        return image_contract_from_dict(raw, where=str(p), sha256=sha256, path=p)
    return contract_from_dict(raw, where=str(p), sha256=sha256, path=p)


def image_contract_from_dict(
    raw: dict[str, Any], *, where: str, sha256: str = "", path: Path | None = None
) -> ImageContract:
    def fail(message: str) -> DataError:
        return DataError(f"{where}: {message}")

    unknown = sorted(set(raw) - _TOP)
    if unknown:
        hint = difflib.get_close_matches(unknown[0], sorted(_TOP), n=1)
        raise fail(
            f"unknown key {unknown[0]!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; an image contract's keys are {', '.join(sorted(_TOP))}"
        )
    for key in ("name", "version"):
        if not isinstance(raw.get(key), str | int) or not str(raw.get(key)).strip():
            raise fail(f'{key} = "…" is required (the contract is versioned with the job)')
    kind = raw.get("task")
    if kind not in IMAGE_KINDS:
        raise fail(f"an image task is one of {', '.join(IMAGE_KINDS)}, not {kind!r}")
    task = TaskKind(kind)
    formats = raw["format"] if isinstance(raw["format"], list) else [raw["format"]]
    if not formats or any(f not in FORMATS for f in formats):
        raise fail(f"format must be one of {', '.join(FORMATS)} (or a list), not {raw['format']!r}")
    settings = image_settings(raw, fail)
    if settings.size is None:
        raise fail(
            "size = [height, width] (or [depth, height, width]) is required: the model's input"
        )
    modality = raw.get("modality")
    if modality is not None and (not isinstance(modality, str) or not modality):
        raise fail(f'modality is a DICOM Modality such as "CT", not {modality!r}')
    classes = raw.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str | int) for c in classes):
        raise fail("classes must be a list of names")
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise fail("a class is listed twice in classes")
    label = raw.get("label")
    positive = raw.get("positive")
    bounds = {k: raw.get(k) for k in ("min", "max")}
    if task is TaskKind.SEGMENTATION:
        if label is not None or positive is not None:
            raise fail("a segmentation contract has no label or positive: its masks are the labels")
        if len(classes) < 2:
            raise fail('segmentation: classes = ["background", …] names the mask values 0, 1, …')
    else:
        if not isinstance(label, str) or not label:
            raise fail('label = "…" names the labels files\' column')
        if task is TaskKind.REGRESSION:
            if classes or positive is not None:
                raise fail("a regression label has no classes or positive (min and max bound it)")
        elif len(classes) < 2 or (task is TaskKind.BINARY and len(classes) != 2):
            raise fail(f"a {kind} label lists its classes = [...] (binary: two)")
        if positive is not None and (task is not TaskKind.BINARY or str(positive) not in classes):
            raise fail(f"positive = {positive!r} must be one of a binary task's classes")
    if task is not TaskKind.REGRESSION and any(v is not None for v in bounds.values()):
        raise fail("min and max bound a regression label only")
    for key, value in bounds.items():
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise fail(f"{key} must be a finite number")
    return ImageContract(
        name=str(raw["name"]),
        version=str(raw["version"]),
        kind=task,
        formats=tuple(formats),
        settings=settings,
        modality=modality,
        label=label,
        class_names=tuple(classes),
        positive=None if positive is None else str(positive),
        min=None if bounds["min"] is None else float(bounds["min"]),
        max=None if bounds["max"] is None else float(bounds["max"]),
        sha256=sha256,
        path=path,
    )
