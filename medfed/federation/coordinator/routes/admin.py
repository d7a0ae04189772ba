"""An admin's routes: revoke a participant, list the participants, read the audit log."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends

from medfed.federation.coordinator.models import RevokeBody
from medfed.federation.coordinator.routes.context import ApiContext
from medfed.federation.identity.signing import Principal

__all__ = ["router"]

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def router(ctx: ApiContext) -> APIRouter:
    r = ctx.router()
    store, read, notify = ctx.store, ctx.read, ctx.notify
    refuse, need = ctx.gate.refuse, ctx.gate.need

    @r.post("/v1/participants/{name}/revoke")
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

    @r.get("/v1/participants")
    def list_participants(p: Principal = Depends(need("admin"))) -> list[dict[str, Any]]:
        read(p, "participant.list", "")
        return store.participants()

    @r.get("/v1/audit")
    def audit_log(limit: int = 200, p: Principal = Depends(need("admin"))) -> list[dict[str, Any]]:
        read(p, "audit.read", "")
        return store.audit_log(limit=max(1, min(limit, 10_000)))

    return r
