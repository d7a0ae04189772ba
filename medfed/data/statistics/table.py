"""A site's records as statistics see them: raw feature values (NaN where missing), and the
follow-up time and event of a survival outcome.

Built from the site's data as its loader prepared them (:class:`~medfed.data.base.SiteData`):
for the bundled data sets these are the loader's features (e.g. already standardised with
dataset-level constants; ``synthetic-ehr`` with ``standardize=false`` keeps clinical units), and
for data set files with ``standardize = "none"`` the table's own values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medfed.data.base import DataSpec, SiteData, TaskKind
from medfed.errors import DataError

__all__ = ["SiteTable", "site_table"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SiteTable:
    """``features``: (n, F) float64, NaN for a missing value; ``time``/``event``: (n,) or None."""

    names: tuple[str, ...]
    features: FloatArray
    time: FloatArray | None = None
    event: FloatArray | None = None

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.features.shape[1] != len(self.names):
            raise ValueError(
                f"features must be (records, {len(self.names)}), got {self.features.shape}"
            )
        if (self.time is None) != (self.event is None):
            raise ValueError("time and event come together")

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])

    def columns(self, names: tuple[str, ...]) -> FloatArray:
        """The named feature columns, in that order; an unknown name is a DataError."""
        index = {n: i for i, n in enumerate(self.names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise DataError(
                f"the site's data have no feature {', '.join(map(repr, unknown))}; its "
                f"features are {', '.join(self.names)}"
            )
        return self.features[:, [index[n] for n in names]]


def feature_names(spec: DataSpec) -> tuple[str, ...]:
    n = int(np.prod(spec.input_shape))
    names = tuple(spec.feature_names)
    return names if len(names) == n else tuple(f"x{i}" for i in range(n))


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
    if spec.kind is TaskKind.SURVIVAL:
        y = np.concatenate([np.asarray(p[1], np.float64) for p in parts])
        time, event = y[:, 0].copy(), y[:, 1].copy()
    return SiteTable(feature_names(spec), x, time, event)
