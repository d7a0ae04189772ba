"""The coordinator's HTTP API (FastAPI). Every route but ``/v1/health`` needs a signed request.

Roles: ``site`` (a hospital's node), ``researcher`` (submits and follows jobs), ``admin``
(revocation, audit). Every refusal is a 4xx with one sentence, written to the audit log, and
leaves the job's state untouched.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from medfed.errors import MedfedError, SerializationError
from medfed.federation.blobs import BlobStore, valid_sha256
from medfed.federation.signing import AuthError, Principal, verify_request
from medfed.federation.store import Store
from medfed.orchestration.validate import check_update
from medfed.records import Operation
from medfed.serde import params_from_bytes, reply_from_wire

__all__ = ["ApiSettings", "create_app"]

CHUNK_SIZE = 8 << 20
MAX_BODY = CHUNK_SIZE + (1 << 16)
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class ApiSettings(BaseModel):
    consortium: str
    max_upload_bytes: int = 4 << 30
    long_poll_seconds: float = 25.0


class UploadStart(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class ApprovalBody(BaseModel):
    status: str = Field(pattern=r"^(pending|approved|rejected)$")


class ReplyBody(BaseModel):
    header: dict[str, Any]
    blob_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class JobSubmit(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    task_name: str = Field(min_length=1, max_length=200)
    bundle_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    initial_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    config: dict[str, Any]


class RevokeBody(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


def create_app(
    *,
    store: Store,
    blobs: BlobStore,
    ca_cert_pem: bytes,
    settings: ApiSettings,
    start_job: Callable[[str], None],
    notify: Callable[[], None] = lambda: None,
) -> FastAPI:
    """Build the API. ``start_job`` launches a job's runner; ``notify`` wakes waiting rounds."""
    from cryptography import x509

    app = FastAPI(title="medfed coordinator", version="1", docs_url=None, redoc_url=None)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)

    def refuse(
        p: Principal | None, status: int, action: str, target: str, reason: str
    ) -> HTTPException:
        store.audit(
            principal=p.name if p else "anonymous",
            role=p.role if p else "-",
            action=action,
            target=target,
            outcome="refused",
            detail=reason,
        )
        return HTTPException(status_code=status, detail=reason)

    async def authenticated(request: Request) -> Principal:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise HTTPException(413, "request body too large; send tensors in chunks")
        body = await request.body()
        if len(body) > MAX_BODY:
            raise HTTPException(413, "request body too large; send tensors in chunks")
        path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        if request.scope.get("query_string"):
            path += "?" + request.scope["query_string"].decode("latin-1")

        def check() -> Principal:
            try:
                p = verify_request(
                    request.headers,
                    method=request.method,
                    path=path,
                    body_sha256=hashlib.sha256(body).hexdigest(),
                    ca_cert=ca_cert,
                    consortium=settings.consortium,
                    now=time.time(),
                    remember_nonce=store.remember_nonce,
                )
            except AuthError as exc:
                raise refuse(
                    None, 401, f"{request.method} {request.url.path}", "", str(exc)
                ) from None
            if store.is_revoked(p.name):
                raise refuse(
                    p,
                    403,
                    f"{request.method} {request.url.path}",
                    p.name,
                    "this identity has been revoked by the federation's admin",
                )
            store.touch_participant(p.name, p.role, p.fingerprint)
            return p

        return await run_in_threadpool(check)

    def need(role: str, *roles: str) -> Callable[..., Any]:
        allowed = {role, *roles}

        async def dep(p: Principal = Depends(authenticated)) -> Principal:
            if p.role not in allowed:
                await run_in_threadpool(
                    refuse,
                    p,
                    403,
                    "role",
                    "",
                    f"this needs a {' or '.join(sorted(allowed))} identity",
                )
                raise HTTPException(403, f"this needs a {' or '.join(sorted(allowed))} identity")
            return p

        return dep

    @app.exception_handler(MedfedError)
    async def _medfed_error(_: Request, exc: MedfedError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "consortium": settings.consortium, "time": time.time(), "api": 1}

    # -- nodes --------------------------------------------------------------------------

    @app.get("/v1/work")
    async def work(wait: float = 0.0, p: Principal = Depends(need("site"))) -> dict[str, Any]:
        """The next task for this site (long-poll up to ``wait`` s), and jobs awaiting approval."""
        deadline = time.monotonic() + max(0.0, min(wait, settings.long_poll_seconds))
        while True:
            task = await run_in_threadpool(store.next_task, p.name)
            if task is not None or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        jobs = await run_in_threadpool(_jobs_for_site, store, p.name)
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
        return Response(blobs.read(job.task_sha256), media_type="text/x-python")

    @app.get("/v1/blobs/{sha256}")
    def blob(sha256: str, request: Request, p: Principal = Depends(authenticated)) -> Response:
        if not valid_sha256(sha256) or not blobs.exists(sha256):
            raise refuse(p, 404, "blob.read", sha256, "no such blob")
        if not _may_read(store, p, sha256):
            raise refuse(p, 404, "blob.read", sha256, "no such blob")
        size = blobs.size(sha256)
        start, stop = _range(request.headers.get("range"), size)
        data = blobs.read_range(sha256, start, stop)
        headers = {"Accept-Ranges": "bytes", "X-Blob-Size": str(size)}
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
        if blobs.exists(body.sha256):
            return {"id": None, "chunk_size": CHUNK_SIZE, "received": [], "complete": True}
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
        await run_in_threadpool(blobs.write_chunk, upload_id, index * up["chunk_size"], body)
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
        n_chunks = max(1, math.ceil(up["size"] / up["chunk_size"])) if up["size"] else 0
        if len(json.loads(up["received"])) < n_chunks:
            raise refuse(p, 409, "upload.complete", upload_id, "some chunks are still missing")
        try:
            blobs.finish_upload(upload_id, up["sha256"])
        except MedfedError as exc:
            blobs.discard_upload(upload_id)
            store.finish_upload(upload_id)
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
        task = store.task(task_id)
        if task is None or task.site != p.name:
            raise refuse(p, 404, "task.reply", f"task/{task_id}", "no such task")
        target = f"{task.job_id}/r{task.round}/{task.operation}"
        header = dict(body.header)
        if (
            header.get("site") != p.name
            or header.get("round") != task.round
            or header.get("operation") != task.operation
        ):
            raise refuse(p, 400, "task.reply", target, "the reply does not match its task")
        if body.blob_sha256 is not None and not blobs.exists(body.blob_sha256):
            raise refuse(p, 400, "task.reply", target, "upload the update before replying")
        try:
            blob = blobs.read(body.blob_sha256) if body.blob_sha256 else None
            parsed = reply_from_wire(header, blob)
        except (SerializationError, ValueError) as exc:
            raise refuse(p, 400, "task.reply", target, f"malformed reply: {exc}") from None
        if parsed.ok and task.operation == Operation.TRAIN.value:
            params, _ = params_from_bytes(blobs.read(task.params_sha256))
            problem = check_update(parsed, params)
            if problem is not None:
                raise refuse(p, 422, "task.reply", target, f"update refused: {problem}")
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

    # -- researchers -----------------------------------------------------------------------

    @app.post("/v1/jobs")
    def submit(body: JobSubmit, p: Principal = Depends(need("researcher"))) -> dict[str, Any]:
        from medfed.federation.jobs import JobConfig

        for sha, what in (
            (body.bundle_sha256, "task bundle"),
            (body.initial_sha256, "initial model"),
        ):
            if not blobs.exists(sha):
                raise refuse(p, 400, "job.submit", body.name, f"upload the {what} first")
        try:
            config = JobConfig.from_json(body.config)
            params_from_bytes(blobs.read(body.initial_sha256))
        except MedfedError as exc:
            raise refuse(p, 400, "job.submit", body.name, str(exc)) from None
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
        return _job_view(store, job.id)

    @app.get("/v1/jobs")
    def list_jobs(p: Principal = Depends(need("researcher", "admin"))) -> list[dict[str, Any]]:
        rows = store.jobs()
        return [_job_brief(j) for j in rows if p.role == "admin" or j.researcher == p.name]

    @app.get("/v1/jobs/{job_id}")
    def job_status(
        job_id: str, p: Principal = Depends(need("researcher", "admin"))
    ) -> dict[str, Any]:
        job = store.job(job_id)
        if job is None or (p.role == "researcher" and job.researcher != p.name):
            raise refuse(p, 404, "job.status", job_id, "no such job")
        return _job_view(store, job_id)

    @app.get("/v1/jobs/{job_id}/logs")
    def job_logs(
        job_id: str, p: Principal = Depends(need("researcher", "admin"))
    ) -> list[dict[str, Any]]:
        job = store.job(job_id)
        if job is None or (p.role == "researcher" and job.researcher != p.name):
            raise refuse(p, 404, "job.logs", job_id, "no such job")
        return store.audit_log(target_prefix=job_id, limit=1000)

    @app.post("/v1/jobs/{job_id}/cancel")
    def cancel(job_id: str, p: Principal = Depends(need("researcher", "admin"))) -> dict[str, Any]:
        job = store.job(job_id)
        if job is None or (p.role == "researcher" and job.researcher != p.name):
            raise refuse(p, 404, "job.cancel", job_id, "no such job")
        if job.status == "running":
            store.set_job_status(job_id, "cancelled", f"cancelled by {p.name}")
            notify()
        store.audit(principal=p.name, role=p.role, action="job.cancel", target=job_id)
        return _job_view(store, job_id)

    # -- admins ----------------------------------------------------------------------------

    @app.post("/v1/participants/{name}/revoke")
    def revoke(
        name: str, body: RevokeBody, p: Principal = Depends(need("admin"))
    ) -> dict[str, str]:
        if not _NAME.match(name):
            raise refuse(p, 400, "participant.revoke", name[:64], "not a participant name")
        store.revoke(name, body.reason)
        store.audit(
            principal=p.name,
            role=p.role,
            action="participant.revoke",
            target=name,
            detail=body.reason,
        )
        notify()
        return {"name": name, "status": "revoked"}

    @app.get("/v1/participants")
    def list_participants(p: Principal = Depends(need("admin"))) -> list[dict[str, Any]]:
        return store.participants()

    @app.get("/v1/audit")
    def audit_log(limit: int = 200, p: Principal = Depends(need("admin"))) -> list[dict[str, Any]]:
        return store.audit_log(limit=max(1, min(limit, 10_000)))

    return app


