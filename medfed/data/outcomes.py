"""Outcome values as medfed's labels: class indices for binary and multiclass tasks, float32
targets for regression — one rule for tables and for images' labels files alike."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medfed.data.base import TaskKind
from medfed.errors import DataError

__all__ = [
    "class_codes",
    "plain",
    "range_scaling",
    "regression_targets",
    "target_scaling",
]


def plain(value: Any) -> Any:
    """A label value as a plain Python value (numpy ints, floats 1.0 -> 1)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def class_codes(
    kind: TaskKind, label: str, positive: Any, observed: Iterable[Any], source: Path
) -> tuple[dict[Any, int], int]:
    """The label value -> class index map of a binary or multiclass task, and the class count.

    Values are ordered as text; a binary task's class 1 is ``positive`` when given, else 1
    (for 0/1 or false/true labels) or the second value in that order.
    """
    values = sorted({plain(v) for v in observed}, key=str)
    if kind is TaskKind.BINARY:
        if len(values) > 2:
            raise DataError(
                f"label {label!r} has {len(values)} values ({', '.join(map(str, values[:6]))}) "
                'but the task is binary; use task = "multiclass" or recode the label'
            )
        if positive is not None:
            if plain(positive) not in values:
                raise DataError(f"{source}: positive = {positive!r} is not a value of {label!r}")
            negative = [v for v in values if v != plain(positive)]
            return {**{v: 0 for v in negative}, plain(positive): 1}, 2
        if set(values) <= {0, 1} or set(values) <= {False, True}:
            return {v: int(v) for v in values}, 2
        if len(values) < 2:
            raise DataError(f"label {label!r} has a single value {values}; a binary task needs two")
        return {values[0]: 0, values[1]: 1}, 2
    if len(values) < 2:
        raise DataError(f"label {label!r} has fewer than two classes across the sites")
    return {v: i for i, v in enumerate(values)}, len(values)


def regression_targets(
    values: Iterable[Any], *, label: str, where: str, rows: Iterable[int]
) -> npt.NDArray[np.float32]:
    """Each value as a finite number; the first that is not one is a :class:`DataError`
    naming ``where`` (the file), the column and the data row (from ``rows``)."""
    out: list[float] = []
    for value, row in zip(values, rows, strict=True):
        number: float | None
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not math.isfinite(number):
            raise DataError(
                f"{where}, data row {row}: label {label!r} must be a finite number for a "
                f"regression task, not {plain(value)!r}; fix the value or leave the cell empty "
                "(a row without a label is left out)"
            )
        out.append(number)
    return np.asarray(out, dtype=np.float32)


def target_scaling(targets: Iterable[npt.NDArray[Any]]) -> tuple[float, float]:
    """A regression target's centre and scale for the spec: the mean and standard deviation
    of the sites' training targets pooled (a scale of 1 for a constant target)."""
    y = np.concatenate([np.asarray(t, np.float64).reshape(-1) for t in targets])
    if not len(y):
        return 0.0, 1.0
    sd = float(y.std())
    return float(y.mean()), sd if sd > 0 and math.isfinite(sd) else 1.0


def range_scaling(low: float | None, high: float | None) -> tuple[float, float]:
    """A contract's regression centre and scale from the label's declared range alone (no
    site's data): the middle of [min, max] and a quarter of its width; 0 and 1 without both."""
    if low is None or high is None or not high > low:
        return 0.0, 1.0
    return (low + high) / 2, (high - low) / 4
