"""Aggregation of site updates: a streamed weighted mean and robust alternatives.

The weighted mean is accumulated one update at a time, so memory does not grow with the
number of sites (FedAvg, McMahan et al. 2017). Large tensors are processed in cache-sized
chunks, which avoids a full-size temporary per update.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from medfed.records import Params
from medfed.scan import windows

__all__ = [
    "WeightedMean",
    "coordinate_median",
    "is_finite",
    "l2_norm",
    "multi_krum",
    "trimmed_mean",
    "weighted_mean",
]

_CHUNK = 1 << 16  # values per chunk when tensors are large (fits in L2 cache)
_SMALL = 1 << 20  # up to this many values, one full-size scratch buffer is cheaper


def is_finite(params: Params) -> bool:
    """True when no value is NaN or infinite.

    Large tensors are checked window by window: a window's sum answers almost always
    without a temporary (a sum is finite only if every term is), and the exact element-wise
    test runs only on a window whose sum overflowed. A memory-mapped tensor's pages are
    released behind the scan (:mod:`medfed.scan`), so checking a multi-GB upload does not
    make the process multi-GB bigger.
    """
    for arr in params.values():
        if arr.dtype.kind != "f" or arr.size == 0:
            continue
        parts = windows(arr) if arr.size > _SMALL else (arr,)
        for part in parts:
            if part.size > _SMALL:
                with np.errstate(over="ignore", invalid="ignore"):
                    if np.isfinite(np.sum(part)):
                        continue
            if not np.isfinite(part).all():
                return False
    return True


def l2_norm(params: Params) -> float:
    """The L2 norm of every numeric value in ``params``, accumulated in float64.

    Window by window like :func:`is_finite` (a memory-mapped update's pages are released
    behind the scan), so the norm of float32 values near their maximum is still finite.
    """
    total = 0.0
    for arr in params.values():
        if arr.dtype.kind not in "fiu" or arr.size == 0:
            continue
        for part in windows(arr) if arr.size > _SMALL else (arr.reshape(-1),):
            wide = part.astype(np.float64)
            total += float(np.dot(wide, wide))
    return float(np.sqrt(total))


def _acc_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    if np.issubdtype(dtype, np.floating) and dtype.itemsize >= 4:
        return dtype
    return np.dtype(np.float64)


class WeightedMean:
    """Streamed weighted mean of params with a fixed layout.

    >>> a = Params({"w": np.array([1.0, 2.0], np.float32)})
    >>> b = Params({"w": np.array([3.0, 6.0], np.float32)})
    >>> m = WeightedMean(a)
    >>> m.add(a, weight=1); m.add(b, weight=3)
    >>> m.result()["w"].tolist()
    [2.5, 5.0]
    """

    def __init__(self, like: Params) -> None:
        self._layout = like.specs
        self._acc = {k: np.zeros(v.shape, _acc_dtype(v.dtype)) for k, v in like.items()}
        self._dtypes = {k: v.dtype for k, v in like.items()}
        largest = max((v.size for v in like.values()), default=0)
        scratch_size = largest if largest <= _SMALL else _CHUNK
        self._scratch = {
            dt: np.empty(scratch_size, dt) for dt in {a.dtype for a in self._acc.values()}
        }
        self.total_weight = 0.0
        self.count = 0
        self._result: Params | None = None

    def add(self, params: Params, *, weight: float) -> None:
        """Add one update. Its layout must match the one given at construction."""
        if not weight >= 0 or not np.isfinite(weight):
            raise ValueError(f"weight must be a finite non-negative number, got {weight}")
        if params.specs != self._layout:
            raise ValueError("update layout (names, shapes, dtypes) differs from the model's")
        if self._result is not None:
            raise RuntimeError("this mean is already finished; start a new WeightedMean")
        self.count += 1
        if weight == 0:
            return
        self.total_weight += weight
        # an overflow makes the mean infinite, which the caller checks (never published)
        with np.errstate(over="ignore", invalid="ignore"):
            for name, acc in self._acc.items():
                _axpy(acc, params[name], weight, self._scratch[acc.dtype])

    def result(self) -> Params | None:
        """The weighted mean in the original dtypes, or None when the total weight is zero."""
        if self.total_weight == 0:
            return None
        if self._result is not None:
            return self._result
        out = []
        for name, acc in self._acc.items():
            mean = acc
            mean /= acc.dtype.type(self.total_weight)  # in place: no second full-size array
            dtype = self._dtypes[name]
            if not np.issubdtype(dtype, np.floating):
                mean = np.rint(mean)
            out.append((name, np.asarray(mean).astype(dtype, copy=False)))
        self._result = Params(out)
        return self._result


def _axpy(
    acc: npt.NDArray[Any],
    x: npt.NDArray[Any],
    weight: float,
    scratch: npt.NDArray[Any],
) -> None:
    """acc += weight * x, chunked so no full-size temporary is made."""
    flat_acc = acc.reshape(-1)
    flat_x = x.reshape(-1)
    n = flat_acc.size
    if n <= scratch.size:
        buf = scratch[:n]
        np.multiply(flat_x, weight, out=buf, casting="unsafe")
        flat_acc += buf
        return
    start = 0  # in windows: a memory-mapped update's pages are released behind the scan
    for part in windows(x, scratch.size * x.itemsize):
        stop = start + part.size
        buf = scratch[: part.size]
        np.multiply(part, weight, out=buf, casting="unsafe")
        flat_acc[start:stop] += buf
        start = stop


def weighted_mean(items: Iterable[tuple[Params, float]]) -> Params | None:
    """Weighted mean of ``(params, weight)`` pairs; None for no items or zero total weight."""
    mean: WeightedMean | None = None
    for params, weight in items:
        if mean is None:
            mean = WeightedMean(params)
        mean.add(params, weight=weight)
    return None if mean is None else mean.result()


def _stack(items: Sequence[Params], name: str) -> npt.NDArray[np.float64]:
    return np.stack([p[name].astype(np.float64) for p in items])


def coordinate_median(items: Sequence[Params]) -> Params:
    """Coordinate-wise median (Yin et al. 2018): robust to a minority of outlying sites."""
    if not items:
        raise ValueError("the median of no updates is undefined")
    first = items[0]
    return Params(
        (k, np.asarray(np.median(_stack(items, k), axis=0)).astype(v.dtype))
        for k, v in first.items()
    )


def trimmed_mean(items: Sequence[Params], *, trim_fraction: float) -> Params:
    """Coordinate-wise mean after dropping the ``trim_fraction`` largest and smallest values."""
    if not 0 <= trim_fraction < 0.5:
        raise ValueError("trim_fraction must be in [0, 0.5)")
    if not items:
        raise ValueError("the trimmed mean of no updates is undefined")
    k = int(len(items) * trim_fraction)
    out = []
    for name, v in items[0].items():
        stacked = np.sort(_stack(items, name), axis=0)
        kept = stacked[k : len(items) - k]
        out.append((name, kept.mean(axis=0).astype(v.dtype)))
    return Params(out)


def multi_krum(items: Sequence[Params], *, byzantine: int, keep: int) -> list[int]:
    """Multi-Krum (Blanchard et al., NeurIPS 2017): the indices of the ``keep`` updates whose
    ``n − f − 2`` nearest neighbours are closest (sum of squared distances), ``f`` the number
    of Byzantine sites tolerated; needs ``n > 2f + 2``."""
    n = len(items)
    if byzantine < 0 or n <= 2 * byzantine + 2:
        raise ValueError(
            f"Krum with f = {byzantine} Byzantine sites needs more than {2 * byzantine + 2} "
            f"updates, got {n}"
        )
    if not 1 <= keep <= n:
        raise ValueError(f"keep must be between 1 and the {n} updates, got {keep}")
    flat = np.stack(
        [np.concatenate([p[k].astype(np.float64).reshape(-1) for k in p]) for p in items]
    )
    sq = np.sum(flat * flat, axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    neighbours = n - byzantine - 2
    scores = [float(np.sort(np.delete(dist[i], i))[:neighbours].sum()) for i in range(n)]
    return sorted(range(n), key=lambda i: (scores[i], i))[:keep]
