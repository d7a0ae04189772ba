"""A researcher's jobs: submit (every blob and the configuration checked first), list, status,
logs and cancel; admins may read and cancel every job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from medfed.errors import MedfedError
from medfed.federation.coordinator.access import holds
from medfed.federation.coordinator.checks import MALFORMED
from medfed.federation.coordinator.models import JobSubmit
from medfed.federation.coordinator.routes.context import ApiContext
from medfed.federation.coordinator.stats_job import is_stats_job, query_document, stats_job_config
from medfed.federation.coordinator.views import job_brief, job_view
from medfed.federation.identity.signing import Principal
from medfed.math.aggregate import is_finite
from medfed.tensor_file import open_params

__all__ = ["MAX_BUNDLE", "router"]

MAX_BUNDLE = 16 << 20  # bytes of a job's task file


def router(ctx: ApiContext) -> APIRouter:
    r = ctx.router()
    store, blobs, read, notify = ctx.store, ctx.blobs, ctx.read, ctx.notify
    start_job, announce_job = ctx.start_job, ctx.announce_job
    refuse, need = ctx.gate.refuse, ctx.gate.need

    @r.post("/v1/jobs")
    def submit(body: JobSubmit, p: Principal = Depends(need("researcher"))) -> dict[str, Any]:
        from medfed.federation.coordinator.jobs import JobConfig

        for sha, what in (
            (body.bundle_sha256, "task bundle"),
            (body.initial_sha256, "initial model"),
        ):
            if not (blobs.exists(sha) and holds(store, p, sha)):
                raise refuse(p, 400, "job.submit", body.name, f"upload the {what} first")
        if blobs.size(body.bundle_sha256) > MAX_BUNDLE:  # it is served whole, from memory
            reason = f"a task bundle is one Python file of at most {MAX_BUNDLE >> 20} MiB"
            raise refuse(p, 413, "job.submit", body.name, reason)
        try:
            if is_stats_job(body.config):  # a statistics job: its bundle is the query's text
                stored = stats_job_config(body.config)
                document = query_document(stored["query"], stored["features"])
                if blobs.path(body.bundle_sha256).read_bytes() != document:
                    reason = "a statistics job's bundle is its query's JSON text, exactly"
                    raise refuse(p, 400, "job.submit", body.name, reason)
            else:
                stored = JobConfig.from_json(body.config).to_json()
        except MALFORMED as exc:
            reason = str(exc) if isinstance(exc, MedfedError) else f"bad job configuration ({exc})"
            raise refuse(p, 400, "job.submit", body.name, reason) from None
        try:
            # memory-mapped, its header checked before anything is mapped; the finiteness scan
            # below releases the pages behind it, so a model of several GB needs no memory
            initial, _ = open_params(blobs.path(body.initial_sha256))
        except MALFORMED as exc:
            reason = (
                f"the initial model is not a valid model in medfed's safetensors format ({exc})"
            )
            raise refuse(p, 400, "job.submit", body.name, reason) from None
        if not is_finite(initial):
            raise refuse(
                p, 400, "job.submit", body.name, "the initial model contains NaN or infinite values"
            )
        job = store.create_job(
            name=body.name,
            researcher=p.name,
            task_sha256=body.bundle_sha256,
            task_name=body.task_name,
            config=stored,
            initial_sha256=body.initial_sha256,
        )
        store.audit(
            principal=p.name, role=p.role, action="job.submit", target=job.id, detail=body.name
        )
        start_job(job.id)
        announce_job()  # long-polling nodes learn of the new job at once
        return job_view(store, job.id)

    @r.get("/v1/jobs")
    def list_jobs(p: Principal = Depends(need("researcher", "admin"))) -> list[dict[str, Any]]:
        rows = store.jobs()
        read(p, "job.list", "")
        return [job_brief(j) for j in rows if p.role == "admin" or j.researcher == p.name]

    @r.get("/v1/jobs/{job_id}")
    def job_status(
        job_id: str, p: Principal = Depends(need("researcher", "admin"))
    ) -> dict[str, Any]:
        job = store.job(job_id)
        if job is None or (p.role == "researcher" and job.researcher != p.name):
            raise refuse(p, 404, "job.status", job_id, "no such job")
        read(p, "job.status", job_id)
        return job_view(store, job_id)

    @r.get("/v1/jobs/{job_id}/logs")
    def job_logs(
        job_id: str, p: Principal = Depends(need("researcher", "admin"))
    ) -> list[dict[str, Any]]:
        job = store.job(job_id)
        if job is None or (p.role == "researcher" and job.researcher != p.name):
            raise refuse(p, 404, "job.logs", job_id, "no such job")
        read(p, "job.logs", job_id)
        return store.audit_log(target_prefix=job_id, limit=1000)

    @r.post("/v1/jobs/{job_id}/cancel")
    def cancel(job_id: str, p: Principal = Depends(need("researcher", "admin"))) -> dict[str, Any]:
        job = store.job(job_id)
        if job is None or (p.role == "researcher" and job.researcher != p.name):
            raise refuse(p, 404, "job.cancel", job_id, "no such job")
        if store.set_job_status(job_id, "cancelled", f"cancelled by {p.name}", if_status="running"):
            notify()
            announce_job()
        store.audit(principal=p.name, role=p.role, action="job.cancel", target=job_id)
        return job_view(store, job_id)

    return r
