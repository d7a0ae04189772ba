"""The records that move between a coordinator and its sites.

Pure data: numpy only, no torch, no I/O. Everything that crosses a process or a network
boundary is one of these, serialized by :mod:`medfed.serde` (never pickled).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from medfed.messages import RoundSettings, SiteReport

__all__ = [
    "ConfigValue",
    "Instruction",
    "Metrics",
    "Operation",
    "Params",
    "Reply",
    "SiteFailure",
    "TensorSpec",
    "Update",
]

Array = npt.NDArray[np.generic]
ConfigValue = bool | int | float | str


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, shape and dtype of one tensor: what an update is checked against."""

    name: str
    shape: tuple[int, ...]
    dtype: str


_DTYPE_NAMES: dict[np.dtype[np.generic], str] = {}


def _dtype_name(dtype: np.dtype[np.generic]) -> str:
    """``str(dtype)`` is computed in Python on every call; there are few dtypes, so memoize."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


class Params(Mapping[str, Array]):
    """An ordered, named collection of numpy arrays: a model's weights or an update.

    The order is the order of insertion and is part of the identity of a model (two
    ``Params`` with the same names in a different order describe different layouts).

    >>> p = Params({"w": np.zeros((2, 3), np.float32), "b": np.ones(3, np.float32)})
    >>> list(p), p.num_values, p.nbytes
    (['w', 'b'], 9, 36)
    """

    __slots__ = ("_arrays", "_specs")

    def __init__(self, arrays: Mapping[str, Array] | Iterable[tuple[str, Array]] = ()) -> None:
        items = arrays.items() if isinstance(arrays, Mapping) else arrays
        self._arrays: dict[str, Array] = {}
        self._specs: tuple[TensorSpec, ...] | None = None
        for name, value in items:
            if not isinstance(name, str) or not name:
                raise ValueError(f"parameter names must be non-empty strings, got {name!r}")
            if name in self._arrays:
                raise ValueError(f"parameter name {name!r} appears twice")
            if not isinstance(value, np.ndarray):
                raise TypeError(f"parameter {name!r} must be a numpy array, got {type(value)}")
            self._arrays[name] = value

    def __getitem__(self, name: str) -> Array:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._arrays.items())
        return f"Params({inner})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Params):
            return NotImplemented
        return list(self) == list(other) and all(
            a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
            for a, b in zip(self.values(), other.values(), strict=True)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def specs(self) -> tuple[TensorSpec, ...]:
        """The layout (names, shapes, dtypes) that any update to these params must match.

        Computed once: a ``Params`` never gains, loses or reshapes a tensor.
        """
        if self._specs is None:
            self._specs = tuple(
                TensorSpec(k, v.shape, _dtype_name(v.dtype)) for k, v in self._arrays.items()
            )
        return self._specs

    @property
    def num_values(self) -> int:
        return sum(int(v.size) for v in self._arrays.values())

    @property
    def nbytes(self) -> int:
        return sum(int(v.nbytes) for v in self._arrays.values())

    def copy(self) -> Params:
        return Params((k, v.copy()) for k, v in self._arrays.items())

    def zeros_like(self) -> Params:
        return Params((k, np.zeros_like(v)) for k, v in self._arrays.items())


class Operation(enum.StrEnum):
    """What a site is asked to do. A round may chain several operations."""

    TRAIN = "train"
    EVALUATE = "evaluate"
    SECAGG = "secagg"  # one stage of secure aggregation (the stage is in the message)
    STATS = "stats"  # federated statistics, no training (the query is in the message)


@dataclass(frozen=True, slots=True)
class Metrics:
    """What a site measured. Every field is typed; ``extra`` holds a task's own metrics.

    ``None`` means "not measured" (a survival task has no accuracy), never zero. Which
    fields a kind measures: accuracy and AUROC (classification), ``c_index`` (survival),
    ``mae`` and ``rmse`` in the target's unit (regression), ``dice`` (segmentation: mean
    Dice over the foreground classes and images); ``loss`` for all.
    """

    num_examples: int = 0
    loss: float | None = None
    accuracy: float | None = None
    auroc: float | None = None
    c_index: float | None = None
    mae: float | None = None
    rmse: float | None = None
    dice: float | None = None
    extra: Mapping[str, float] = field(default_factory=dict)

    @staticmethod
    def measures() -> tuple[str, ...]:
        """The names of the typed metric fields (all but ``num_examples`` and ``extra``)."""
        return tuple(f.name for f in fields(Metrics) if f.name not in ("num_examples", "extra"))

    def __post_init__(self) -> None:
        if self.num_examples < 0:
            raise ValueError("num_examples cannot be negative")

    def as_dict(self) -> dict[str, float | int | None]:
        """Flat dict for tables and logs: typed fields first, then ``extra``."""
        out: dict[str, float | int | None] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"
        }
        out.update(self.extra)
        return out

    @staticmethod
    def weighted_mean(items: Iterable[Metrics]) -> Metrics:
        """Example-weighted mean of each field over sites; a field no site measured stays None.

        RMSE is combined as the root of the weighted mean of the squares, so the result is the
        RMSE over all the sites' examples together.
        """
        items = [m for m in items if m.num_examples > 0]
        total = sum(m.num_examples for m in items)
        if total == 0:
            return Metrics()

        def mean(values: list[tuple[float, int]]) -> float | None:
            weight = sum(n for _, n in values)
            if weight == 0:
                return None
            return math.fsum(v * n for v, n in values) / weight

        def gather(name: str) -> float | None:
            vals = [(getattr(m, name), m.num_examples) for m in items]
            return mean([(v, n) for v, n in vals if v is not None])

        def root_mean_square() -> float | None:
            # an RMSE over all sites' examples: the weighted mean of the squares, then the root
            squares = [(m.rmse**2, m.num_examples) for m in items if m.rmse is not None]
            value = mean(squares)
            return None if value is None else math.sqrt(value)

        extra_keys = sorted({k for m in items for k in m.extra})
        extra = {}
        for key in extra_keys:
            value = mean([(m.extra[key], m.num_examples) for m in items if key in m.extra])
            if value is not None:
                extra[key] = value
        return Metrics(
            num_examples=total,
            loss=gather("loss"),
            accuracy=gather("accuracy"),
            auroc=gather("auroc"),
            c_index=gather("c_index"),
            mae=gather("mae"),
            rmse=root_mean_square(),
            dice=gather("dice"),
            extra=extra,
        )


@dataclass(frozen=True, slots=True)
class Instruction:
    """What the coordinator asks one site to do in one round."""

    operation: Operation
    round: int
    params: Params
    seed: int
    settings: RoundSettings = field(default_factory=RoundSettings)
    # a protocol message of a multi-stage round (JSON-safe values only), e.g. secure aggregation
    message: Mapping[str, Any] | None = None
    # the run the round belongs to: a site keeps its state per run (medfed.site.state)
    run: str = ""


@dataclass(frozen=True, slots=True)
class Update:
    """A site's protected contribution: ``delta = trained − received``, and its weight."""

    delta: Params
    num_examples: int

    def __post_init__(self) -> None:
        if self.num_examples < 0:
            raise ValueError("num_examples cannot be negative")


@dataclass(frozen=True, slots=True)
class SiteFailure:
    """A site's error, carried as a value so that one failing site cannot stop a round."""

    kind: str
    message: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True, slots=True)
class Reply:
    """A site's answer to one instruction: an update and/or metrics, or a failure."""

    site: str
    round: int
    operation: Operation
    update: Update | None = None
    metrics: Metrics | None = None
    failure: SiteFailure | None = None
    seconds: float = 0.0
    message: Mapping[str, Any] | None = None  # a protocol message back (JSON-safe values only)
    report: SiteReport | None = None  # what the site says about its training (medfed.messages)

    @property
    def ok(self) -> bool:
        return self.failure is None
