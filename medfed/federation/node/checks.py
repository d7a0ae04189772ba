"""What a node checks in the coordinator's input before acting on it (:mod:`.node`).

Ids and hashes the coordinator names are checked before they become part of a path or a URL;
a reply's numbers must be finite before they are sent; a refusal is told apart from one that
may pass when sent again.
"""

from __future__ import annotations

import math
import re
from typing import Any

from medfed.errors import MedfedError
from medfed.federation.transfer.client import ApiError
from medfed.records import Operation, Reply

__all__ = [
    "MAX_TASK_ID",
    "NotFinite",
    "ProtocolError",
    "checked_id",
    "checked_sha256",
    "checked_task",
    "not_finite",
    "permanent",
]

# what the coordinator names is checked before it becomes part of a path or a URL: ids and
# names as the coordinator's API takes them (job-<hex>, site and researcher names), hashes as
# 64 lowercase hex characters, task ids as the positive row ids every SQL database stores
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_TASK_ID = 2**31 - 1
_OPERATIONS = frozenset(op.value for op in Operation)
_STAGE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # secagg/<stage key>


class ProtocolError(MedfedError):
    """The coordinator sent something malformed (an id, a hash); the node does not act on it."""


class NotFinite(MedfedError):
    """A reply's numbers are NaN or infinite: the node sends a failure instead."""


def checked_id(value: Any, what: str) -> str:
    """A job id or a participant's name from the coordinator, safe in a URL and a path."""
    if isinstance(value, str) and _ID.fullmatch(value):
        return value
    raise ProtocolError(
        f"the coordinator sent {what} that is not an id (lowercase letters, digits and '-', "
        f"at most 63): {value!r:.80}; the node refuses it"
    )


def checked_sha256(value: Any, what: str) -> str:
    if isinstance(value, str) and _SHA256.fullmatch(value):
        return value
    raise ProtocolError(
        f"the coordinator sent a hash for {what} that is not a sha256 (64 lowercase hex "
        f"characters): {value!r:.80}; the node refuses it"
    )


def checked_task(task: Any) -> tuple[int, str, int, str]:
    """A task's id, job id, round and base operation, each as the coordinator must send it."""
    if not isinstance(task, dict):
        raise ProtocolError("the coordinator sent a task that is not an object; refused")
    task_id, round_, operation = task.get("id"), task.get("round"), task.get("operation")
    if isinstance(task_id, bool) or not isinstance(task_id, int) or not 0 < task_id <= MAX_TASK_ID:
        raise ProtocolError(
            f"the coordinator sent a task whose id is not a positive integer: {task_id!r:.80}; "
            "the node refuses it"
        )
    job_id = checked_id(task.get("job_id"), f"task {task_id}'s job id")
    if isinstance(round_, bool) or not isinstance(round_, int) or not 0 <= round_ <= MAX_TASK_ID:
        raise ProtocolError(f"the coordinator sent task {task_id} with no valid round; refused")
    base, slash, stage = operation.partition("/") if isinstance(operation, str) else ("", "", "")
    if base not in _OPERATIONS or (
        slash and not (base == Operation.SECAGG.value and _STAGE.fullmatch(stage))
    ):
        raise ProtocolError(
            f"the coordinator sent task {task_id} with an unknown operation {operation!r:.80}; "
            "refused"
        )
    return task_id, job_id, round_, base


def permanent(exc: ApiError) -> bool:
    """A refusal that sending the same reply again would meet again (a 4xx, but not the
    refusals that pass: authentication and clock, a timeout, too many requests)."""
    return 400 <= exc.status < 500 and exc.status not in (401, 403, 408, 425, 429)


def not_finite(reply: Reply) -> str | None:
    """Why a reply's numbers cannot be recorded (NaN or infinite), else None."""
    m = reply.metrics
    if reply.failure is not None or m is None:
        return None
    values = {name: getattr(m, name) for name in m.measures()}
    values.update(m.extra)
    bad = [f"{name} = {value}" for name, value in values.items() if not _finite(value)]
    if not bad:
        return None
    what = {Operation.TRAIN: "training", Operation.EVALUATE: "evaluation"}.get(
        reply.operation, str(reply.operation)
    )
    return (
        f"{what} was not finite ({', '.join(bad[:3])}): the model of this round may be broken; "
        "this failure is sent instead of the metrics"
    )


def _finite(value: Any) -> bool:
    if value is None:
        return True
    try:
        return math.isfinite(value)
    except (TypeError, ValueError):
        return False
