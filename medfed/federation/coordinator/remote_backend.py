"""The round driver's backend for a real federation: requests become task rows that nodes fetch.

``exchange`` stores the round's global params once (content-addressed), creates one task
per requested site (idempotently: after a coordinator restart the same tasks, and any reply
already accepted, are found again), then waits for the nodes' replies and yields them in
request order. A site that does not answer before the round's deadline becomes a failure
reply, and its task is closed so a late upload is refused.

Secure aggregation runs several stages per round, each one ``SECAGG`` instruction per site
(with empty params and a protocol ``message``). Each stage is a task of its own: its
operation is ``secagg/`` and 8 hex digits of the sha256 of its message
(:func:`task_operation`), so a stage is never mistaken for another one, nor for a stage of
an earlier attempt at the round.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Sequence

from medfed.errors import MedfedError
from medfed.federation.coordinator.blobs import BlobStore
from medfed.federation.coordinator.store import Store, TaskRow
from medfed.orchestration.backends.base import Request
from medfed.records import Instruction, Operation, Reply, SiteFailure
from medfed.serde import instruction_to_wire, reply_from_header
from medfed.tensor_file import open_params

__all__ = ["JobCancelled", "RemoteBackend", "Wakeup", "base_operation", "task_operation"]


def task_operation(instruction: Instruction) -> str:
    """The operation a task row stores: the instruction's, with its stage for SECAGG."""
    if instruction.operation is not Operation.SECAGG:
        return instruction.operation.value
    message = json.dumps(instruction.message, sort_keys=True, separators=(",", ":"))
    return f"{Operation.SECAGG.value}/{hashlib.sha256(message.encode()).hexdigest()[:8]}"


def base_operation(operation: str) -> str:
    """A task row's operation without its stage (``secagg/…`` → ``secagg``)."""
    return operation.partition("/")[0]


class Wakeup(threading.Condition):
    """The coordinator's condition variable, counting the events long-polls care about.

    ``tasks`` counts batches of new tasks and ``jobs`` counts new or ended jobs; a long-poll
    re-reads the store only when one of them moved, not on every reply.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tasks = 0
        self.jobs = 0

    def bump(self, what: str) -> None:
        with self:
            setattr(self, what, getattr(self, what) + 1)
            self.notify_all()


class JobCancelled(MedfedError):
    """The job was cancelled while a round was waiting for sites."""


class RemoteBackend:
    """Reaches the sites that approved ``job_id``, through the coordinator's store."""

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        job_id: str,
        *,
        wakeup: threading.Condition | None = None,
        poll: float = 0.25,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.job_id = job_id
        self.wakeup = wakeup or threading.Condition()
        self.poll = poll

    @property
    def site_names(self) -> list[str]:
        """Sites whose data steward approved this job's code and that are not revoked."""
        approved = [s for s, a in self.store.approvals(self.job_id).items() if a == "approved"]
        return sorted(s for s in approved if not self.store.is_revoked(s))

    def wait_for_sites(self, count: int, *, timeout: float | None = None) -> list[str]:
        """Wait until ``count`` sites approved the job (a steward may take days), or the timeout.

        Raises JobCancelled if the job stops while waiting.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            names = self.site_names
            if len(names) >= count or (deadline is not None and time.monotonic() >= deadline):
                return names
            job = self.store.job(self.job_id)
            if job is None or job.status != "running":
                raise JobCancelled(f"job {self.job_id} is {job.status if job else 'gone'}")
            with self.wakeup:
                wait = (
                    self.poll if deadline is None else min(self.poll, deadline - time.monotonic())
                )
                self.wakeup.wait(max(0.0, wait))

    def _failure(self, task: TaskRow, kind: str, message: str) -> Reply:
        return Reply(
            site=task.site,
            round=task.round,
            operation=Operation(base_operation(task.operation)),
            failure=SiteFailure(kind, message),
        )

    def _reply(self, task: TaskRow) -> Reply:
        if task.status == "expired":
            return self._failure(task, "Timeout", "no reply before the round's deadline")
        if task.status != "done" or task.reply is None:
            return self._failure(task, "Closed", f"the task ended as {task.status}")
        # the update is memory-mapped from the blob store: aggregating it needs no copy
        delta = open_params(self.blobs.path(task.reply_sha256))[0] if task.reply_sha256 else None
        return reply_from_header(task.reply, delta)

    def exchange(
        self, requests: Sequence[Request], *, timeout: float | None = None
    ) -> Iterator[Reply]:
        sha_of: dict[int, str] = {}
        rows: list[TaskRow] = []
        for site, instruction in requests:
            key = id(instruction.params)
            if key not in sha_of:
                sha_of[key] = self.blobs.put_params(instruction.params)  # streamed to disk
            rows.append(
                self.store.ensure_task(
                    job_id=self.job_id,
                    round=instruction.round,
                    operation=task_operation(instruction),
                    site=site,
                    instruction=instruction_to_wire(instruction),
                    params_sha256=sha_of[key],
                )
            )
        if isinstance(self.wakeup, Wakeup):
            self.wakeup.bump("tasks")  # long-polling nodes: there is work
        else:
            with self.wakeup:
                self.wakeup.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        next_i = 0
        ids = [r.id for r in rows]
        while next_i < len(rows):
            current = self.store.tasks_by_id(ids[next_i:])
            while next_i < len(rows) and current[ids[next_i]].status not in (
                "pending",
                "delivered",
            ):
                yield self._reply(current[ids[next_i]])
                next_i += 1
            if next_i >= len(rows):
                break
            job = self.store.job(self.job_id)
            if job is None or job.status != "running":
                raise JobCancelled(f"job {self.job_id} is {job.status if job else 'gone'}")
            if deadline is not None and time.monotonic() >= deadline:
                open_ids = [
                    i for i in ids[next_i:] if current[i].status in ("pending", "delivered")
                ]
                self.store.close_tasks(open_ids, status="expired")
                continue  # the loop above now yields them (done in time, or expired)
            with self.wakeup:
                wait = self.poll
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - time.monotonic()))
                self.wakeup.wait(wait)

    def close(self) -> None:
        pass
