"""Job configuration, and the runner that drives a job's rounds inside the coordinator.

A job runs the same :class:`~medfed.orchestration.driver.RoundDriver` and strategies as a
simulation, with :class:`~.remote_backend.RemoteBackend` as its backend.
After each round the new global model is streamed into the blob store and the round is
checkpointed in the store, so a restarted coordinator resumes at the next round.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from medfed.errors import MedfedError
from medfed.federation.coordinator.blobs import BlobStore
from medfed.federation.coordinator.job_config import JobConfig
from medfed.federation.coordinator.remote_backend import JobCancelled, RemoteBackend
from medfed.federation.coordinator.store import Store
from medfed.messages import report_to_json
from medfed.orchestration.checkpoint import (
    RoundCheckpoint,
    checkpoint_from_bytes,
    checkpoint_to_bytes,
)
from medfed.orchestration.driver import RoundDriver, RoundResult
from medfed.privacy.config import PrivacyConfig
from medfed.strategies import expected_sites, make_strategy
from medfed.tensor_file import open_params

if TYPE_CHECKING:
    from medfed.orchestration.secure_round import SecureAggregation
    from medfed.privacy.server import ServerPrivacy

__all__ = ["JobConfig", "JobRunner"]

log = logging.getLogger("medfed.coordinator")


class JobRunner(threading.Thread):
    """Drives one job from its last checkpoint to its last round (a daemon thread)."""

    def __init__(
        self, store: Store, blobs: BlobStore, job_id: str, wakeup: threading.Condition
    ) -> None:
        super().__init__(name=f"job-{job_id}", daemon=True)
        self.store = store
        self.blobs = blobs
        self.job_id = job_id
        self.wakeup = wakeup

    def run(self) -> None:
        try:
            self._run()
        except JobCancelled:
            log.info("job %s stopped: %s", self.job_id, "cancelled")
        except MedfedError as exc:
            # a job cancelled mid-round fails its round *because* it was cancelled: it stays so
            if not self.store.set_job_status(self.job_id, "failed", str(exc), if_status="running"):
                log.info("job %s stopped mid-round: %s", self.job_id, exc)
                return
            self.store.audit(
                principal="coordinator",
                role="coordinator",
                action="job.failed",
                target=self.job_id,
                outcome="error",
                detail=str(exc),
            )
        except Exception as exc:  # a bug must not kill the coordinator, and must be visible
            log.exception("job %s crashed", self.job_id)
            self.store.set_job_status(
                self.job_id, "failed", f"internal error: {exc}", if_status="running"
            )

    def _run(self) -> None:
        job = self.store.job(self.job_id)
        if job is None or job.status != "running":
            return
        config = JobConfig.from_json(job.config)
        # memory-mapped (read-only): the model is not read until a round needs it
        params, _ = open_params(self.blobs.path(job.params_sha256))
        strategy = make_strategy(
            config.strategy,
            fraction=config.fraction,
            min_sites=config.min_sites,
            options=config.strategy_options,
        )
        backend = RemoteBackend(self.store, self.blobs, self.job_id, wakeup=self.wakeup)

        store, blobs, job_id = self.store, self.blobs, self.job_id

        class Checkpoint:
            def on_round_end(self, result: RoundResult) -> None:
                sha = blobs.put_params(result.params, {"round": str(result.round)})
                state = blobs.put(checkpoint_to_bytes(result.checkpoint))
                summary = {**_summary(result), "checkpoint_sha256": state}
                store.record_round(job_id, result.round, sha, summary)

        driver = RoundDriver(
            strategy=strategy,
            backend=backend,
            seed=config.seed,
            evaluate_every=config.evaluate_every,
            timeout=config.round_timeout,
            observers=[Checkpoint()],
            bounds=config.update_bounds(),
        )
        privacy = config.privacy_config()
        checkpoint = self._checkpoint(job.rounds_done)
        for r in range(job.rounds_done + 1, config.rounds + 1):
            # a round starts once enough data stewards have approved the job's code
            sites = backend.wait_for_sites(config.min_sites)
            if r == job.rounds_done + 1:
                if privacy.enabled or privacy.secure_aggregation:
                    driver.privacy, driver.secure = self._protection(config, privacy, len(sites))
                # a resumed job: the strategy's and the accountant's state as they were
                driver.restore(checkpoint, rounds_done=job.rounds_done)
            params = driver.run_round(r, params, last=r == config.rounds).params
        if not self.store.set_job_status(self.job_id, "complete", if_status="running"):
            return  # cancelled as the last round ended: the researcher's decision stands
        self.store.audit(
            principal="coordinator", role="coordinator", action="job.complete", target=self.job_id
        )

    def _checkpoint(self, rounds_done: int) -> RoundCheckpoint | None:
        """The state checkpointed with the last round that ran (None before round 1)."""
        if rounds_done == 0:
            return None
        last = self.store.rounds(self.job_id)[-1]
        sha = last["summary"].get("checkpoint_sha256")
        if sha is None:
            return None  # a round recorded before checkpoints held state
        return checkpoint_from_bytes(self.blobs.path(sha).read_bytes(), expected_sha256=sha)

    def _protection(
        self, config: JobConfig, privacy: PrivacyConfig, num_sites: int
    ) -> tuple[ServerPrivacy | None, SecureAggregation | None]:
        """The coordinator's DP accountant and secure aggregation for this job.

        Sites are drawn as a fixed number per round: the accountant gets a sample rate of 1
        (no amplification by sampling claimed), as in a simulation. A sample-level job
        (DP-SGD) has no accountant here: each site accounts for itself. Every SecAgg message
        binds the job's id, and advertisements are checked with the sites' certificates.
        """
        from medfed.federation.identity.certificates import CertificateBook, identity_verifier
        from medfed.orchestration.secure_round import SecureAggregation
        from medfed.privacy.server import ServerPrivacy

        expected = float(
            expected_sites(num_sites, fraction=config.fraction, min_sites=config.min_sites)
        )
        server = None
        if privacy.dp == "client":
            server = ServerPrivacy(
                privacy,
                rounds=config.rounds,
                sample_rate=1.0,
                expected_sites=max(1.0, expected),
                min_sites=config.min_sites,
            )
        secure = None
        if privacy.secure_aggregation:
            secure = SecureAggregation(
                bound=privacy.secagg_bound,
                threshold=privacy.secagg_threshold,
                job=self.job_id,
                verify_identity=identity_verifier(CertificateBook(self.store.engine)),
            )
        return server, secure


def _summary(result: RoundResult) -> dict[str, Any]:
    evaluation = result.eval_summary
    return {
        "trained": list(result.trained),
        "failures": {s: str(f) for s, f in result.failures.items()},
        "train": result.train_summary.as_dict(),
        "evaluate": None if evaluation is None else evaluation.as_dict(),
        "evaluate_per_site": {s: m.as_dict() for s, m in result.eval_metrics.items()},
        "seconds": result.seconds,
        "privacy": dict(result.privacy),
        # what the coordinator bounded, and why (bounds.norm_factor, bounds.examples_factor)
        "bounded": dict(result.bounded),
        "update_norms": dict(result.update_norms),  # ε so far, δ, σ, clip (DP jobs); {} otherwise
        # sample-level DP: each site's ε so far, as its DP-SGD accountant reported it
        "epsilon_per_site": {
            s: r.epsilon for s, r in result.reports.items() if r.epsilon is not None
        },
        # what each site reported about its training (medfed.messages.SiteReport)
        "reports": {s: report_to_json(r) for s, r in result.reports.items()},
    }
