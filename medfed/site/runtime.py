"""A site at run time: takes an instruction, runs the site app, returns a reply.

Whatever goes wrong inside the site app becomes a :class:`~medfed.records.SiteFailure` value
in the reply, so one failing hospital never takes a round down with it.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence

from medfed.records import Instruction, Operation, Reply, SiteFailure, Update
from medfed.site.app import SiteApp
from medfed.site.pipeline import UpdateStep, compute_delta, run_pipeline

__all__ = ["SiteRuntime"]


class SiteRuntime:
    """One site: its name, its app (model + data) and its update pipeline.

    The runtime lives as long as the run, so an app may keep per-site state across rounds
    (control variates, personalised layers).
    """

    def __init__(self, name: str, app: SiteApp, pipeline: Sequence[UpdateStep] = ()) -> None:
        self.name = name
        self.app = app
        self.pipeline = tuple(pipeline)

    def handle(self, instruction: Instruction) -> Reply:
        start = time.perf_counter()
        try:
            if instruction.operation is Operation.TRAIN:
                result = self.app.fit(instruction.params, instruction)
                delta = compute_delta(result.params, instruction.params)
                update = run_pipeline(
                    Update(delta=delta, num_examples=int(result.num_examples)),
                    instruction,
                    self.pipeline,
                )
                return Reply(
                    site=self.name,
                    round=instruction.round,
                    operation=instruction.operation,
                    update=update,
                    metrics=result.metrics,
                    seconds=time.perf_counter() - start,
                )
            if instruction.operation is Operation.EVALUATE:
                metrics = self.app.evaluate(instruction.params, instruction)
                return Reply(
                    site=self.name,
                    round=instruction.round,
                    operation=instruction.operation,
                    metrics=metrics,
                    seconds=time.perf_counter() - start,
                )
            raise ValueError(f"this site does not know the operation {instruction.operation!r}")
        except Exception as exc:  # a site's failure travels as a value
            return Reply(
                site=self.name,
                round=instruction.round,
                operation=instruction.operation,
                failure=SiteFailure(
                    kind=type(exc).__name__,
                    message=str(exc) or type(exc).__name__,
                    detail="".join(traceback.format_exception(exc, limit=-4)),
                ),
                seconds=time.perf_counter() - start,
            )
