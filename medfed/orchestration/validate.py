"""The coordinator's check of every reply before it may touch the global model.

Two steps. :func:`check_update` refuses what cannot be aggregated at all (wrong layout, NaN or
infinite values, an impossible number of examples). :func:`bound_updates` then bounds, within
one round, what a single site can do to the weighted mean: an update whose L2 norm exceeds
``norm_factor`` times the round's lower-median norm is scaled down to that bound, and a claimed
number of examples above ``examples_factor`` times the round's lower-median claim (or above
``max_examples``) is counted at that cap. Each adjustment is kept with its reason, so the round's
record says which site was bounded and why. The lower median (the smaller middle value) keeps
one large update from raising the bound even with two sites.

The defaults are measured, not guessed (``benchmarks/update_norms.py``, in RESULTS.md): across
the bundled data sets the largest honest update of a round stays well below the default factor
times the round's lower median, so honest sites are left alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medfed.config import MAX_EXAMPLES, UpdateBounds
from medfed.math.aggregate import is_finite
from medfed.records import Params, Reply, Update

__all__ = [
    "DEFAULT_EXAMPLES_FACTOR",
    "DEFAULT_NORM_FACTOR",
    "MAX_EXAMPLES",
    "Bounded",
    "UpdateBounds",
    "bound_updates",
    "check_update",
]

DEFAULT_NORM_FACTOR = UpdateBounds().norm_factor
DEFAULT_EXAMPLES_FACTOR = UpdateBounds().examples_factor


@dataclass(frozen=True, slots=True)
class Bounded:
    """One site's update as it enters the aggregate; ``note`` says what was bounded, if any."""

    site: str
    update: Update
    norm: float
    note: str | None = None


def check_update(reply: Reply, params: Params) -> str | None:
    """None when the reply's update can be aggregated, else the reason it is refused."""
    update = reply.update
    if update is None:
        return "the reply carries no update"
    n = update.num_examples
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_EXAMPLES:
        return f"num_examples must be an integer in [0, {MAX_EXAMPLES}], got {n!r}"
    if update.delta.specs != params.specs:
        expected = {s.name: s for s in params.specs}
        for spec in update.delta.specs:
            want = expected.get(spec.name)
            if want is None:
                return f"unexpected tensor {spec.name!r}"
            if want != spec:
                return (
                    f"tensor {spec.name!r} is {spec.dtype}{list(spec.shape)}, "
                    f"the model has {want.dtype}{list(want.shape)}"
                )
        missing = [name for name in expected if name not in update.delta]
        if missing:
            return f"missing tensor {missing[0]!r}"
        return "tensors are not in the model's order"
    if not is_finite(update.delta):
        return "the update contains NaN or infinite values"
    return None


def _lower_median(values: Sequence[float]) -> float | None:
    positive = sorted(v for v in values if v > 0)
    return positive[(len(positive) - 1) // 2] if positive else None


def bound_updates(held: Sequence[Bounded], bounds: UpdateBounds) -> list[Bounded]:
    """The round's checked updates with each site's norm and claimed examples bounded."""
    norm_cap = examples_cap = None
    reference = _lower_median([b.norm for b in held])
    if bounds.norm_factor and reference is not None:
        norm_cap = bounds.norm_factor * reference
    claims = _lower_median([float(b.update.num_examples) for b in held])
    caps = [float(bounds.max_examples)] if bounds.max_examples else []
    if bounds.examples_factor and claims is not None:
        caps.append(bounds.examples_factor * claims)
    if caps:
        examples_cap = max(1, math.floor(min(caps)))
    out = []
    for b in held:
        notes, update = [], b.update
        if norm_cap is not None and b.norm > norm_cap:
            update = dataclasses.replace(update, delta=_scaled(update.delta, norm_cap / b.norm))
            notes.append(
                f"update norm {b.norm:.4g} clipped to {norm_cap:.4g} "
                f"({bounds.norm_factor:g} x the round's median norm {reference:.4g})"
            )
        if examples_cap is not None and update.num_examples > examples_cap:
            notes.append(
                f"claimed {update.num_examples} examples, counted as {examples_cap} "
                "(the most one site may claim in this round: bounds.examples_factor x the "
                "round's median claim, or bounds.max_examples)"
            )
            update = dataclasses.replace(update, num_examples=examples_cap)
        out.append(Bounded(b.site, update, b.norm, "; ".join(notes) or None))
    return out


def _scaled(delta: Params, scale: float) -> Params:
    """``delta * scale`` in its own dtypes (integer tensors rounded)."""
    out = []
    for name, arr in delta.items():
        if arr.dtype.kind not in "fiu":
            out.append((name, arr))
            continue
        wide = arr.astype(np.float64) * scale
        if arr.dtype.kind != "f":
            wide = np.rint(wide)
        out.append((name, wide.astype(arr.dtype)))
    return Params(out)
