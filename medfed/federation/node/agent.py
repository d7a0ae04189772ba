"""The hospital's node: connects outwards only, long-polls for work, trains next to the data.

For each job the coordinator announces, the node asks its data steward (the approval store)
whether that exact code (sha256 of the task file) may run. Only approved jobs get trained;
the node tells the coordinator its steward's decision. Before anything leaves the site, the
node writes it into the site's own hash-chained egress ledger.

Models move through files, never as whole ``bytes``: the round's model is downloaded to disk
and memory-mapped, and an update is streamed into the outbox (:mod:`.outbox`) and uploaded
chunk by chunk from there; a reply whose upload was cut is sent again after a restart
without training again.

What the coordinator sends is another party's input: ids and hashes are checked before they
become part of a path or a URL, its text is only ever printed as text, a reply it refuses for
good becomes a failure report instead of a retry, and no exception (not even one of the
``on_event`` printer) stops the agent. One state folder serves one node: :meth:`NodeAgent.lock`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfed.data.base import DataSpec, SiteData
from medfed.errors import MedfedError, UsageError
from medfed.federation.identity.kits import Kit
from medfed.federation.node.checks import (
    NotFinite,
    ProtocolError,
    checked_id as _checked_id,
    checked_sha256 as _checked_sha256,
    checked_task as _checked_task,
    not_finite as _not_finite,
    permanent as _permanent,
)
from medfed.federation.node.gate import refusal
from medfed.federation.node.job_context import JobContext, training_context
from medfed.federation.node.outbox import Outbox, Waiting
from medfed.federation.node.privacy import JobProtection, RoundCost, job_privacy, protect_job
from medfed.federation.node.state_lock import release_state_lock, take_state_lock
from medfed.federation.node.statistics import (
    is_statistics,
    statistics_context,
    statistics_protection,
)
from medfed.federation.transfer.client import ApiError, FederationClient, TransportError
from medfed.records import Operation, Params, Reply, SiteFailure
from medfed.serde import instruction_from_wire, reply_to_header
from medfed.site.approval import ApprovalStore, approval_id
from medfed.site.ledger import EgressLedger
from medfed.tensor_file import open_params

__all__ = ["NodeAgent", "NodeSettings", "NotFinite", "ProtocolError"]

log = logging.getLogger("medfed.node")

# the job's settings an approval covers, with its code and the data set (see _terms)
_TERMS = ("train", "data_spec", "privacy", "rounds", "min_sites")


class _GivenUp(MedfedError):
    """A task whose reply the coordinator refused for good was handed out again."""


@dataclass
class NodeSettings:
    state_dir: Path
    auto_approve: bool = False
    # protections the site's steward requires of every job ("dp", "secagg"); others are refused
    require: frozenset[str] = frozenset()
    poll_wait: float = 20.0
    max_backoff: float = 30.0


@dataclass
class NodeAgent:
    """Runs until ``stop()``; ``on_event`` receives one-line descriptions of what it does."""

    client: FederationClient
    site: str
    data: SiteData
    spec: DataSpec
    settings: NodeSettings
    on_event: Callable[[str], None] = lambda message: None
    dataset: str = ""  # the data set's name: its privacy budget is kept under it
    kit: Kit | None = None  # the site's kit: its identity key signs secure aggregation
    contract_sha256: str | None = None  # the data contract the served data set is under
    data_problem: str | None = None  # how the served data fail that contract (jobs declined)
    # the records as recorded (gaps kept, no standardising alone) for a job that harmonises;
    # None: ``data`` as it is (a bundled data set)
    raw_data: Callable[[], SiteData] | None = None
    _jobs: dict[str, JobContext] = field(default_factory=dict)
    # DP jobs approved here: their budget reserved before any task (see _afford), or declined
    _reserved: dict[str, JobProtection] = field(default_factory=dict)
    _declined: dict[str, str] = field(default_factory=dict)
    _costs: dict[int, RoundCost] = field(default_factory=dict)
    _announced: dict[str, dict[str, Any]] = field(default_factory=dict)
    _reported: dict[str, str] = field(default_factory=dict)
    _refused: dict[str, str] = field(default_factory=dict)
    _given_up: dict[int, str] = field(default_factory=dict)  # tasks refused for good
    _lock_fd: int | None = None
    _stop: bool = False

    def __post_init__(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.approvals = ApprovalStore.in_state(self.settings.state_dir)
        self.ledger = EgressLedger.in_state(self.settings.state_dir)
        self.outbox = Outbox(self.settings.state_dir / "outbox")
        (self.settings.state_dir / "tasks").mkdir(exist_ok=True)

    def stop(self) -> None:
        self._stop = True

    def lock(self) -> None:
        """Take this state folder for this agent, for its life: a second node started with
        the same state (its outbox, ledger and budget) is refused instead of racing this one.

        An exclusive ``flock`` on ``STATE/node.lock``, released when the process ends (also
        on kill -9); the file names the holder's pid. Idempotent.
        """
        if self._lock_fd is None:
            self._lock_fd = take_state_lock(self.settings.state_dir)

    def unlock(self) -> None:
        """Give the state folder up (the agent has stopped serving)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            release_state_lock(fd)

    def run(self) -> None:
        locked_here = self._lock_fd is None
        self.lock()
        try:
            self._serve()
        finally:
            if locked_here:
                self.unlock()

    def _serve(self) -> None:
        backoff = 1.0
        while not self._stop:
            try:
                self.step(wait=self.settings.poll_wait)
                backoff = 1.0
            except TransportError as exc:
                delay = min(self.settings.max_backoff, backoff) * (0.5 + random.random())
                self._say(f"coordinator unreachable ({exc}); retrying in {delay:.0f} s")
                time.sleep(delay)
                backoff *= 2
            except _GivenUp:  # said once already: only slow down
                time.sleep(min(self.settings.max_backoff, backoff))
                backoff *= 2
            except MedfedError as exc:
                # a refusal concerns one message (e.g. a round that closed meanwhile), as does
                # an update that failed its checks: say it, and keep serving; a revoked
                # identity is refused forever, so slow down
                self._say(str(exc))
                time.sleep(min(self.settings.max_backoff, backoff))
                backoff *= 2
            except Exception as exc:  # a node serves until it is stopped
                # what the coordinator sent may be malformed in ways no check foresaw: log it
                # (with its traceback), say it, slow down and keep serving
                log.exception("unexpected error while serving the coordinator")
                self._say(f"unexpected error ({type(exc).__name__}: {exc}); the node goes on")
                time.sleep(min(self.settings.max_backoff, backoff))
                backoff *= 2

    def _say(self, message: str) -> None:
        """Tell ``on_event``; a handler that raises (a closed terminal, text it cannot print)
        is logged and never stops the node."""
        try:
            self.on_event(message)
        except Exception:  # printing must not stop a node
            log.warning("the node's event handler failed on %r", message, exc_info=True)

    def step(self, *, wait: float = 0.0) -> bool:
        """One poll: decide on announced jobs, run at most one task. True if a task ran."""
        work = self.client.get_json(f"/v1/work?wait={wait:g}")
        if not isinstance(work, dict) or not isinstance(work.get("jobs", []), list):
            raise ProtocolError("the coordinator's answer to /v1/work is malformed; ignored")
        running = set()
        for job in work.get("jobs", []):
            try:
                running.add(self._consider(job))
            except ProtocolError as exc:  # that job only: the others and the task go on
                self._refuse_once(f"job:{job!r:.200}", str(exc))
        self._finish_ended(running)
        task = work.get("task")
        if task is None:
            return False
        self._run_task(task)
        return True

    def _refuse_once(self, key: str, message: str) -> None:
        """Say (and log) a refusal of the coordinator's input once, not on every poll."""
        if key in self._refused:
            return
        if len(self._refused) > 1000:  # a coordinator that varies its garbage: forget the oldest
            self._refused.pop(next(iter(self._refused)))
        self._refused[key] = message
        log.warning("%s", message)
        self._say(message)

    # -- approval -------------------------------------------------------------------------

    def _consider(self, job: Any) -> str:
        """Decide on an announced job (and tell the coordinator); returns the job's id."""
        if not isinstance(job, dict):
            raise ProtocolError("the coordinator announced a job that is not an object; ignored")
        job_id = _checked_id(job.get("id"), "a job id")
        sha = _checked_sha256(job.get("task_sha256"), f"job {job_id}'s task sha256")
        task_name, researcher = job.get("task_name"), job.get("researcher")
        if not isinstance(task_name, str) or not task_name.strip() or len(task_name) > 200:
            raise ProtocolError(f"the coordinator announced job {job_id} with no valid task name")
        researcher = _checked_id(researcher, f"job {job_id}'s researcher")
        self._announced[job_id] = job
        terms = self._terms(job)
        name = job.get("name")
        origin = (
            f"researcher {researcher}, job {job_id}"
            + (f" ({name!r})" if isinstance(name, str) and 0 < len(name) <= 200 else "")
            + f", via {self.client.base_url}"
        )
        status = self.approvals.request(
            task_sha256=sha,
            job=job_id,
            task_name=task_name,
            researcher=researcher,
            terms=terms,
            origin=origin,
        )
        request_id = approval_id(sha, terms)
        decision = _value(status)
        # the steward's minimum protection, the data the job needs: declined at once if not met
        refused = refusal(
            job,
            require=self.settings.require,
            dataset=self.dataset,
            contract_sha256=self.contract_sha256,
            data_problem=self.data_problem,
        )
        if refused is not None:
            if self._reported.get(job_id) != "rejected":
                self._say(f"job {job_id} declined: {refused.said}")
            decision = "rejected"
        if self.settings.auto_approve and decision == "pending":
            self.approvals.approve(request_id, by="auto-approve (development mode)")
            decision = "approved"
        if decision == "approved":
            decision = self._afford(job_id, job)
        if decision == "pending" and self._reported.get(job_id) != "pending":
            self._say(
                f"job {job_id} ({job['task_name']}) waits for your approval: "
                f"medfed node pending, then medfed node approve {request_id[:12]}"
            )
        if job.get("approval") != decision and self._reported.get(job_id) != decision:
            body = {"status": decision}
            if decision == "rejected":
                body["reason"] = (
                    refused.reason
                    if refused is not None
                    else "the site's privacy budget cannot pay for this job"
                    if job_id in self._declined
                    else "the data steward declined it"
                )
            self.client.post_json(f"/v1/jobs/{job_id}/approval", body)
            self._reported[job_id] = decision
            if decision == "approved":
                self._say(f"job {job_id} approved: this site takes part")
        return job_id

    def _terms(self, job: dict[str, Any]) -> dict[str, Any]:
        """What an approval of this job covers besides its code: the settings it runs with
        and the data set it would use here (:mod:`medfed.site.approval`)."""
        terms = {
            "dataset": self.dataset,
            "task_name": job.get("task_name"),
            **{key: job.get(key) for key in _TERMS},
        }
        if is_statistics(job):  # a statistics job: the approval covers its query too
            terms.update(kind=job.get("kind"), statistics=job.get("statistics"))
        if job.get("harmonise", "none") != "none":  # a term only when asked (approvals stay)
            terms["harmonise"] = job.get("harmonise")
        return terms

    def _afford(self, job_id: str, job: dict[str, Any]) -> str:
        """An approved DP job reserves its rounds on this data set's budget at once: a node
        whose budget cannot pay for it declines it now ("rejected", with the reason), so the
        coordinator never asks this site, and no round waits for a site that would refuse."""
        if job_id in self._jobs or job_id in self._reserved:
            return "approved"
        if job_id in self._declined:
            return "rejected"
        try:
            if is_statistics(job):  # a DP query reserves its exchanges on the budget
                protection = statistics_protection(
                    job_id,
                    job,
                    site=self.site,
                    dataset=self.dataset,
                    state_dir=self.settings.state_dir,
                    identity_key=None,  # secure aggregation's state is the job context's
                )
                if protection.budget is not None:
                    self._reserved[job_id] = protection
                return "approved"
            if not job_privacy(job.get("privacy")).enabled:
                return "approved"
            self._reserved[job_id] = protect_job(
                job_id,
                job,
                site=self.site,
                dataset=self.dataset,
                state_dir=self.settings.state_dir,
                identity_key=None if self.kit is None else self.kit.identity_key,
                num_train=self.data.num_train,
            )
        except MedfedError as exc:
            self._declined[job_id] = str(exc)
            self._say(f"job {job_id} declined: {exc}")
            return "rejected"
        return "approved"

    def _finish_ended(self, running: set[str]) -> None:
        """Jobs no longer running: release the privacy budget they reserved but did not use."""
        for job_id in [j for j in self._reserved if j not in running]:
            try:
                self._reserved.pop(job_id).finish()
            except MedfedError as exc:
                self._say(f"{job_id}: {exc}")
        for job_id in [j for j in self._jobs if j not in running]:
            ctx = self._jobs.pop(job_id)
            try:
                ctx.protection.finish()
            except MedfedError as exc:
                self._say(f"{job_id}: {exc}")

    def _context(self, job_id: str, announced: dict[str, Any]) -> JobContext:
        ctx = self._jobs.get(job_id)
        if ctx is not None:
            return ctx
        code = self.client.get_bytes(f"/v1/jobs/{job_id}/bundle")
        sha = hashlib.sha256(code).hexdigest()
        if _value(self.approvals.status(sha, self._terms(announced))) != "approved":
            raise PermissionError(
                "this job's code with these settings has not been approved at this site"
            )
        common: dict[str, Any] = {
            "sha": sha,
            "site": self.site,
            "data": self.data,
            "spec": self.spec,
            "dataset": self.dataset,
            "state_dir": self.settings.state_dir,
            "identity_key": None if self.kit is None else self.kit.identity_key,
        }
        if is_statistics(announced):  # the approved query, on the records as recorded
            if self.raw_data is not None:
                common["data"] = self.raw_data()
            ctx = statistics_context(job_id, announced, bundle=code, **common)
        else:
            path = self.settings.state_dir / "tasks" / f"{sha}.py"
            path.write_bytes(code)
            ctx = training_context(
                job_id,
                announced,
                code_path=path,
                require=self.settings.require,
                say=self._say,
                raw_data=self.raw_data,
                **common,
            )
        self._reserved.pop(job_id, None)  # reserved at approval: this context now holds it
        self._jobs[job_id] = ctx
        return ctx

    # -- one task -------------------------------------------------------------------------

    def _global_model(self, sha256: str) -> Params:
        """The model of this round, streamed to disk and memory-mapped (bounded memory)."""
        sha256 = _checked_sha256(sha256, "the round's model")  # it names a file here
        folder = self.settings.state_dir / "models"
        folder.mkdir(exist_ok=True)
        path = folder / f"{sha256}.safetensors"
        if not path.exists():
            for old in folder.iterdir():  # keep only the current model (and its partial file)
                if old.name != path.name + ".part" and old.is_file():
                    old.unlink(missing_ok=True)
            self.client.download_blob_to(sha256, path)
        return open_params(path)[0]

    def _run_task(self, task: dict[str, Any]) -> None:
        # checked before anything is touched: without a valid id, job and round there is no
        # reply to send (its URL, its ledger entry), so the task is refused with a clear log
        task_id, job_id, round_, operation = _checked_task(task)
        if task_id in self._given_up:  # handed out again: answering would be refused again
            self._refuse_once(f"task:{task_id}", self._given_up[task_id])
            raise _GivenUp(self._given_up[task_id])
        waiting = self.outbox.waiting(task_id)
        self.outbox.keep_only(task_id)
        if waiting is None:
            waiting = self._answer(task)
        else:
            self._say(f"{job_id} round {round_}: sending the reply of an earlier attempt")
        try:
            result = self._send(task_id, job_id, round_, waiting)
        except ApiError as exc:
            if not _permanent(exc):
                raise  # the coordinator may take it later: it stays in the outbox
            self.outbox.remove(task_id)  # refused for good: sending it again would be refused
            if exc.status in (404, 409) or waiting.header.get("failure") is not None:
                self._give_up(task_id, f"{job_id} round {round_}: {exc}; this site gives up")
                raise
            # the coordinator cannot take this reply (e.g. metrics it cannot record, an update
            # over its limits): say so as a failure, instead of working on it again and again
            self._say(
                f"{job_id} round {round_}: the coordinator refused this site's reply for good "
                f"({exc.status}: {exc.detail}); reporting a failure instead"
            )
            refused = SiteFailure(
                "ReplyRefused",
                f"the coordinator refused this site's reply ({exc.status}): {exc.detail}",
            )
            waiting = self._put(task_id, job_id, self._failure(round_, operation, refused))
            try:
                result = self._send(task_id, job_id, round_, waiting)
            except ApiError as again:
                if _permanent(again):
                    self.outbox.remove(task_id)
                    self._give_up(task_id, f"{job_id} round {round_}: {again}; this site gives up")
                raise
        except TransportError:
            raise  # the reply stays in the outbox: the next attempt resumes it
        except MedfedError:
            self.outbox.remove(task_id)  # refused: sending it again would be refused again
            raise
        self.outbox.remove(task_id)
        failure = waiting.header.get("failure")
        state = f"failed: {failure['kind']}: {failure['message']}" if failure else ""
        self._say(
            f"{job_id} round {round_}: {task['operation']} sent "
            f"({state or result.get('status', '')})"
        )

    def _send(self, task_id: int, job_id: str, round_: int, waiting: Waiting) -> Any:
        """Upload a waiting reply's update, record the reply in the ledger, then send it."""
        blob_sha = None
        if waiting.update is not None:
            blob_sha = self.client.upload_file(waiting.update, sha256=waiting.sha256)
        body = json.dumps({"header": waiting.header, "blob_sha256": blob_sha}).encode()
        cost = self._costs.pop(task_id, None)
        self.ledger.append(
            job=job_id,
            round=round_,
            kind="failure" if waiting.header.get("failure") else "metrics",
            destination=self.client.base_url,
            data=body,
            **self._privacy_cost(job_id, cost),
        )
        return self.client.post_bytes(f"/v1/tasks/{task_id}/reply", body)

    def _give_up(self, task_id: int, message: str) -> None:
        if len(self._given_up) > 1000:
            self._given_up.pop(next(iter(self._given_up)))
        self._given_up[task_id] = message
        log.warning("%s", message)

    def _failure(self, round_: int, operation: str, failure: SiteFailure) -> Reply:
        return Reply(site=self.site, round=round_, operation=Operation(operation), failure=failure)

    def _answer(self, task: dict[str, Any]) -> Waiting:
        """Run the task; its reply goes into the outbox (the update recorded in the ledger)."""
        task_id, job_id, round_, operation = _checked_task(task)
        cost = None
        try:
            if not isinstance(task.get("instruction"), dict):
                raise ProtocolError("the coordinator sent a task without a valid instruction")
            if operation != Operation.SECAGG.value:  # it names the model's file: check it first
                model_sha = _checked_sha256(task.get("params_sha256"), "the round's model")
            ctx = self._context(job_id, self._announced.get(job_id, {}))
            if operation == Operation.SECAGG.value:  # a protocol message, no model
                instruction = instruction_from_wire(task["instruction"], Params())
                ctx.protection.before_secagg(
                    instruction, lambda sites: self._certificates(job_id, sites), **self._ca()
                )
            else:
                params = self._global_model(model_sha)
                instruction = instruction_from_wire(task["instruction"], params)
            if operation in (Operation.TRAIN.value, Operation.STATS.value):
                # charged before training (or a DP query's exchange): a round the budget
                # refuses sends nothing
                cost = ctx.protection.charge(round_)
            self._say(f"{job_id} round {round_}: {operation}…")
            # only what was approved (a statistics job's query, a harmonisation's exchange)
            runtime = ctx.runtime_for(instruction)
            # the site's state is kept per job this node runs, whatever the coordinator calls it
            reply = runtime.handle(dataclasses.replace(instruction, run=job_id))
            problem = _not_finite(reply)
            if problem is not None:  # the coordinator could not record it: a failure instead
                raise NotFinite(problem)
        except Exception as exc:  # a site's failure is a value: the coordinator hears of it
            if isinstance(exc, ProtocolError):
                log.warning("%s round %s: refused: %s", job_id, round_, exc)
            if isinstance(exc, MedfedError):
                self._say(f"{job_id} round {round_}: this site refuses: {exc}")
            reply = self._failure(round_, operation, SiteFailure(type(exc).__name__, str(exc)))
        if cost is not None:
            self._costs[task_id] = cost
        return self._put(task_id, job_id, reply)

    def _put(self, task_id: int, job_id: str, reply: Reply) -> Waiting:
        """A reply into the outbox; its update is recorded in the ledger before it is kept."""
        round_ = reply.round
        header = reply_to_header(reply)
        header["failure"] = (
            None
            if reply.failure is None
            else {
                "kind": reply.failure.kind,
                "message": reply.failure.message,
                "detail": "",
            }
        )  # tracebacks stay at the site
        destination = self.client.base_url

        def record(sha256: str, nbytes: int) -> None:
            # recorded before it leaves: a ledger that cannot be written stops the upload
            self.ledger.append(
                job=job_id,
                round=round_,
                kind="update",
                destination=destination,
                nbytes=nbytes,
                sha256=sha256,
                **self._privacy_cost(job_id, self._costs.pop(task_id, None)),
            )

        delta = None if reply.update is None else reply.update.delta
        return self.outbox.put(task_id, header, delta, record)

    # -- privacy --------------------------------------------------------------------------

    def _privacy_cost(self, job_id: str, cost: RoundCost | None) -> dict[str, Any]:
        """The ledger fields of a message of a DP job: ``epsilon`` is what the round added to
        the data set's ε (on the round's first message only, so that a ledger's ε add up);
        the note says the data set's ε spent so far."""
        ctx = self._jobs.get(job_id)
        last = cost or (None if ctx is None else ctx.protection.last_cost)
        if last is None:
            return {}
        return {
            "epsilon": None if cost is None else cost.epsilon,
            "note": f"epsilon spent on {self.dataset} after round {last.round}: {last.spent:.6g}",
        }

    def _ca(self) -> dict[str, Any]:
        if self.kit is None:
            raise UsageError("secure aggregation needs this site's kit (its CA and identity)")
        return {"ca_pem": self.kit.ca_pem, "consortium": self.kit.consortium}

    def _certificates(self, job_id: str, sites: list[str]) -> dict[str, Any]:
        names = [_checked_id(site, "a site name") for site in sites]  # they go into the URL
        job_id = _checked_id(job_id, "a job id")
        got = self.client.get_json(f"/v1/jobs/{job_id}/certificates?sites={','.join(names)}")
        certificates = got.get("certificates") if isinstance(got, dict) else None
        return certificates if isinstance(certificates, dict) else {}


def _value(status: Any) -> str:
    return str(getattr(status, "value", status))
