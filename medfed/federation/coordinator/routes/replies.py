"""A node's reply to its task: matched to the task, its numbers and its update checked (see
:func:`~medfed.federation.coordinator.routes.secagg.update_problem`) before anything is
stored."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from medfed.federation.coordinator.access import holds
from medfed.federation.coordinator.checks import MALFORMED, header_problem
from medfed.federation.coordinator.models import ReplyBody
from medfed.federation.coordinator.routes.context import ApiContext
from medfed.federation.coordinator.routes.secagg import base_operation, update_problem
from medfed.federation.identity.signing import Principal
from medfed.serde import reply_from_header
from medfed.tensor_file import open_params

__all__ = ["MAX_ID", "router"]

MAX_ID = 2**31 - 1  # the largest row id every SQL database stores (PostgreSQL's integer)


def router(ctx: ApiContext) -> APIRouter:
    r = ctx.router()
    store, blobs, notify = ctx.store, ctx.blobs, ctx.notify
    refuse, need = ctx.gate.refuse, ctx.gate.need

    @r.post("/v1/tasks/{task_id}/reply")
    def reply(
        task_id: int, body: ReplyBody, p: Principal = Depends(need("site"))
    ) -> dict[str, str]:
        task = store.task(task_id) if 0 < task_id <= MAX_ID else None
        if task is None or task.site != p.name:
            raise refuse(p, 404, "task.reply", f"task/{task_id}", "no such task")
        target = f"{task.job_id}/r{task.round}/{task.operation}"
        header = dict(body.header)
        if (
            header.get("site") != p.name
            or header.get("round") != task.round
            or header.get("operation") != base_operation(task.operation)
        ):
            raise refuse(p, 400, "task.reply", target, "the reply does not match its task")
        sha = body.blob_sha256
        if sha is not None and not (blobs.exists(sha) and holds(store, p, sha)):
            raise refuse(p, 400, "task.reply", target, "upload the update before replying")
        try:
            # memory-mapped: checking an update of several GB needs no copy of it
            delta = open_params(blobs.path(sha))[0] if sha else None
            parsed = reply_from_header(header, delta)
        except MALFORMED as exc:
            raise refuse(p, 400, "task.reply", target, f"malformed reply: {exc}") from None
        problem = header_problem(parsed)
        if problem is not None:
            raise refuse(p, 422, "task.reply", target, f"reply refused: {problem}")
        refused = update_problem(store, blobs, task, parsed, delta)
        if refused is not None:  # only what was checked may be stored
            raise refuse(p, refused[0], "task.reply", target, refused[1])
        outcome = store.complete_task(task_id, reply=header, reply_sha256=body.blob_sha256)
        if outcome == "closed":
            raise refuse(
                p,
                409,
                "task.reply",
                target,
                "this round is closed for your site (late, cancelled or already answered)",
            )
        store.audit(
            principal=p.name, role=p.role, action="task.reply", target=target, detail=outcome
        )
        notify()
        return {"status": outcome}

    return r
