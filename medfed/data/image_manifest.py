"""What a node pins of a registered image data set, and where its files may lie.

Hashing every pixel file of a few thousand DICOM slices costs minutes of disk reads on every
node start; the pin is therefore two-tier. The labels (and test) files, which decide every
outcome and are small, are pinned by sha256. The images and masks are pinned by a manifest:
each file's path (relative to the data set file's folder) and size in bytes, whose sha256 is
the manifest digest. A start then costs one ``stat`` per file, and catches an image added,
removed, renamed or replaced by one of another size; what it does not catch is an edit in
place that keeps the size (a re-export of the same image with other pixel values): the
contract check at every start still sees what the contract rules on (format, modality,
dimensions, mask classes), not a changed pixel.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfed.data.image_source import ImageSource
from medfed.errors import DataError

__all__ = ["Manifest", "check_inside", "manifest_of"]


@dataclass(frozen=True)
class Manifest:
    files: dict[str, int]  # image and mask files: relative path -> size in bytes
    labels: dict[str, str]  # labels and test files: relative path -> sha256

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"files": self.files, "labels": self.labels}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw: dict[str, Any] = json.loads(text)
        return cls(dict(raw["files"]), dict(raw["labels"]))

    def changes(self, now: Manifest) -> str:
        """What differs from ``now``, as counts (and the first few names, for the steward)."""
        added = sorted(set(now.files) - set(self.files))
        removed = sorted(set(self.files) - set(now.files))
        resized = sorted(
            f for f in set(self.files) & set(now.files) if self.files[f] != now.files[f]
        )
        edited = sorted(
            f for f in set(self.labels) | set(now.labels) if self.labels.get(f) != now.labels.get(f)
        )
        parts = []
        for what, names in (
            ("added", added),
            ("removed", removed),
            ("of another size", resized),
        ):
            if names:
                parts.append(f"{len(names)} file(s) {what} ({', '.join(names[:3])}…)")
        if edited:
            parts.append(f"labels file(s) changed: {', '.join(edited)}")
        return "; ".join(parts) or "no change"


def _files(source: ImageSource) -> list[Path]:
    out: list[Path] = []
    for site in source.sites:
        for folder in (site.images, site.masks):
            if folder is not None:
                out += sorted(p for p in folder.rglob("*") if p.is_file())
    return out


def manifest_of(source: ImageSource, base: Path) -> Manifest:
    """The manifest of ``source``'s files now, paths relative to ``base``."""
    files = {}
    for p in _files(source):
        files[p.absolute().relative_to(base.absolute()).as_posix()] = p.stat().st_size
    labels = {}
    for site in source.sites:
        for table in (site.labels, site.test):
            if table is not None:
                key = table.absolute().relative_to(base.absolute()).as_posix()
                labels[key] = hashlib.sha256(table.read_bytes()).hexdigest()
    return Manifest(files, labels)


def check_inside(data_file: Path, source: ImageSource) -> None:
    """Every folder, labels file, image and mask of ``source`` (symlinks resolved) lies in
    ``data_file``'s folder: a node reads only files kept next to what the steward registered."""
    folder = data_file.parent.resolve()
    named = [p for site in source.sites for p in site.paths()]
    for p in [*named, *_files(source), *(q for f in named if f.is_dir() for q in f.iterdir())]:
        if not p.resolve().is_relative_to(folder):
            link = " (a symbolic link)" if p.is_symlink() else ""
            raise DataError(
                f"{data_file} names {p}{link}, which is outside its folder {folder}: a node reads "
                "only images, masks and labels files kept next to the data set file it registered"
            )
