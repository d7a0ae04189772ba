"""The update pipeline: what happens to a site's trained weights before anything leaves.

``trained params ─► delta (new − old) ─► step ─► step ─► … ─► Update``

Each step is a small callable ``(update, instruction) -> update`` (clipping, DP noise,
quantisation and secure-aggregation masking plug in here). Steps run in list order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from medfed.records import Instruction, Params, Update

__all__ = ["UpdateStep", "compute_delta", "run_pipeline"]


class UpdateStep(Protocol):
    def __call__(self, update: Update, instruction: Instruction) -> Update: ...


def compute_delta(trained: Params, received: Params) -> Params:
    """``trained − received``, written into ``trained``'s own arrays where that is safe."""
    if trained.specs != received.specs:
        got = {s.name: (s.shape, s.dtype) for s in trained.specs}
        want = {s.name: (s.shape, s.dtype) for s in received.specs}
        diff = sorted(set(got.items()) ^ set(want.items()))
        raise ValueError(
            "the trained params do not have the layout of the params received "
            f"(first difference: {diff[0][0] if diff else 'order of names'}); "
            "a task's fit must return every tensor it was given, unchanged in shape and dtype"
        )
    out = []
    for name, new in trained.items():
        old = received[name]
        if new.flags.writeable and new.flags.owndata and not np.may_share_memory(new, old):
            np.subtract(new, old, out=new)
            out.append((name, new))
        else:
            # asarray: numpy gives a scalar for 0-d arrays (batch norm's num_batches_tracked)
            out.append((name, np.asarray(np.subtract(new, old))))
    return Params(out)


def run_pipeline(update: Update, instruction: Instruction, steps: Sequence[UpdateStep]) -> Update:
    for step in steps:
        update = step(update, instruction)
    return update
