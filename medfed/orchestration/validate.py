"""The coordinator's check of every reply before it may touch the global model."""

from __future__ import annotations

from medfed.math.aggregate import is_finite
from medfed.records import Params, Reply

__all__ = ["check_update"]

MAX_EXAMPLES = 10**12


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
