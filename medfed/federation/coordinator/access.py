"""Who may read, or name, a blob: the coordinator's rules for tensors and task files."""

from __future__ import annotations

from medfed.federation.coordinator.store import Store
from medfed.federation.identity.signing import Principal

__all__ = ["holds", "may_read"]


def may_read(store: Store, p: Principal, sha256: str) -> bool:
    """Admins read everything; a site reads the models sent to it and its own replies; a
    researcher reads the task files and global models of their own jobs."""
    if p.role == "admin":
        return True
    if p.role == "site":
        return store.site_may_read(p.name, sha256)
    for job in store.jobs():
        if job.researcher != p.name:
            continue
        if sha256 in (job.params_sha256, job.initial_sha256, job.task_sha256):
            return True
        if any(r["params_sha256"] == sha256 for r in store.rounds(job.id)):
            return True
    return False


def holds(store: Store, p: Principal, sha256: str) -> bool:
    """May ``p`` name this blob in a reply or a job? Only if it uploaded the bytes itself or may
    read them anyway: knowing a blob's sha256 is no proof of holding another site's update."""
    return store.uploaded_by(p.name, sha256) or may_read(store, p, sha256)
