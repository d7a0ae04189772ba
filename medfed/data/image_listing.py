"""Which images a site has and what each is labelled: an image data set file's labels files,
masks and test lists resolved against its images folders (:mod:`medfed.data.images`).

A labels-file row must name an entry of the images folder (a file or a series folder) and an
image is named once; a mask must have an image of its name. What is left out is counted: rows
without a label, images no labels file names (or without a mask), files that are not images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfed.data.data_file import read_table
from medfed.data.image_readers import entry_name, image_entries
from medfed.data.image_source import ImageSite, ImageSource
from medfed.data.outcomes import plain
from medfed.errors import DataError

__all__ = ["Listed", "Record", "list_site"]


@dataclass
class Record:
    name: str  # the images folder's entry
    path: Path
    role: str  # "train" | "test" | "all"
    label: Any = None  # the labels file's value
    row: int = 0  # its data row (1-based) in ``where``
    where: str = ""  # the labels file
    mask: Path | None = None


@dataclass
class Listed:
    site: ImageSite
    records: list[Record]
    unlabelled: int = 0
    no_label: int = 0
    not_images: int = 0


def list_site(source: ImageSource, site: ImageSite) -> Listed:
    entries, others = image_entries(site.images)
    if site.masks is not None:
        records = _paired(source, site, entries)
        used = {r.name for r in records}
    else:
        assert site.labels is not None
        records = []
        no_label = 0
        for role, path in (("train", site.labels), ("test", site.test)):
            if path is None:
                continue
            rows, missing = _labels_file(source, site, path, entries)
            no_label += missing
            for r in rows:
                r.role = role if site.test is not None else "all"
            records += rows
        used = set()
        for r in records:
            if r.name in used:
                raise DataError(
                    f"{r.where}, data row {r.row}: image {r.name!r} is named twice (in "
                    f"{'both the labels and the test file' if site.test else 'this file'}); "
                    "an image is a training or a test image, once"
                )
            used.add(r.name)
    listed = Listed(site, records, len(set(entries) - used), 0, len(others))
    if site.masks is None:
        listed.no_label = no_label
    for role in ("train", "test", "all"):
        mine = [r for r in records if r.role == role]
        if role == "all" and mine and len(mine) < 2:
            raise DataError(f"site {site.name}: {len(mine)} image(s) with a label; a site needs 2")
        if role == "train" and site.test is not None and not mine:
            raise DataError(f"site {site.name}: no training image with a label")
    if not records:
        raise DataError(f"site {site.name}: no image with a label in {site.images}")
    return listed


def _labels_file(
    source: ImageSource, site: ImageSite, path: Path, entries: dict[str, Path]
) -> tuple[list[Record], int]:
    frame = read_table(path)
    needed = [source.file_column] + ([] if site.masks is not None else [source.label])
    for column in needed:
        if column not in frame.columns:
            key = "file_column" if column == source.file_column else "label"
            raise DataError(
                f"{path} (site {site.name}): no column {column!r} ({key}); its columns are "
                f"{', '.join(frame.columns[:8])}"
            )
    out = []
    missing = 0
    labels = frame[source.label] if source.label in frame.columns else None
    for i, name in enumerate(frame[source.file_column]):
        row = i + 1
        if not isinstance(name, str) or not name.strip():
            raise DataError(
                f"{path}, data row {row}: no image named in column {source.file_column!r}"
            )
        if name not in entries:
            raise DataError(
                f"{path}, data row {row}: image {name!r} is not in {site.images} (no such file "
                "or series folder); fix the name, or remove the row"
            )
        value = None if labels is None else labels.iloc[i]
        if labels is not None and (value is None or (isinstance(value, float) and np.isnan(value))):
            missing += 1  # a row without a label: left out, counted
            continue
        out.append(Record(name, entries[name], "all", plain(value), row, str(path)))
    return out, missing


def _paired(source: ImageSource, site: ImageSite, entries: dict[str, Path]) -> list[Record]:
    assert site.masks is not None
    by_stem: dict[str, str] = {}
    for name, path in entries.items():
        stem = entry_name(path)
        if stem in by_stem:
            raise DataError(
                f"{site.images}: {by_stem[stem]} and {name} have the same name; a mask could "
                "not tell them apart"
            )
        by_stem[stem] = name
    masks, _ = image_entries(site.masks)
    paired: dict[str, Path] = {}
    for mask_path in masks.values():
        stem = entry_name(mask_path)
        if stem not in by_stem:
            raise DataError(
                f"{mask_path}: a mask without an image (no {stem}.* in {site.images}); a mask "
                "is named like its image"
            )
        if by_stem[stem] in paired:
            raise DataError(f"{site.masks}: two masks for the image {by_stem[stem]}")
        paired[by_stem[stem]] = mask_path
    test: set[str] = set()
    if site.test is not None:
        rows, _ = _labels_file(source, site, site.test, entries)
        for r in rows:
            if r.name not in paired:
                raise DataError(
                    f"{site.test}, data row {r.row}: image {r.name!r} has no mask in {site.masks}"
                )
        test = {r.name for r in rows}
    role = "train" if site.test is not None else "all"
    return [
        Record(name, entries[name], "test" if name in test else role, mask=paired[name])
        for name in sorted(paired)
    ]
