"""``GET /v1/health``: the one route that needs no signed request."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from medfed.federation.coordinator.routes.context import ApiContext

__all__ = ["router"]


def router(ctx: ApiContext) -> APIRouter:
    r = ctx.router()
    settings = ctx.settings

    @r.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "consortium": settings.consortium, "time": time.time(), "api": 1}

    return r
