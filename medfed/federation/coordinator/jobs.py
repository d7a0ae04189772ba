"""Job configuration, and the runner that drives a job's rounds inside the coordinator.

A job runs the same :class:`~medfed.orchestration.driver.RoundDriver` and strategies as a
simulation, with :class:`~.remote_backend.RemoteBackend` as its backend.
After each round the new global model is streamed into the blob store and the round is
checkpointed in the store, so a restarted coordinator resumes at the next round.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from medfed.errors import MedfedError
from medfed.federation.coordinator.blobs import BlobStore
from medfed.federation.coordinator.job_config import JobConfig
from medfed.federation.coordinator.remote_backend import JobCancelled, RemoteBackend
from medfed.federation.coordinator.stats_job import is_stats_job, run_stats_job
from medfed.federation.coordinator.store import Store
from medfed.federation.identity.certificates import CertificateBook, identity_verifier
from medfed.messages import HarmoniseSettings, report_to_json
from medfed.orchestration.assembly import assemble_driver
from medfed.orchestration.checkpoint import (
    RoundCheckpoint,
    checkpoint_from_bytes,
    checkpoint_to_bytes,
)
from medfed.orchestration.driver import RoundResult
from medfed.orchestration.protection import coordinator_protection
from medfed.tensor_file import open_params

__all__ = ["JobConfig", "JobRounds", "JobRunner"]

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
        if is_stats_job(job.config):  # a statistics job: its query, nothing trained
            backend = RemoteBackend(self.store, self.blobs, self.job_id, wakeup=self.wakeup)
            run_stats_job(self.store, self.blobs, self.job_id, backend, job.config)
            self._complete()
            return
        run = JobConfig.from_json(job.config).run
        # memory-mapped (read-only): the model is not read until a round needs it
        params, _ = open_params(self.blobs.path(job.params_sha256))
        backend = RemoteBackend(self.store, self.blobs, self.job_id, wakeup=self.wakeup)
        # the first round starts once enough data stewards have approved the job's code; the
        # protection is sized for the sites that have
        sites = backend.wait_for_sites(run.strategy.min_sites)
        privacy, secure = coordinator_protection(
            run,
            num_sites=len(sites),
            verify_identity=identity_verifier(CertificateBook(self.store.engine)),
            job=self.job_id,
        )
        driver = assemble_driver(
            run,
            backend,
            privacy=privacy,
            secure=secure,
            observers=[JobRounds(self.store, self.blobs, self.job_id)],
            run_name=self.job_id,
        )
        # a resumed job: the strategy's and the accountant's state as they were
        checkpoint = self._checkpoint(job.rounds_done)
        driver.restore(checkpoint, rounds_done=job.rounds_done)
        if run.data.harmonise != "none" and driver.harmonise is None:
            # before round 1 (or resumed before its checkpoint held one): learnt now, then
            # kept with every round's checkpoint, so a restart trains with the same figures
            driver.harmonise = learn_job_harmonisation(
                run, JobConfig.from_json(job.config).data_spec, backend, secure
            )
        for r in range(job.rounds_done + 1, run.rounds + 1):
            if r > job.rounds_done + 1:
                backend.wait_for_sites(run.strategy.min_sites)
            params = driver.run_round(r, params, last=r == run.rounds).params
        self._complete()

    def _complete(self) -> None:
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


def learn_job_harmonisation(
    run: Any, data_spec: dict[str, Any], backend: RemoteBackend, secure: Any
) -> HarmoniseSettings:
    """One statistics exchange over the approved sites' training records (under secure
    aggregation when the job has it): the federation's figures every site is sent."""
    from medfed.orchestration.harmonise import learn_harmonisation

    names = data_spec.get("feature_names")
    if not names:
        size = 1
        for n in data_spec.get("input_shape", [1]):
            size *= int(n)
        names = [f"x{i}" for i in range(size)]
    learnt = learn_harmonisation(
        backend,
        run.data.harmonise,
        features=tuple(str(n) for n in names),
        secure=secure,
        timeout=run.round_timeout,
    )
    log.info("harmonisation learnt over %d features", len(learnt.mean))
    return learnt.settings()


class JobRounds:
    """Stores each finished round of a job (the federation's side of a run folder): the new
    global model and the round's checkpoint as blobs, and the round's record naming them."""

    def __init__(self, store: Store, blobs: BlobStore, job_id: str) -> None:
        self.store, self.blobs, self.job_id = store, blobs, job_id

    def on_round_end(self, result: RoundResult) -> None:
        sha = self.blobs.put_params(result.params, {"round": str(result.round)})
        state = self.blobs.put(checkpoint_to_bytes(result.checkpoint))
        summary = {**_summary(result), "checkpoint_sha256": state}
        self.store.record_round(self.job_id, result.round, sha, summary)


def _summary(result: RoundResult) -> dict[str, Any]:
    evaluation = result.eval_summary
    return {
        "trained": list(result.trained),
        "failures": {s: str(f) for s, f in result.failures.items()},
        "train": result.train_summary.as_dict(),
        "evaluate": None if evaluation is None else evaluation.as_dict(),
        "evaluate_per_site": {s: m.as_dict() for s, m in result.eval_metrics.items()},
        **(  # the last round of a personalising job: each site with its own model
            {"personalised_per_site": {s: m.as_dict() for s, m in result.personal_metrics.items()}}
            if result.personal_metrics
            else {}
        ),
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
