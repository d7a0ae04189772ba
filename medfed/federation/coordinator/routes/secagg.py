"""The API's part in secure aggregation: the peers' certificates, and the checks of replies.

- ``GET /v1/jobs/{job_id}/certificates?sites=a,b`` (sites taking part in the job): the stored
  DER certificates (base64) of those of the named sites that take part in the job too. The
  node checks each against its own CA before it trusts the key in it.
- :func:`update_problem`: what a reply may carry. A training reply of a job with secure
  aggregation carries no update; a secure-aggregation reply carries a ``message`` object and
  at most one tensor, the masked vector (:data:`MASKED_TENSOR`, 1-D, uint32 or uint64, no
  longer than the model's values and a few extra).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends

from medfed.federation.coordinator.blobs import BlobStore
from medfed.federation.coordinator.remote_backend import base_operation
from medfed.federation.coordinator.routes.context import ApiContext
from medfed.federation.coordinator.stats_job import MAX_STATS_VALUES, is_stats_job
from medfed.federation.coordinator.store import Store, TaskRow
from medfed.federation.identity.signing import Principal
from medfed.orchestration.validate import check_update
from medfed.records import Operation, Params, Reply
from medfed.site.secure_aggregation import MASKED_TENSOR
from medfed.tensor_file import open_params

__all__ = ["EXTRA_VALUES", "base_operation", "router", "update_problem"]

EXTRA_VALUES = 16  # values a masked vector may hold beyond the model's (e.g. the clip bit)
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_MAX_SITES = 10_000


def job_is_secure(config: dict[str, Any]) -> bool:
    privacy = config.get("privacy")
    return isinstance(privacy, dict) and bool(privacy.get("secure_aggregation", False))


def masked_problem(delta: Params, num_values: int) -> str | None:
    """Why ``delta`` is not a masked vector of a model with ``num_values`` values."""
    if list(delta) != [MASKED_TENSOR]:
        return f"a masked input is exactly one tensor named {MASKED_TENSOR!r}"
    vector = delta[MASKED_TENSOR]
    if vector.ndim != 1:
        return f"the masked vector must be 1-D, got shape {list(vector.shape)}"
    if vector.dtype.name not in ("uint32", "uint64"):
        return f"the masked vector must be uint32 or uint64, got {vector.dtype.name}"
    limit = num_values + EXTRA_VALUES
    if vector.size > limit:
        return f"the masked vector holds {vector.size} values, at most {limit} for this model"
    return None


def harmonises(config: Any) -> bool:
    """A training job with ``[data] harmonise``: one statistics exchange before round 1."""
    data = config.get("data") if isinstance(config, dict) else None
    return isinstance(data, dict) and data.get("harmonise", "none") != "none"


def sums_problem(delta: Params) -> str | None:
    """Why ``delta`` is not a site's statistics sums (1-D float64 blocks, finite, bounded)."""
    total = 0
    for name in delta:
        block = delta[name]
        if block.ndim != 1 or block.dtype.name != "float64":
            return f"statistics block {name!r} must be 1-D float64"
        total += block.size
        if total > MAX_STATS_VALUES:
            return f"a site's statistics hold at most {MAX_STATS_VALUES} values"
        if not np.isfinite(block).all():
            return f"statistics block {name!r} holds NaN or infinite values"
    return None


def update_problem(
    store: Store, blobs: BlobStore, task: TaskRow, parsed: Reply, delta: Params | None
) -> tuple[int, str] | None:
    """(status, sentence) when a reply's update may not be stored, else None."""
    operation = base_operation(task.operation)
    if operation == Operation.SECAGG.value and parsed.ok:
        if parsed.message is None:
            return 422, "reply refused: a secure-aggregation reply carries a message object"
        if delta is None:
            return None
        job = store.job(task.job_id)
        if job is None:
            return 404, "no such task"
        num_values = (
            MAX_STATS_VALUES  # a statistics job's digits: no model bounds them
            if is_stats_job(job.config)
            else open_params(blobs.path(job.initial_sha256))[0].num_values
        )
        if harmonises(job.config):  # its harmonisation exchange's digits, too
            num_values = max(num_values, MAX_STATS_VALUES)
        problem = masked_problem(delta, num_values)
        return None if problem is None else (422, f"reply refused: {problem}")
    if operation == Operation.STATS.value and parsed.ok and delta is not None:
        job = store.job(task.job_id)
        asks = job is not None and (is_stats_job(job.config) or harmonises(job.config))
        if job is None or not asks or job_is_secure(job.config):
            return 400, (
                "only a statistics job's (or a harmonising job's) reply in the clear carries "
                "its sums"
            )
        problem = sums_problem(delta)
        return None if problem is None else (422, f"reply refused: {problem}")
    train = parsed.ok and operation == Operation.TRAIN.value
    if delta is not None and not train:  # only what check_update saw may be stored
        return 400, "only a successful training reply carries an update"
    if not train:
        return None
    job = store.job(task.job_id)
    if job is not None and job_is_secure(job.config):
        if delta is not None:
            return 422, (
                "update refused: a job with secure aggregation gets no update in a training "
                "reply (only the masked vector leaves a site)"
            )
        return None
    model, _ = open_params(blobs.path(task.params_sha256))
    problem = check_update(parsed, model)
    return None if problem is None else (422, f"update refused: {problem}")


def router(ctx: ApiContext) -> APIRouter:
    r = ctx.router()
    store, read = ctx.store, ctx.read
    refuse, need = ctx.gate.refuse, ctx.gate.need
    book = ctx.gate.certificates
    a_site = Depends(need("site"))

    @r.get("/v1/jobs/{job_id}/certificates")
    def certificates(job_id: str, sites: str = "", p: Principal = a_site) -> dict[str, Any]:
        """The identity certificates of the job's sites named in ``sites`` (comma-separated)."""
        job = store.job(job_id)
        approvals = store.approvals(job_id) if job is not None else {}
        if job is None or approvals.get(p.name) != "approved":
            raise refuse(p, 404, "job.certificates", job_id, "no such job")
        names = [n for n in sites.split(",") if n]
        if not names or len(names) > _MAX_SITES or not all(_NAME.fullmatch(n) for n in names):
            raise refuse(
                p,
                400,
                "job.certificates",
                job_id,
                "sites must name one or more participants, separated by commas",
            )
        taking_part = [n for n in names if approvals.get(n) == "approved"]
        found = book.get(taking_part)
        read(p, "job.certificates", job_id)
        return {
            "job_id": job_id,
            "certificates": {n: base64.b64encode(d).decode("ascii") for n, d in found.items()},
        }

    return r
