"""The coordinator's HTTP API (FastAPI). Every route but ``/v1/health`` needs a signed request.

Roles: ``site`` (a hospital's node), ``researcher`` (submits and follows jobs), ``admin``
(revocation, audit). The signature is checked before FastAPI parses or validates anything, so an
unsigned request is a 401 whatever its body. Every refusal is a 4xx with one sentence, written to
the audit log with who asked, and leaves the job's state untouched.

Blobs are content-addressed but not a capability: naming a sha256 in a reply or a job, or
skipping an upload because the blob exists, needs the caller to have uploaded those bytes itself
or to be allowed to read them; knowing another site's hash is not enough.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from medfed.errors import MedfedError
from medfed.federation.coordinator.access import holds, may_read
from medfed.federation.coordinator.auth import CHUNK_SIZE, Gate
from medfed.federation.coordinator.blobs import BlobStore, valid_sha256
from medfed.federation.coordinator.checks import header_problem, parse_range
from medfed.federation.coordinator.models import (
    ApiSettings,
    ApprovalBody,
    JobSubmit,
    ReplyBody,
    RevokeBody,
    UploadStart,
)
from medfed.federation.coordinator.secagg_routes import (
    base_operation,
    install_secagg_routes,
    update_problem,
)
from medfed.federation.coordinator.store import Store
from medfed.federation.coordinator.views import job_brief, job_view, jobs_for_site
from medfed.federation.identity.signing import Principal
from medfed.federation.transfer.chunks import CHUNK_HEADER
from medfed.math.aggregate import is_finite
from medfed.serde import reply_from_header, sha256_hex
from medfed.tensor_file import open_params

__all__ = ["ApiSettings", "create_app"]

MAX_BUNDLE = 16 << 20  # bytes of a job's task file
MAX_ID = 2**31 - 1  # the largest row id every SQL database stores (PostgreSQL's integer)
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

# what parsing untrusted bytes or JSON may raise: each is the sender's fault, a 400, never a 500
# what a parser may raise on hostile input: 10**400 as a float, JSON nested 200k deep
_MALFORMED = (
    MedfedError,
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
    OverflowError,
    RecursionError,
)


def create_app(
    *,
    store: Store,
    blobs: BlobStore,
    ca_cert_pem: bytes,
    settings: ApiSettings,
    start_job: Callable[[str], None],
    notify: Callable[[], None] = lambda: None,
    changes: Callable[[], tuple[int, int]] = lambda: (0, 0),
    announce_job: Callable[[], None] = lambda: None,
) -> FastAPI:
    """Build the API. ``start_job`` launches a job's runner; ``notify`` wakes waiting rounds."""
    app = FastAPI(title="medfed coordinator", version="1", docs_url=None, redoc_url=None)
    gate = Gate(
        store=store,
        ca_cert_pem=ca_cert_pem,
        consortium=settings.consortium,
        body_stall_seconds=settings.body_stall_seconds,
    )
    gate.install(app)
    refuse, need, authenticated = gate.refuse, gate.need, gate.authenticated

    def read(p: Principal, action: str, target: str) -> None:
        """Plain reads of job state and of the participants are audited too."""
        store.audit(principal=p.name, role=p.role, action=action, target=target)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "consortium": settings.consortium, "time": time.time(), "api": 1}

    # -- nodes --------------------------------------------------------------------------

    @app.get("/v1/work")
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

    @app.post("/v1/jobs/{job_id}/approval")
    def approval(
        job_id: str, body: ApprovalBody, p: Principal = Depends(need("site"))
    ) -> dict[str, str]:
        job = store.job(job_id)
        if job is None:
            raise refuse(p, 404, "job.approval", job_id, "no such job")
        store.set_approval(job_id, p.name, body.status)
        store.audit(
            principal=p.name, role=p.role, action="job.approval", target=job_id, detail=body.status
        )
        notify()
        return {"job_id": job_id, "site": p.name, "status": body.status}

    @app.get("/v1/jobs/{job_id}/bundle")
    def bundle(job_id: str, p: Principal = Depends(authenticated)) -> Response:
        job = store.job(job_id)
        if job is None or (p.role == "researcher" and job.researcher != p.name):
            raise refuse(p, 404, "job.bundle", job_id, "no such job")
        read(p, "job.bundle", job_id)
        return Response(blobs.read(job.task_sha256), media_type="text/x-python")

    @app.get("/v1/blobs/{sha256}")
    def blob(sha256: str, request: Request, p: Principal = Depends(authenticated)) -> Response:
        if not valid_sha256(sha256) or not blobs.exists(sha256):
            raise refuse(p, 404, "blob.read", sha256, "no such blob")
        if not may_read(store, p, sha256):
            raise refuse(p, 404, "blob.read", sha256, "no such blob")
        size = blobs.size(sha256)
        wanted = request.headers.get("range")
        start, stop = parse_range(wanted, size)
        if start == 0:  # once per download, not once per chunk
            read(p, "blob.read", sha256)
        headers = {"Accept-Ranges": "bytes", "X-Blob-Size": str(size)}
        if wanted is None and size > CHUNK_SIZE:  # the whole blob, streamed from disk
            headers.update({CHUNK_HEADER: sha256, "Content-Length": str(size)})
            return StreamingResponse(
                blobs.iter_file(sha256), headers=headers, media_type="application/octet-stream"
            )
        # a range is served up to one chunk (memory stays bounded; Content-Range says what
        # came), with the sha256 of its bytes so that the client checks each chunk
        stop = min(stop, start + CHUNK_SIZE)
        data = blobs.read_range(sha256, start, stop)
        headers[CHUNK_HEADER] = sha256_hex(data)
        if (start, stop) != (0, size):
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
            return Response(
                data, status_code=206, headers=headers, media_type="application/octet-stream"
            )
        return Response(data, headers=headers, media_type="application/octet-stream")

    @app.post("/v1/uploads")
    def upload_start(
        body: UploadStart, p: Principal = Depends(need("site", "researcher"))
    ) -> dict[str, Any]:
        if body.size > settings.max_upload_bytes:
            raise refuse(
                p,
                413,
                "upload.start",
                body.sha256,
                f"uploads are limited to {settings.max_upload_bytes} bytes",
            )
        if blobs.exists(body.sha256) and holds(store, p, body.sha256):
            # nothing to send again; anyone else proves they hold the bytes by sending them
            return {"id": None, "chunk_size": CHUNK_SIZE, "received": [], "complete": True}
        up = store.create_upload(
            owner=p.name, sha256=body.sha256, size=body.size, chunk_size=CHUNK_SIZE
        )
        if blobs.start_upload(up["id"], body.size) and json.loads(up["received"]):
            # its file is gone (a crash while completing it): the chunks recorded are lost,
            # so that upload ends and a fresh one starts
            store.finish_upload(up["id"])
            up = store.create_upload(
                owner=p.name, sha256=body.sha256, size=body.size, chunk_size=CHUNK_SIZE
            )
            blobs.start_upload(up["id"], body.size)
        return {
            "id": up["id"],
            "chunk_size": up["chunk_size"],
            "received": json.loads(up["received"]),
            "complete": False,
        }

    @app.put("/v1/uploads/{upload_id}/chunks/{index}")
    async def upload_chunk(
        upload_id: str,
        index: int,
        request: Request,
        chunk_sha256: str | None = Header(None, alias=CHUNK_HEADER, pattern=r"^[0-9a-f]{64}$"),
        p: Principal = Depends(need("site", "researcher")),
    ) -> dict[str, Any]:
        body = await request.body()
        up = await run_in_threadpool(store.upload, upload_id)
        if up is None or up["owner"] != p.name or up["done"]:
            raise await run_in_threadpool(
                refuse, p, 404, "upload.chunk", upload_id, "no such upload"
            )
        n_chunks = max(1, math.ceil(up["size"] / up["chunk_size"]))
        expected = min(up["chunk_size"], up["size"] - index * up["chunk_size"])
        if not 0 <= index < n_chunks or len(body) != max(0, expected):
            raise await run_in_threadpool(
                refuse,
                p,
                400,
                "upload.chunk",
                upload_id,
                f"chunk {index} must hold {max(0, expected)} bytes",
            )
        digest = getattr(request.state, "body_sha256", None) or sha256_hex(body)
        if digest != chunk_sha256:  # damaged on the way: not written, not recorded
            reason = (
                f"chunk {index} needs an {CHUNK_HEADER} header (the sha256 of its bytes)"
                if chunk_sha256 is None
                else f"chunk {index} does not match its {CHUNK_HEADER} header; send it again"
            )
            raise await run_in_threadpool(refuse, p, 400, "upload.chunk", upload_id, reason)
        try:
            await run_in_threadpool(blobs.write_chunk, upload_id, index * up["chunk_size"], body)
        except FileNotFoundError:  # completed or refused meanwhile
            raise await run_in_threadpool(
                refuse, p, 404, "upload.chunk", upload_id, "no such upload"
            ) from None
        await run_in_threadpool(store.mark_chunk, upload_id, index)
        return {"index": index}

    @app.get("/v1/uploads/{upload_id}")
    def upload_status(
        upload_id: str, p: Principal = Depends(need("site", "researcher"))
    ) -> dict[str, Any]:
        up = store.upload(upload_id)
        if up is None or up["owner"] != p.name:
            raise refuse(p, 404, "upload.status", upload_id, "no such upload")
        return {"id": upload_id, "received": json.loads(up["received"]), "done": up["done"]}

    @app.post("/v1/uploads/{upload_id}/complete")
    def upload_complete(
        upload_id: str, p: Principal = Depends(need("site", "researcher"))
    ) -> dict[str, str]:
        up = store.upload(upload_id)
        if up is None or up["owner"] != p.name:
            raise refuse(p, 404, "upload.complete", upload_id, "no such upload")
        if up["done"]:  # completing again is idempotent, and says no more than the first time
            if store.uploaded_by(p.name, up["sha256"]):
                return {"sha256": up["sha256"]}
            raise refuse(
                p, 409, "upload.complete", upload_id, "this upload was refused; start a new one"
            )
        n_chunks = max(1, math.ceil(up["size"] / up["chunk_size"])) if up["size"] else 0
        if len(json.loads(up["received"])) < n_chunks:
            raise refuse(p, 409, "upload.complete", upload_id, "some chunks are still missing")
        try:
            blobs.finish_upload(upload_id, up["sha256"])
        except FileNotFoundError:
            # a concurrent call completed or refused it, or a crash came between moving the
            # bytes into place and recording it. Never inferred to be a success (that would
            # hand out ownership of bytes nobody checked here): this id ends, a new one works.
            store.finish_upload(upload_id)
            raise refuse(
                p, 409, "upload.complete", upload_id, "this upload was interrupted; start it again"
            ) from None
        except MedfedError as exc:
            store.finish_upload(upload_id)  # first, so a concurrent call sees the refusal
            blobs.discard_upload(upload_id)
            raise refuse(p, 400, "upload.complete", upload_id, str(exc)) from None
        store.finish_upload(upload_id)
        store.audit(
            principal=p.name,
            role=p.role,
            action="upload",
            target=up["sha256"],
            detail=f"{up['size']} bytes",
        )
        return {"sha256": up["sha256"]}

    @app.post("/v1/tasks/{task_id}/reply")
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
        except _MALFORMED as exc:
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

    install_secagg_routes(app, store=store, gate=gate, read=read)

    # -- researchers -----------------------------------------------------------------------

    @app.post("/v1/jobs")
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
            config = JobConfig.from_json(body.config)
        except _MALFORMED as exc:
            reason = str(exc) if isinstance(exc, MedfedError) else f"bad job configuration ({exc})"
            raise refuse(p, 400, "job.submit", body.name, reason) from None
        try:
            # memory-mapped, its header checked before anything is mapped; the finiteness scan
            # below releases the pages behind it, so a model of several GB needs no memory
            initial, _ = open_params(blobs.path(body.initial_sha256))
        except _MALFORMED as exc:
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
            config=config.to_json(),
            initial_sha256=body.initial_sha256,
        )
        store.audit(
            principal=p.name, role=p.role, action="job.submit", target=job.id, detail=body.name
        )
        start_job(job.id)
        announce_job()  # long-polling nodes learn of the new job at once
        return job_view(store, job.id)

    @app.get("/v1/jobs")
    def list_jobs(p: Principal = Depends(need("researcher", "admin"))) -> list[dict[str, Any]]:
        rows = store.jobs()
        read(p, "job.list", "")
        return [job_brief(j) for j in rows if p.role == "admin" or j.researcher == p.name]

    @app.get("/v1/jobs/{job_id}")
    def job_status(
        job_id: str, p: Principal = Depends(need("researcher", "admin"))
    ) -> dict[str, Any]:
        job = store.job(job_id)
        if job is None or (p.role == "researcher" and job.researcher != p.name):
            raise refuse(p, 404, "job.status", job_id, "no such job")
        read(p, "job.status", job_id)
        return job_view(store, job_id)

    @app.get("/v1/jobs/{job_id}/logs")
    def job_logs(
        job_id: str, p: Principal = Depends(need("researcher", "admin"))
    ) -> list[dict[str, Any]]:
        job = store.job(job_id)
        if job is None or (p.role == "researcher" and job.researcher != p.name):
            raise refuse(p, 404, "job.logs", job_id, "no such job")
        read(p, "job.logs", job_id)
        return store.audit_log(target_prefix=job_id, limit=1000)

    @app.post("/v1/jobs/{job_id}/cancel")
    def cancel(job_id: str, p: Principal = Depends(need("researcher", "admin"))) -> dict[str, Any]:
        job = store.job(job_id)
        if job is None or (p.role == "researcher" and job.researcher != p.name):
            raise refuse(p, 404, "job.cancel", job_id, "no such job")
        if store.set_job_status(job_id, "cancelled", f"cancelled by {p.name}", if_status="running"):
            notify()
            announce_job()
        store.audit(principal=p.name, role=p.role, action="job.cancel", target=job_id)
        return job_view(store, job_id)

    # -- admins ----------------------------------------------------------------------------

    @app.post("/v1/participants/{name}/revoke")
    def revoke(
        name: str, body: RevokeBody, p: Principal = Depends(need("admin"))
    ) -> dict[str, Any]:
        if not _NAME.fullmatch(name):
            raise refuse(p, 400, "participant.revoke", name[:64], "not a participant name")
        known = store.revoke(name, body.reason)
        ahead = "" if known else " (revoked ahead of its first contact: never seen here)"
        store.audit(
            principal=p.name,
            role=p.role,
            action="participant.revoke",
            target=name,
            detail=body.reason + ahead,
        )
        notify()
        # known = False: no request signed by this name ever reached this coordinator (a
        # mistyped name, or a participant not yet connected); the CLI says which
        return {"name": name, "status": "revoked", "known": known}

    @app.get("/v1/participants")
    def list_participants(p: Principal = Depends(need("admin"))) -> list[dict[str, Any]]:
        read(p, "participant.list", "")
        return store.participants()

    @app.get("/v1/audit")
    def audit_log(limit: int = 200, p: Principal = Depends(need("admin"))) -> list[dict[str, Any]]:
        read(p, "audit.read", "")
        return store.audit_log(limit=max(1, min(limit, 10_000)))

    return app
