"""A site at run time: takes an instruction, runs the site app, returns a reply.

Whatever goes wrong inside the site app becomes a :class:`~medfed.records.SiteFailure` value
in the reply, so one failing hospital never takes a round down with it.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from medfed.messages import SiteReport
from medfed.records import Instruction, Metrics, Operation, Reply, SiteFailure, Update
from medfed.site.app import SiteApp
from medfed.site.pipeline import UpdateStep, compute_delta, run_pipeline

if TYPE_CHECKING:
    from medfed.privacy.steps import ClientDPSteps
    from medfed.site.secure_aggregation import SecureAggregationSite
    from medfed.site.statistics import StatsSource

__all__ = ["SiteRuntime"]


class SiteRuntime:
    """One site: its name, its app (model + data) and its update pipeline.

    The runtime lives as long as the run; what a site must remember across rounds (control
    variates, personalised layers) belongs in its state store (:mod:`medfed.site.state`),
    which also survives a restart of the process the site runs in.
    """

    def __init__(
        self,
        name: str,
        app: SiteApp,
        pipeline: Sequence[UpdateStep] = (),
        *,
        dp: ClientDPSteps | None = None,
        secure: SecureAggregationSite | None = None,
        stats: StatsSource | None = None,
    ) -> None:
        self.name = name
        self.stats = stats  # the records federated statistics read (medfed.site.statistics)
        self.app = app
        self.dp = dp
        self.secure = secure
        self.pipeline = (*(dp.steps if dp is not None else ()), *pipeline)

    def _train(
        self, instruction: Instruction
    ) -> tuple[Update | None, Metrics, SiteReport, dict[str, object]]:
        """Train, protect the update; in a secure round hold it instead of sending it."""
        result = self.app.fit(instruction.params, instruction)
        delta = compute_delta(result.params, instruction.params)
        update = run_pipeline(
            Update(delta=delta, num_examples=int(result.num_examples)),
            instruction,
            self.pipeline,
        )
        report = result.report or SiteReport()
        if self.dp is not None:  # client-level DP: the step count would tell the record count
            report = replace(report, local_steps=None)
        bit = None
        if self.dp is not None and self.dp.bit_noise_std is not None:
            bit = self.dp.noised_centered_bit()
        if instruction.settings.secure is not None:
            if self.secure is None:
                raise RuntimeError(
                    "the coordinator asks for secure aggregation, which this site is not set up for"
                )
            saturated = self.secure.hold(instruction, update, [] if bit is None else [bit])
            report = replace(report, saturated=saturated)  # the bit travels inside the sum
            held = {"secagg": "held", "length": update.delta.num_values}
            return None, result.metrics, report, held
        return update, result.metrics, replace(report, clip_bit=bit), {}

    def handle(self, instruction: Instruction) -> Reply:
        start = time.perf_counter()
        try:
            if instruction.operation is Operation.TRAIN:
                update, metrics, report, message = self._train(instruction)
                return Reply(
                    site=self.name,
                    round=instruction.round,
                    operation=instruction.operation,
                    update=update,
                    metrics=metrics,
                    seconds=time.perf_counter() - start,
                    message=message or None,
                    report=report,
                )
            if instruction.operation is Operation.SECAGG and self.secure is not None:
                answer, masked = self.secure.handle(instruction)
                return Reply(
                    site=self.name,
                    round=instruction.round,
                    operation=instruction.operation,
                    update=masked,
                    seconds=time.perf_counter() - start,
                    message=answer,
                )
            if instruction.operation is Operation.STATS:
                from medfed.site.statistics import answer_stats

                update, message = answer_stats(instruction, self.stats, self.secure)
                return Reply(
                    site=self.name,
                    round=instruction.round,
                    operation=instruction.operation,
                    update=update,
                    seconds=time.perf_counter() - start,
                    message=message,
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
