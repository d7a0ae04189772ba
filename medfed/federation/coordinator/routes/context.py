"""What every route of the API shares: the state, the gate, the settings and the wake-ups."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter

from medfed.federation.coordinator.auth import Gate
from medfed.federation.coordinator.blobs import BlobStore
from medfed.federation.coordinator.models import ApiSettings
from medfed.federation.coordinator.store import Store
from medfed.federation.identity.signing import Principal

__all__ = ["ApiContext"]


@dataclass(frozen=True)
class ApiContext:
    """One app's dependencies, built by ``create_app`` and handed to each group's ``router``.

    ``start_job`` launches a job's runner; ``notify`` wakes waiting rounds; ``changes`` is the
    (tasks, jobs) counter pair a long-poll watches; ``announce_job`` bumps the jobs counter.
    """

    store: Store
    blobs: BlobStore
    gate: Gate
    settings: ApiSettings
    start_job: Callable[[str], None]
    notify: Callable[[], None]
    changes: Callable[[], tuple[int, int]]
    announce_job: Callable[[], None]

    def read(self, p: Principal, action: str, target: str) -> None:
        """Plain reads of job state and of the participants are audited too."""
        self.store.audit(principal=p.name, role=p.role, action=action, target=target)

    def router(self) -> APIRouter:
        """An empty router whose routes check the request's signature first (the gate's)."""
        return APIRouter(route_class=self.gate.route_class())
