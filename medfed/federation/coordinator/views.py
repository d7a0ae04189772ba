"""The JSON views of jobs that the API returns (to researchers, admins and sites)."""

from __future__ import annotations

from typing import Any

from medfed.federation.coordinator.stats_job import stats_announcement
from medfed.federation.coordinator.store import Store

__all__ = ["job_brief", "job_view", "jobs_for_site"]


def jobs_for_site(store: Store, site: str) -> list[dict[str, Any]]:
    """Running jobs, with this site's approval state, so its steward can decide."""
    out = []
    for job in store.jobs(status="running"):
        out.append(
            {
                "id": job.id,
                "name": job.name,
                "researcher": job.researcher,
                "task_name": job.task_name,
                "task_sha256": job.task_sha256,
                "approval": store.approvals(job.id).get(site, "unknown"),
                "train": job.config.get("train", {}),
                "data_spec": job.config.get("data_spec", {}),
                # what a node needs to protect its updates and to reserve its privacy budget
                "privacy": job.config.get("privacy", {}),
                "rounds": job.config.get("rounds"),
                "min_sites": _min_sites(job.config),
                # [data] harmonise: the job asks the site's feature moments before training
                "harmonise": (job.config.get("data") or {}).get("harmonise", "none"),
                **stats_announcement(job.config),  # a statistics job: its query
            }
        )
    return out


def _min_sites(config: dict[str, Any]) -> Any:
    """A stored job's min_sites (in the run's [strategy] table; flat in jobs of old)."""
    strategy = config.get("strategy")
    return strategy.get("min_sites") if isinstance(strategy, dict) else config.get("min_sites")


def job_brief(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "researcher": job.researcher,
        "status": job.status,
        "rounds_done": job.rounds_done,
        "rounds": job.config.get("rounds"),
        "created_at": job.created_at,
        "error": job.error,
    }


def job_view(store: Store, job_id: str) -> dict[str, Any]:
    job = store.job(job_id)
    assert job is not None
    approvals = store.approvals(job_id)
    # every site the federation knows (has seen) and has not revoked, that has not approved
    known = {p["name"] for p in store.participants() if p["role"] == "site" and not p["revoked"]}
    pending = sorted(
        (known | set(approvals)) - {s for s, a in approvals.items() if a == "approved"}
    )
    return {
        **job_brief(job),
        "task_name": job.task_name,
        "task_sha256": job.task_sha256,
        "params_sha256": job.params_sha256,
        "config": job.config,
        "sites": approvals,
        "declined": store.decline_reasons(job_id),  # each declining site's own reason
        "pending_sites": pending,
        "rounds_detail": [
            {"round": r["round"], "params_sha256": r["params_sha256"], **r["summary"]}
            for r in store.rounds(job_id)
        ],
    }
