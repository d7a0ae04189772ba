"""The round driver: the one federated loop, shared by every backend.

Each round::

    sample sites ─► send TRAIN ─► collect (failures are values) ─► validate ─► aggregate
                ─► send EVALUATE to every site ─► observers (run store, progress, …)

The driver knows nothing about where sites run (that is the backend) nor how updates are
combined (that is the strategy). Seeds are derived from the run seed, the round and the site's
name; a round's sites are taken in name order and their replies are aggregated in that order
(every backend yields replies in request order, not as they arrive), so a run repeats bit for
bit whichever backend runs it, a simulation's or a real federation's.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from medfed.config import UpdateBounds
from medfed.errors import RoundFailed
from medfed.math.aggregate import is_finite, l2_norm
from medfed.messages import HarmoniseSettings, PersonalSettings, RoundSettings, SiteReport
from medfed.orchestration.backends.base import Backend, Request
from medfed.orchestration.checkpoint import RoundCheckpoint
from medfed.orchestration.validate import Bounded, bound_updates, check_update
from medfed.records import Instruction, Metrics, Operation, Params, Reply, SiteFailure
from medfed.strategies.base import SecureSum, Strategy, StrategyState

if TYPE_CHECKING:
    from medfed.orchestration.secure_round import SecureAggregation
    from medfed.privacy.server import ServerPrivacy

__all__ = ["RoundDriver", "RoundObserver", "RoundResult", "derive_seed", "site_seed"]

_SAMPLING = 0x5A4D  # stream tags keep the sampling and site seeds independent
_SITE = 0x517E
_MASK64 = (1 << 64) - 1


def _steps(reply: Reply) -> int | None:
    """The optimiser steps a site reported for its update (None: not reported)."""
    return None if reply.report is None else reply.report.local_steps


def derive_seed(seed: int, *tags: int) -> int:
    """A 63-bit seed for one purpose, derived from the run seed (SeedSequence)."""
    words = np.random.SeedSequence([seed, *tags]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def site_seed(round_key: int, site: str) -> int:
    """A site's seed within a round: splitmix64 of the round key and the site's name.

    Keyed by name, not by position, so a site's seed does not change when other sites join
    or leave a federation.
    """
    z = (round_key ^ zlib.crc32(site.encode())) & _MASK64
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


@dataclass(frozen=True)
class RoundResult:
    """What happened in one round."""

    round: int
    params: Params
    trained: tuple[str, ...]
    failures: dict[str, SiteFailure]
    train_metrics: dict[str, Metrics]
    eval_metrics: dict[str, Metrics] = field(default_factory=dict)
    eval_failures: dict[str, SiteFailure] = field(default_factory=dict)
    seconds: float = 0.0
    privacy: dict[str, float] = field(default_factory=dict)  # ε so far, δ, σ, clip (DP runs)
    # each site's update norm as it arrived, and why a site's update was bounded (if it was)
    update_norms: dict[str, float] = field(default_factory=dict)
    bounded: dict[str, str] = field(default_factory=dict)
    # what each site reported about its training (DP-SGD's ε, saturated values, …)
    reports: dict[str, SiteReport] = field(default_factory=dict)
    # the strategy's state after this round (checkpointed with the round's params)
    strategy_state: StrategyState = field(default_factory=StrategyState)
    # the coordinator's privacy state after this round (the adaptive clip), ditto
    privacy_state: dict[str, float] = field(default_factory=dict)
    # the harmonisation the sites were sent ([data] harmonise in a federation), ditto
    harmonise: HarmoniseSettings | None = None
    # the last round's personalised evaluation: each site with its own layers / fine-tuning
    personal_metrics: dict[str, Metrics] = field(default_factory=dict)
    personal_failures: dict[str, SiteFailure] = field(default_factory=dict)

    @property
    def checkpoint(self) -> RoundCheckpoint:
        """What a restarted run needs besides the round's params to resume identically."""
        return RoundCheckpoint(
            self.round, self.strategy_state, dict(self.privacy_state), harmonise=self.harmonise
        )

    @property
    def train_summary(self) -> Metrics:
        return Metrics.weighted_mean(self.train_metrics.values())

    @property
    def eval_summary(self) -> Metrics | None:
        return Metrics.weighted_mean(self.eval_metrics.values()) if self.eval_metrics else None


