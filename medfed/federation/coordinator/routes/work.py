"""A node's side: the long-poll for its next task (and the jobs awaiting its steward), and the
steward's approval of a job."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from medfed.federation.coordinator.models import ApprovalBody
from medfed.federation.coordinator.routes.context import ApiContext
from medfed.federation.coordinator.views import jobs_for_site
from medfed.federation.identity.signing import Principal

__all__ = ["router"]


def router(ctx: ApiContext) -> APIRouter:
    r = ctx.router()
    store, settings, changes, notify = ctx.store, ctx.settings, ctx.changes, ctx.notify
    refuse, need = ctx.gate.refuse, ctx.gate.need

    @r.get("/v1/work")
    async def work(wait: float = 0.0, p: Principal = Depends(need("site"))) -> dict[str, Any]:
        """The next task for this site (long-poll up to ``wait`` s), and jobs awaiting approval."""
        deadline = time.monotonic() + max(0.0, min(wait, settings.long_poll_seconds))
        seen = changes()
        jobs = await run_in_threadpool(jobs_for_site, store, p.name)
        while True:
            task = await run_in_threadpool(store.next_task, p.name)
            news = any(j["approval"] == "unknown" for j in jobs)  # a job this steward must see
            if task is not None or news or time.monotonic() >= deadline:
                break
            # wait for new tasks or jobs instead of querying the store; it is read again when
            # one of them moved, or every 2 s as a safety net
            recheck = time.monotonic() + 2.0
            while time.monotonic() < min(deadline, recheck) and changes() == seen:
                await asyncio.sleep(0.05)
            if changes()[1] != seen[1]:
                jobs = await run_in_threadpool(jobs_for_site, store, p.name)
            seen = changes()
        if task is not None:
            store.audit(
                principal=p.name,
                role=p.role,
                action="task.fetch",
                target=f"{task.job_id}/r{task.round}/{task.operation}",
            )
        return {
            "task": None
            if task is None
            else {
                "id": task.id,
                "job_id": task.job_id,
                "round": task.round,
                "operation": task.operation,
                "instruction": task.instruction,
                "params_sha256": task.params_sha256,
            },
            "jobs": jobs,
        }

    @r.post("/v1/jobs/{job_id}/approval")
    def approval(
        job_id: str, body: ApprovalBody, p: Principal = Depends(need("site"))
    ) -> dict[str, str]:
        job = store.job(job_id)
        if job is None:
            raise refuse(p, 404, "job.approval", job_id, "no such job")
        store.set_approval(job_id, p.name, body.status, body.reason)
        detail = body.status if not body.reason else f"{body.status}: {body.reason}"
        store.audit(
            principal=p.name, role=p.role, action="job.approval", target=job_id, detail=detail
        )
        notify()
        return {"job_id": job_id, "site": p.name, "status": body.status}

    return r
