"""The coordinator's HTTP API (FastAPI). Every route but ``/v1/health`` needs a signed request.

Roles: ``site`` (a hospital's node), ``researcher`` (submits and follows jobs), ``admin``
(revocation, audit). The signature is checked before FastAPI parses or validates anything, so an
unsigned request is a 401 whatever its body. Every refusal is a 4xx with one sentence, written to
the audit log with who asked, and leaves the job's state untouched.

Blobs are content-addressed but not a capability: naming a sha256 in a reply or a job, or
skipping an upload because the blob exists, needs the caller to have uploaded those bytes itself
or to be allowed to read them; knowing another site's hash is not enough.

The routes live in :mod:`medfed.federation.coordinator.routes`, one module per group; this
module builds their shared :class:`~medfed.federation.coordinator.routes.context.ApiContext`
and includes them.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, FastAPI

from medfed.federation.coordinator.auth import Gate
from medfed.federation.coordinator.blobs import BlobStore
from medfed.federation.coordinator.models import ApiSettings
from medfed.federation.coordinator.routes import (
    admin,
    blobs as blob_routes,
    health,
    jobs,
    replies,
    secagg,
    work,
)
from medfed.federation.coordinator.routes.context import ApiContext
from medfed.federation.coordinator.store import Store

__all__ = ["ApiSettings", "create_app"]

# in this order, so that the OpenAPI schema lists the paths as it always has
_GROUPS: tuple[Callable[[ApiContext], APIRouter], ...] = (
    health.router,
    work.router,
    blob_routes.router,
    replies.router,
    secagg.router,
    jobs.router,
    admin.router,
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
    ctx = ApiContext(
        store=store,
        blobs=blobs,
        gate=gate,
        settings=settings,
        start_job=start_job,
        notify=notify,
        changes=changes,
        announce_job=announce_job,
    )
    for group in _GROUPS:
        app.include_router(group(ctx))
    return app
