"""Blobs: a job's task file, downloads (whole, or one chunk of a range), and chunked, resumable,
hash-checked uploads. Blobs are content-addressed but not a capability: see
:func:`~medfed.federation.coordinator.access.may_read` and
:func:`~medfed.federation.coordinator.access.holds`."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from medfed.errors import MedfedError
from medfed.federation.coordinator.access import holds, may_read
from medfed.federation.coordinator.auth import CHUNK_SIZE
from medfed.federation.coordinator.blobs import valid_sha256
from medfed.federation.coordinator.checks import parse_range
from medfed.federation.coordinator.models import UploadStart
from medfed.federation.coordinator.routes.context import ApiContext
from medfed.federation.identity.signing import Principal
from medfed.federation.transfer.chunks import CHUNK_HEADER
from medfed.serde import sha256_hex

__all__ = ["router"]


def router(ctx: ApiContext) -> APIRouter:
    r = ctx.router()
    store, blobs, settings, read = ctx.store, ctx.blobs, ctx.settings, ctx.read
    refuse, need, authenticated = ctx.gate.refuse, ctx.gate.need, ctx.gate.authenticated

    @r.get("/v1/jobs/{job_id}/bundle")
    def bundle(job_id: str, p: Principal = Depends(authenticated)) -> Response:
        job = store.job(job_id)
        if job is None or (p.role == "researcher" and job.researcher != p.name):
            raise refuse(p, 404, "job.bundle", job_id, "no such job")
        read(p, "job.bundle", job_id)
        return Response(blobs.read(job.task_sha256), media_type="text/x-python")

    @r.get("/v1/blobs/{sha256}")
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

    @r.post("/v1/uploads")
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

    @r.put("/v1/uploads/{upload_id}/chunks/{index}")
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

    @r.get("/v1/uploads/{upload_id}")
    def upload_status(
        upload_id: str, p: Principal = Depends(need("site", "researcher"))
    ) -> dict[str, Any]:
        up = store.upload(upload_id)
        if up is None or up["owner"] != p.name:
            raise refuse(p, 404, "upload.status", upload_id, "no such upload")
        return {"id": upload_id, "received": json.loads(up["received"]), "done": up["done"]}

    @r.post("/v1/uploads/{upload_id}/complete")
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

    return r