def _may_read(store: Store, p: Principal, sha256: str) -> bool:
    if p.role == "admin":
        return True
    if p.role == "site":
        return store.site_may_read(p.name, sha256)
    # a researcher reads the global models of their own jobs
    for job in store.jobs():
        if job.researcher != p.name:
            continue
        if sha256 in (job.params_sha256, job.initial_sha256, job.task_sha256):
            return True
        if any(r["params_sha256"] == sha256 for r in store.rounds(job.id)):
            return True
    return False


def _range(header: str | None, size: int) -> tuple[int, int]:
    if not header:
        return 0, size
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
    if not m:
        raise HTTPException(416, "only a single 'bytes=start-end' range is supported")
    start = int(m.group(1))
    stop = int(m.group(2)) + 1 if m.group(2) else size
    if start >= size > 0 or stop <= start:
        raise HTTPException(416, f"range outside the blob's {size} bytes")
    return start, min(stop, size)


def _jobs_for_site(store: Store, site: str) -> list[dict[str, Any]]:
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
            }
        )
    return out


def _job_brief(job: Any) -> dict[str, Any]:
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


def _job_view(store: Store, job_id: str) -> dict[str, Any]:
    job = store.job(job_id)
    assert job is not None
    approvals = store.approvals(job_id)
    return {
        **_job_brief(job),
        "task_name": job.task_name,
        "task_sha256": job.task_sha256,
        "params_sha256": job.params_sha256,
        "config": job.config,
        "sites": approvals,
        "pending_sites": sorted(s for s, a in approvals.items() if a != "approved"),
        "rounds_detail": [
            {"round": r["round"], "params_sha256": r["params_sha256"], **r["summary"]}
            for r in store.rounds(job_id)
        ],
    }
