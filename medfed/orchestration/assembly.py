"""One run, assembled once: the round driver of a simulation and of a federation's job.

From a resolved :class:`~medfed.config.RunConfig` this builds the strategy (with its
options), the driver's participation, evaluation, bounds and timeout, and attaches the
coordinator's protection and the observers. A simulation and a job differ only in what they
pass in: the backend (sites in this process, in a pool of workers, or remote nodes), the
protection's identity check, and the observers that store the rounds (a run folder, or the
coordinator's database).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from medfed.orchestration.driver import RoundDriver, RoundObserver

if TYPE_CHECKING:
    from medfed.config import RunConfig
    from medfed.orchestration.backends.base import Backend
    from medfed.orchestration.secure_round import SecureAggregation
    from medfed.privacy.server import ServerPrivacy

__all__ = ["assemble_driver"]


def assemble_driver(
    config: RunConfig,
    backend: Backend,
    *,
    privacy: ServerPrivacy | None = None,
    secure: SecureAggregation | None = None,
    observers: Sequence[RoundObserver] = (),
    run_name: str = "federated",
) -> RoundDriver:
    """The round driver for ``config`` (resolved for its mode) over ``backend``.

    ``run_name`` names the run in every instruction: sites keep their state per run.
    """
    driver = RoundDriver(
        strategy=config.make_strategy(),
        backend=backend,
        seed=config.seed,
        evaluate_every=config.evaluation.every,
        timeout=config.round_timeout,
        observers=list(observers),
        secure=secure,
        privacy=privacy,
        bounds=config.update_bounds,
        run_name=run_name,
    )
    driver.personal = config.personalise.settings()
    return driver