class RoundObserver(Protocol):
    def on_round_end(self, result: RoundResult) -> None: ...


class RoundDriver:
    """Runs rounds of ``strategy`` over the sites reachable through ``backend``."""

    def __init__(
        self,
        *,
        strategy: Strategy,
        backend: Backend,
        seed: int,
        evaluate_every: int = 1,
        timeout: float | None = None,
        observers: Sequence[RoundObserver] = (),
        secure: SecureAggregation | None = None,
        privacy: ServerPrivacy | None = None,
        bounds: UpdateBounds | None = None,
        run_name: str = "federated",
    ) -> None:
        # the run's name in every instruction: sites keep their state per run (site.state)
        self.run_name = run_name
        # no bounds unless given: a simulation's sites are the user's own; a federation's job
        # passes its [bounds] (the defaults of UpdateBounds unless the researcher set them)
        self.bounds = UpdateBounds.none() if bounds is None else bounds
        self.secure = secure
        self.privacy = privacy
        self.strategy = strategy
        self.backend = backend
        self.seed = seed
        self.evaluate_every = evaluate_every
        self.timeout = timeout
        self.observers = list(observers)
        # the strategy's state: None until the first round (init_state), or set to resume
        self.strategy_state: StrategyState | None = None
        # the federation's feature standardisation, sent with every TRAIN and EVALUATE (a
        # federation's [data] harmonise; a simulation's sites are built harmonised instead)
        self.harmonise: HarmoniseSettings | None = None
        # the run's personalisation ([personalise]): layers kept at the sites while training,
        # and a personalised evaluation after the last round (with the strategy's, FedBN's)
        self.personal: PersonalSettings | None = None
        self._round_key: tuple[tuple[int, int], int] = ((-1, -1), 0)

    def restore(self, checkpoint: RoundCheckpoint | None, *, rounds_done: int) -> None:
        """Resume after ``rounds_done`` rounds from the checkpoint written after the last one.

        ``None`` (a run checkpointed before checkpoints held state): the strategy starts from
        its initial state, the accountant still counts the rounds that ran.
        """
        if checkpoint is not None and checkpoint.round != rounds_done:
            raise ValueError(
                f"the checkpoint is of round {checkpoint.round}, the run resumes after "
                f"round {rounds_done}"
            )
        self.strategy_state = None if checkpoint is None else checkpoint.strategy
        if checkpoint is not None and checkpoint.harmonise is not None:
            self.harmonise = checkpoint.harmonise
        if self.privacy is not None:
            state = {} if checkpoint is None else checkpoint.privacy
            self.privacy.restore(state, rounds_done=rounds_done)

    def _instruction(
        self,
        operation: Operation,
        round: int,
        site: str,
        params: Params,
        settings: RoundSettings,
    ) -> Instruction:
        key = (round, int(operation == Operation.EVALUATE))
        if self._round_key[0] != key:  # one SeedSequence per round and operation
            self._round_key = (key, derive_seed(self.seed, _SITE, *key))
        seed = site_seed(self._round_key[1], site)
        if self.harmonise is not None and operation in (Operation.TRAIN, Operation.EVALUATE):
            settings = dataclasses.replace(settings, harmonise=self.harmonise)
        return Instruction(
            operation=operation,
            round=round,
            params=params,
            seed=seed,
            settings=settings,
            run=self.run_name,
        )

    def _secure_settings(self) -> SecureAggregation | None:
        if self.secure is None or self.privacy is None:
            return self.secure
        return dataclasses.replace(
            self.secure,
            bound=self.privacy.value_bound(),
            uniform_weights=True,
            extra_values=self.privacy.extra_values,
        )

    def train_round(self, round: int, params: Params) -> RoundResult:
        """Sample, train, validate and aggregate; raises RoundFailed below the minimum.

        With secure aggregation the sites hold their protected updates after training and
        the coordinator gets only their sum (:mod:`medfed.orchestration.secure_round`).
        With client-level DP every site counts once and ε is accounted after the round.
        """
        start = time.perf_counter()
        # in name order whatever order the backend lists them in (a simulation: the data
        # set's; a federation: the coordinator's): the round samples the same sites and sums
        # their updates in the same order (float addition is not associative), so a run gives
        # the same model simulated and federated
        sites = sorted(self.backend.site_names)
        rng = np.random.default_rng([self.seed, _SAMPLING, round])
        plans = self.strategy.configure_train(round=round, params=params, sites=sites, rng=rng)
        secure = self._secure_settings()
        clip = None if self.privacy is None else self.privacy.round_clip()
        terms = None if secure is None else secure.round_settings()

        def protected(settings: RoundSettings) -> RoundSettings:
            personal = settings.personal
            if self.personal is not None:
                personal = self.personal.merged(personal)
            return dataclasses.replace(settings, clip_norm=clip, secure=terms, personal=personal)

        if self.strategy_state is None:
            self.strategy_state = self.strategy.init_state(params)
        # the model, and what the strategy sends with it (SCAFFOLD's control variate): the
        # updates come back in this layout
        sent = self.strategy.payload(params, self.strategy_state)
        requests: list[Request] = [
            (
                p.site,
                self._instruction(Operation.TRAIN, round, p.site, sent, protected(p.settings)),
            )
            for p in plans
        ]
        aggregator = self.strategy.aggregator(round=round, params=params, state=self.strategy_state)
        reports: dict[str, SiteReport] = {}
        failures: dict[str, SiteFailure] = {}
        train_metrics: dict[str, Metrics] = {}
        trained: list[str] = []
        bits: list[float] = []
        # with bounds relative to the round, checked updates wait for the round's last one
        # (memory-mapped in a federation, so holding them costs no memory there); without,
        # each is added as it arrives and only an absolute cap on its claim applies
        relative = bool(self.bounds.norm_factor or self.bounds.examples_factor)
        held: list[Bounded] = []
        steps_of: dict[str, int | None] = {}
        bounded: dict[str, str] = {}
        for reply in self.backend.exchange(requests, timeout=self.timeout):
            if reply.failure is not None:
                failures[reply.site] = reply.failure
                continue
            if secure is not None:
                if reply.update is not None or not reply.message:
                    failures[reply.site] = SiteFailure(
                        "InvalidUpdate", "a secure round's training reply holds its update back"
                    )
                    continue
            else:
                problem = check_update(reply, sent)
                if problem is not None:
                    failures[reply.site] = SiteFailure("InvalidUpdate", problem)
                    continue
                assert reply.update is not None
                update = reply.update
                if self.privacy is not None:  # DP-FedAvg: every site counts once
                    update = dataclasses.replace(update, num_examples=1)
                if relative:
                    held.append(Bounded(reply.site, update, l2_norm(update.delta)))
                    steps_of[reply.site] = _steps(reply)
                else:
                    [b] = bound_updates([Bounded(reply.site, update, math.nan)], self.bounds)
                    aggregator.add(b.site, b.update, steps=_steps(reply))
                    if b.note is not None:
                        bounded[b.site] = b.note
                    del b, update
            trained.append(reply.site)
            if reply.metrics is not None:
                train_metrics[reply.site] = reply.metrics
            if reply.report is not None:
                reports[reply.site] = reply.report
                bit = reply.report.clip_bit
                if bit is not None and math.isfinite(bit):
                    bits.append(bit)
            del reply
        for b in bound_updates(held, self.bounds):
            aggregator.add(b.site, b.update, steps=steps_of.get(b.site))
            if b.note is not None:
                bounded[b.site] = b.note
        norms = {b.site: b.norm for b in held}
        del held
        needed = self.strategy.min_sites
        if secure is not None and len(trained) >= needed:
            from medfed.orchestration.secure_round import secure_sum

            result = secure_sum(
                self.backend,
                settings=secure,
                round=round,
                sites=trained,
                like=sent,
                timeout=self.timeout,
            )
            failures.update(result.failures)
            trained = [s for s in trained if s in result.survivors]
            if len(trained) >= needed:
                aggregator.add_sum(SecureSum(result.mean, result.total_weight, tuple(trained)))
            bits = [float(v) for v in result.extra_sum]
        if len(trained) < needed:
            detail = "; ".join(f"{s}: {f}" for s, f in failures.items()) or "no site replied"
            raise RoundFailed(
                f"round {round}: {len(trained)} of {len(requests)} sites returned a valid update, "
                f"at least {needed} needed ({detail})"
            )
        with np.errstate(over="ignore", invalid="ignore"):  # checked right below
            outcome = aggregator.finish()
        new_params = outcome.params
        if not is_finite(new_params):  # never publish a model no site can evaluate
            raise RoundFailed(
                f"round {round}: the aggregate of {len(trained)} updates is not finite; the "
                "global model is kept as it was (lower bounds.norm_factor, or look for the "
                "site whose updates are out of scale in the round's record)"
            )
        self.strategy_state = outcome.state  # the round passed every check
        privacy = {}
        if self.privacy is not None:
            privacy = self.privacy.finish_round(centred_bits_sum=math.fsum(bits) if bits else None)
        return RoundResult(
            round=round,
            params=new_params,
            trained=tuple(trained),
            failures=failures,
            train_metrics=train_metrics,
            seconds=time.perf_counter() - start,
            privacy=privacy,
            update_norms=norms,
            bounded=bounded,
            reports=reports,
            strategy_state=outcome.state,
            privacy_state={} if self.privacy is None else self.privacy.state(),
            harmonise=self.harmonise,
        )

    def personalisation(self, round: int) -> PersonalSettings | None:
        """What a personalised evaluation asks of the sites (None: the run has none)."""
        own = self.strategy.round_settings(round=round).personal
        return own if self.personal is None else self.personal.merged(own)

    def evaluate(
        self, round: int, params: Params, *, personal: PersonalSettings | None = None
    ) -> tuple[dict[str, Metrics], dict[str, SiteFailure]]:
        """Every site evaluates ``params`` on its own held-out data; with ``personal``, each
        with its own layers (and fine-tuning) instead (:mod:`medfed.site.personal`)."""
        plans = self.strategy.configure_evaluate(round=round, sites=self.backend.site_names)
        requests: list[Request] = [
            (
                p.site,
                self._instruction(
                    Operation.EVALUATE,
                    round,
                    p.site,
                    params,
                    p.settings
                    if personal is None
                    else dataclasses.replace(p.settings, personal=personal),
                ),
            )
            for p in plans
        ]
        metrics: dict[str, Metrics] = {}
        failures: dict[str, SiteFailure] = {}
        for reply in self.backend.exchange(requests, timeout=self.timeout):
            if reply.failure is not None:
                failures[reply.site] = reply.failure
            elif reply.metrics is not None:
                metrics[reply.site] = reply.metrics
        return metrics, failures

    def run_round(self, round: int, params: Params, *, last: bool = False) -> RoundResult:
        start = time.perf_counter()
        result = self.train_round(round, params)
        if last or (self.evaluate_every and round % self.evaluate_every == 0):
            metrics, failures = self.evaluate(round, result.params)
            result = dataclasses.replace(result, eval_metrics=metrics, eval_failures=failures)
        personal = self.personalisation(round) if last else None
        if personal is not None:
            metrics, failures = self.evaluate(round, result.params, personal=personal)
            result = dataclasses.replace(
                result, personal_metrics=metrics, personal_failures=failures
            )
        result = dataclasses.replace(result, seconds=time.perf_counter() - start)
        for observer in self.observers:
            observer.on_round_end(result)
        return result

    def run(self, params: Params, *, rounds: int, first_round: int = 1) -> Params:
        """Rounds ``first_round..rounds``; returns the final global params."""
        for r in range(first_round, rounds + 1):
            params = self.run_round(r, params, last=r == rounds).params
        return params
