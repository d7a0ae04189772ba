"""A site's records as statistics see them: raw feature values (NaN where missing), and the
follow-up time and event of a survival outcome.

Built from the site's data as its loader prepared them (:class:`~medfed.data.base.SiteData`):
for the bundled data sets these are the loader's features (e.g. already standardised with
dataset-level constants; ``synthetic-ehr`` with ``standardize=false`` keeps clinical units), and
for data set files the tables' own values as recorded (gaps kept, no site standardising
alone: :func:`medfed.data.files.load_data_file` with ``raw=True``; a node serves them so too).

The outcome is also there, as pseudo-features that a query may name (:func:`outcome_names`):
``label`` (the class index of a binary or multiclass label, or a regression target), or for
survival ``event`` (1 observed, 0 censored) and ``follow-up`` (the time). A query that names
none of them sends nothing about the outcome (the data-quality report names them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medfed.data.base import DataSpec, SiteData, TaskKind
from medfed.errors import DataError

__all__ = ["SiteTable", "outcome_names", "site_table"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SiteTable:
    """``features``: (n, F) float64, NaN for a missing value; ``time``/``event``: (n,) or None;
    ``outcomes``: (n, len(outcome_names)) the outcome's pseudo-features (see the module)."""

    names: tuple[str, ...]
    features: FloatArray
    time: FloatArray | None = None
    event: FloatArray | None = None
    outcome_names: tuple[str, ...] = ()
    outcomes: FloatArray | None = None

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.features.shape[1] != len(self.names):
            raise ValueError(
                f"features must be (records, {len(self.names)}), got {self.features.shape}"
            )
        if (self.time is None) != (self.event is None):
            raise ValueError("time and event come together")
        if self.outcome_names and (
            self.outcomes is None
            or self.outcomes.shape != (self.features.shape[0], len(self.outcome_names))
        ):
            raise ValueError(f"outcomes must be (records, {len(self.outcome_names)})")

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])

    def columns(self, names: tuple[str, ...]) -> FloatArray:
        """The named feature (or outcome) columns, in that order; an unknown name is a
        DataError."""
        index = {n: i for i, n in enumerate(self.names)}
        extra = {n: i for i, n in enumerate(self.outcome_names) if n not in index}
        unknown = [n for n in names if n not in index and n not in extra]
        if unknown:
            raise DataError(
                f"the site's data have no feature {', '.join(map(repr, unknown))}; its "
                f"features are {', '.join(self.names)}"
            )
        if not any(n in extra for n in names):
            return self.features[:, [index[n] for n in names]]
        assert self.outcomes is not None
        cols = [
            self.features[:, index[n]] if n in index else self.outcomes[:, extra[n]] for n in names
        ]
        return np.stack(cols, axis=1) if cols else self.features[:, []]


def feature_names(spec: DataSpec) -> tuple[str, ...]:
    n = int(np.prod(spec.input_shape))
    names = tuple(spec.feature_names)
    return names if len(names) == n else tuple(f"x{i}" for i in range(n))


def outcome_names(spec: DataSpec) -> tuple[str, ...]:
    """The outcome's pseudo-feature names (none for segmentation); a name a feature already
    has gets " (outcome)" appended."""
    if spec.kind is TaskKind.SURVIVAL:
        base: tuple[str, ...] = ("event", "follow-up")
    elif spec.kind is TaskKind.SEGMENTATION:
        return ()
    else:
        base = ("label",)
    taken = set(feature_names(spec))
    return tuple(f"{n} (outcome)" if n in taken else n for n in base)


def _outcomes(y: FloatArray, spec: DataSpec) -> FloatArray:
    if spec.kind is TaskKind.SURVIVAL:
        return np.stack([y[:, 1], y[:, 0]], axis=1)
    return y.reshape(len(y), 1)


def site_table(data: SiteData, spec: DataSpec, *, split: str = "all") -> SiteTable:
    """The site's table: every record (``split="all"``) or its training records only."""
    if len(spec.input_shape) != 1:
        raise DataError(
            f"site {data.name}: statistics are for tabular data; this data set's records are "
            f"of shape {spec.input_shape}"
        )
    parts = [(data.x_train, data.y_train)]
    if split == "all":
        parts.append((data.x_test, data.y_test))
    x = np.concatenate([np.asarray(p[0], np.float64) for p in parts])
    time = event = None
    y = np.concatenate([np.asarray(p[1], np.float64) for p in parts])
    if spec.kind is TaskKind.SURVIVAL:
        time, event = y[:, 0].copy(), y[:, 1].copy()
    names = outcome_names(spec)
    outcomes = _outcomes(y, spec) if names and y.ndim in (1, 2) else None
    return SiteTable(
        feature_names(spec), x, time, event, names if outcomes is not None else (), outcomes
    )
