"""A consortium's own images as a data set: one TOML file that says where each site's images
and their labels (or masks) are.

::

    # xray-data.toml — paths are relative to this file
    task = "binary"            # binary | multiclass | regression | segmentation
    size = [64, 64]            # resize every image to [height, width] ([depth, height, width]
                               # for volumes); absent: the first image's size, and an image of
                               # another size is an error
    channels = 1               # 1 grayscale (RGB becomes its luminance), 3 RGB (gray repeated)
    intensity = "zscore"       # per image: "zscore" (mean 0, sd 1), "minmax" ([0, 1]),
                               # "unit" (value / 255 or 65535: 8/16-bit PNG, JPEG), "none"
    # window = [-1000, 400]    # instead of intensity: clip to [low, high], scale to [0, 1]
    #                          # (a CT window in Hounsfield units)
    # rescale = [1.0, 0.0]     # PNG/JPEG only: value = pixel * slope + intercept
    label = "label"            # the labels files' label column (default "label")
    file_column = "file"       # and the column naming the image (default "file")
    positive = "yes"           # optional (binary): the label value that is class 1
    test_fraction = 0.2        # for sites without a test file (stratified by class)
    seed = 0                   # of that split

    [sites.hospital-a]
    images = "a/images"        # a folder: one entry per image (below)
    labels = "a/labels.csv"    # CSV or Parquet with columns file,label
    test = "a/test.csv"        # optional: the test images' labels (images in the same folder)
    [sites.hospital-b]
    images = "b/images"
    labels = "b/labels.csv"

For segmentation a site names ``masks = "a/masks"`` instead of ``labels``: a folder of masks
named like their images (the suffix may differ: ``p1.dcm`` and ``p1.nii.gz`` pair), whose
values are class indices (0 background); ``classes = ["background", "liver", …]`` names them
(absent: 0 to the largest value found), and ``test`` is then a file list (column ``file``).

An entry of an images folder is a PNG or JPEG file (Pillow), a ``.dcm`` file (one 2D image;
a multi-frame file is a volume), a folder of ``.dcm`` files of one DICOM series (one 3D
volume, slices in patient order, values after RescaleSlope/Intercept: :mod:`.images_dicom`)
or a NIfTI ``.nii``/``.nii.gz`` file (a 3D volume or a 2D image, canonical orientation:
:mod:`.image_readers`). The arrays are float32 ``(n, channels, height, width)`` (volumes
``(n, channels, depth, height, width)``), in the labels file's row order; labels as in
:mod:`medfed.data.base` (label values to class indices as for tables; regression: numbers;
segmentation: the resized masks, nearest neighbour). ``contract = "x.contract.toml"`` puts
the sites under an image contract (:mod:`.image_contract`), which then fixes the task, label,
classes and image settings; a site whose images break it is left out, with its reasons in
the data set's notes.

What is left out, and counted in the notes: a labels-file row without a label, an image in
the folder that no labels file names (segmentation: an image without a mask), a file that is
not an image. Everything else that is wrong is a :class:`~medfed.errors.DataError` naming the
file, the rule and the place: an unreadable or truncated file, a labels-file row naming an
image that is not in the folder, a mask without an image or of another shape than its image,
mask values outside the classes, images of different sizes without ``size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medfed.data.base import DataSpec, FederatedDataset, SiteData, TaskKind
from medfed.data.contract import ContractReport
from medfed.data.image_contract import ImageFacts
from medfed.data.image_listing import Listed, Record, list_site
from medfed.data.image_readers import Stored, read_image, resize
from medfed.data.image_source import ImageSource, read_image_source
from medfed.data.outcomes import class_codes, regression_targets, target_scaling
from medfed.data.partition import train_test_indices
from medfed.errors import DataError

__all__ = ["ImageLoad", "load_image_sites", "load_images"]

_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)


@dataclass
class ImageLoad:
    """Each site's data (sites that pass), each site's contract report, the spec, notes."""

    spec: DataSpec
    sites: dict[str, SiteData]
    reports: dict[str, ContractReport] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def load_images(path: str | Path) -> FederatedDataset:
    """The data set an image data set file describes (see the module docs)."""
    source = read_image_source(path)
    loaded = load_image_sites(source)
    if not loaded.sites:
        raise DataError(
            "no site passes the data contract:\n"
            + "\n".join(f"{s}: {r}" for s, r in loaded.reports.items())
        )
    return FederatedDataset(
        name=source.path.stem,
        spec=loaded.spec,
        sites=tuple(loaded.sites.values()),
        description=f"images from {source.path.name}",
        source=str(source.path),
        notes=loaded.notes,
    )


def load_image_sites(source: ImageSource) -> ImageLoad:
    """Every site read; under a contract each site is checked and one that fails is left out
    (its :class:`ContractReport` says why)."""
    listed = [list_site(source, site) for site in source.sites]
    contract = source.contract
    codes: dict[Any, int] = {}
    n_classes = 2
    if contract is not None and contract.kind in (TaskKind.BINARY, TaskKind.MULTICLASS):
        codes = {name: i for i, name in enumerate(contract.classes())}
        n_classes = len(codes)
    elif source.kind in (TaskKind.BINARY, TaskKind.MULTICLASS):
        observed = (r.label for one in listed for r in one.records)
        codes, n_classes = class_codes(
            source.kind, source.label, source.positive, observed, source.path
        )
    size = source.settings.size
    read: list[tuple[Listed, list[tuple[Record, Stored, Stored | None]]]] = []
    first: Stored | None = None
    formats: set[str] = set()
    for one in listed:
        images = []
        for record in one.records:
            stored = _rescaled(source, read_image(record.path))
            first = first or stored
            formats.add(stored.format)
            _check_size(source, stored, first, size)
            mask = _mask(record, stored) if record.mask is not None else None
            images.append((record, stored, mask))
        read.append((one, images))
    assert first is not None  # every site has at least two images (checked when listing)
    target = size or first.spatial
    reports: dict[str, ContractReport] = {}
    if contract is not None:
        for one, images in read:
            facts = [
                ImageFacts(
                    r.name,
                    s.format,
                    s.modality,
                    s.spatial,
                    s.channels,
                    () if m is None else tuple(int(v) for v in np.unique(m.pixels)),
                )
                for r, s, m in images
            ]
            labels = [r.label for r, _, _ in images]
            reports[one.site.name] = contract.check(facts, labels)
    elif source.kind is TaskKind.SEGMENTATION:
        n_classes = _mask_classes(source, [m for _, images in read for _, _, m in images if m])
    sites: dict[str, SiteData] = {}
    for index, (one, images) in enumerate(read):
        if one.site.name in reports and not reports[one.site.name].passed:
            continue
        sites[one.site.name] = _site(source, index, one, images, target, codes)
    spec = DataSpec(source.kind, (source.settings.channels, *target), n_classes=n_classes)
    if contract is not None:
        spec = contract.spec()
    elif source.kind is TaskKind.REGRESSION and sites:
        center, scale = target_scaling(s.y_train for s in sites.values())
        spec = replace(spec, target_center=center, target_scale=scale)
    return ImageLoad(spec, sites, reports, _notes(source, listed, reports, formats))


def _rescaled(source: ImageSource, stored: Stored) -> Stored:
    if source.rescale is None or stored.format not in ("png", "jpeg"):
        return stored
    slope, intercept = source.rescale
    pixels = (stored.pixels.astype(np.float64) * slope + intercept).astype(np.float32)
    return Stored(stored.path, pixels, stored.format, stored.modality, None)


def _dims(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


def _check_size(
    source: ImageSource, stored: Stored, first: Stored, size: tuple[int, ...] | None
) -> None:
    if size is not None:
        if len(stored.spatial) != len(size):
            kind = "a 3D volume" if len(stored.spatial) == 3 else "a 2D image"
            raise DataError(
                f"{stored.path}: {kind} ({_dims(stored.spatial)}), but size = {list(size)} in "
                f"{source.path} is {len(size)}D; the images of a data set are all 2D or all 3D"
            )
        return
    if stored.spatial != first.spatial:
        raise DataError(
            f"{stored.path} is {_dims(stored.spatial)} but {first.path} is "
            f"{_dims(first.spatial)}: the images differ in size; give size = "
            f"{list(first.spatial)} (or another) in {source.path} to resize every image to it"
        )


def _mask(record: Record, image: Stored) -> Stored:
    assert record.mask is not None
    mask = read_image(record.mask)
    if mask.channels != 1:
        raise DataError(
            f"{record.mask}: a mask has one channel of class indices, not {mask.channels}"
        )
    if mask.spatial != image.spatial:
        raise DataError(
            f"{record.mask}: the mask is {_dims(mask.spatial)} but its image {record.path.name} "
            f"is {_dims(image.spatial)}; a mask has its image's shape"
        )
    values = mask.pixels
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise DataError(f"{record.mask}: a mask holds whole class indices; it has other values")
    return mask


def _mask_classes(source: ImageSource, masks: list[Stored]) -> int:
    if source.classes:
        k = len(source.classes)
        for m in masks:
            low, high = float(m.pixels.min()), float(m.pixels.max())
            if low < 0 or high >= k:
                bad = int(low) if low < 0 else int(high)
                raise DataError(
                    f"{m.path}: mask value {bad} is not a class: classes = "
                    f"{list(source.classes)} in {source.path} are the values 0–{k - 1}"
                )
        return k
    top = max(float(m.pixels.max()) for m in masks)
    low = min(float(m.pixels.min()) for m in masks)
    if low < 0:
        where = next(m.path for m in masks if float(m.pixels.min()) < 0)
        raise DataError(f"{where}: mask value {int(low)} is negative; class indices start at 0")
    return max(int(top) + 1, 2)


def _prepared(
    source: ImageSource, stored: Stored, target: tuple[int, ...]
) -> npt.NDArray[np.float32]:
    x = stored.pixels
    want = source.settings.channels
    if x.shape[0] != want:
        if x.shape[0] == 3 and want == 1:
            x = np.tensordot(_LUMA, x, axes=1)[None].astype(np.float32)
        elif x.shape[0] == 1 and want == 3:
            x = np.repeat(x, 3, axis=0)
        else:
            raise DataError(
                f"{stored.path}: {x.shape[0]} channels; medfed turns 1 or 3 into channels = {want}"
            )
    x = resize(x, target)
    return _intensity(source, stored, x)


def _intensity(
    source: ImageSource, stored: Stored, x: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    how = source.settings.intensity
    if how == "window":
        assert source.settings.window is not None
        low, high = source.settings.window
        return ((np.clip(x, low, high) - low) / (high - low)).astype(np.float32)
    if how == "zscore":
        sd = float(x.std())
        return np.asarray((x - x.mean()) / (sd if sd > 0 else 1.0), dtype=np.float32)
    if how == "minmax":
        span = float(x.max() - x.min())
        return np.asarray((x - x.min()) / (span if span > 0 else 1.0), dtype=np.float32)
    if how == "unit":
        if stored.type_max is None:
            raise DataError(
                f'{stored.path}: intensity = "unit" divides by the largest value of an 8- or '
                f"16-bit pixel, which this {stored.format} image has not; use zscore, minmax, "
                "none or a window in " + str(source.path)
            )
        return (x / np.float32(stored.type_max)).astype(np.float32)
    return x.astype(np.float32)


def _site(
    source: ImageSource,
    index: int,
    one: Listed,
    images: list[tuple[Record, Stored, Stored | None]],
    target: tuple[int, ...],
    codes: dict[Any, int],
) -> SiteData:
    x = np.stack([_prepared(source, s, target) for _, s, _ in images])
    y = _targets(source, [(r, m) for r, _, m in images], target, codes)
    roles = np.asarray([r.role for r, _, _ in images])
    if (roles == "all").any():
        strata = y if source.kind in (TaskKind.BINARY, TaskKind.MULTICLASS) else None
        rng = np.random.default_rng([source.seed, index])
        train, test = train_test_indices(
            len(y), test_fraction=source.test_fraction, rng=rng, labels=strata
        )
    else:
        train, test = np.flatnonzero(roles == "train"), np.flatnonzero(roles == "test")
    return SiteData(
        name=one.site.name,
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        description=f"{len(train)} training and {len(test)} test images",
    )


def _targets(
    source: ImageSource,
    pairs: list[tuple[Record, Stored | None]],
    target: tuple[int, ...],
    codes: dict[Any, int],
) -> npt.NDArray[Any]:
    if source.kind is TaskKind.SEGMENTATION:
        masks = [resize(m.pixels, target, nearest=True)[0] for _, m in pairs if m is not None]
        return np.stack(masks).round().astype(np.int64)
    if source.kind is TaskKind.REGRESSION:
        return np.concatenate(
            [
                regression_targets([r.label], label=source.label, where=r.where, rows=[r.row])
                for r, _ in pairs
            ]
        )
    key = (lambda v: _class_text(v)) if source.contract is not None else (lambda v: v)
    return np.asarray([codes[key(r.label)] for r, _ in pairs], dtype=np.int64)


def _class_text(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _notes(
    source: ImageSource,
    listed: list[Listed],
    reports: dict[str, ContractReport],
    formats: set[str],
) -> dict[str, str]:
    notes = {
        "source": str(source.path),
        "images": f"{', '.join(sorted(formats))}, {source.settings.channels} channel(s)",
        "intensity": source.settings.describe(),
    }
    if source.contract is not None:
        notes["contract"] = f"{source.contract.title} (sha256 {source.contract.sha256[:12]}…)"
    counted = (
        (
            "unlabelled",
            "images without a "
            + ("mask" if source.kind is TaskKind.SEGMENTATION else "label")
            + " (left out)",
        ),
        ("no_label", "labels-file rows without a label (left out)"),
        ("not_images", "files that are not images (left out)"),
    )
    for attr, title in counted:
        said = ", ".join(
            f"{one.site.name}: {getattr(one, attr)}" for one in listed if getattr(one, attr)
        )
        if said:
            notes[title] = said
    for site, report in reports.items():
        if not report.passed:
            notes[f"left out: {site}"] = str(report)
    return notes
