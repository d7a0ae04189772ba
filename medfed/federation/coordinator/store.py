"""The coordinator's state, in SQL through SQLAlchemy: SQLite by default, any URL (PostgreSQL).

Tables: ``participants`` (seen identities, revocations), ``nonces`` (replay protection that
survives a restart), ``audit`` (every API action), ``jobs`` and ``job_sites`` (approvals),
``tasks`` (one row per site, round and operation: the work a node fetches and the reply it
returned), ``rounds`` (the checkpoint after each aggregated round) and ``uploads``.

Everything a restart needs is here or in the blob store: a job resumes from its last
checkpointed round, and replies already accepted for the round in progress are reused.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    and_,
    create_engine,
    delete,
    event,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from medfed.federation.coordinator.schema import (
    audit,
    job_site_reasons,
    job_sites,
    jobs,
    metadata,
    nonces,
    participants,
    rounds,
    tasks,
    uploads,
)

__all__ = ["JobRow", "Store", "TaskRow"]

_T = TypeVar("_T")

OPEN_TASK = ("pending", "delivered")


@dataclass(frozen=True)
class JobRow:
    id: str
    name: str
    researcher: str
    created_at: float
    status: str
    task_sha256: str
    task_name: str
    config: dict[str, Any]
    initial_sha256: str
    params_sha256: str
    rounds_done: int
    error: str | None


@dataclass(frozen=True)
class TaskRow:
    id: int
    job_id: str
    round: int
    operation: str
    site: str
    instruction: dict[str, Any]
    params_sha256: str
    status: str
    reply: dict[str, Any] | None
    reply_sha256: str | None


def _job(row: Any) -> JobRow:
    m = row._mapping
    return JobRow(
        id=m["id"],
        name=m["name"],
        researcher=m["researcher"],
        created_at=m["created_at"],
        status=m["status"],
        task_sha256=m["task_sha256"],
        task_name=m["task_name"],
        config=json.loads(m["config"]),
        initial_sha256=m["initial_sha256"],
        params_sha256=m["params_sha256"],
        rounds_done=m["rounds_done"],
        error=m["error"],
    )


def _task(row: Any) -> TaskRow:
    m = row._mapping
    return TaskRow(
        id=m["id"],
        job_id=m["job_id"],
        round=m["round"],
        operation=m["operation"],
        site=m["site"],
        instruction=json.loads(m["instruction"]),
        params_sha256=m["params_sha256"],
        status=m["status"],
        reply=None if m["reply"] is None else json.loads(m["reply"]),
        reply_sha256=m["reply_sha256"],
    )


class Store:
    """All coordinator state behind small, transactional methods."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

        metadata.create_all(self.engine)
        # who was recorded as seen, and when: ``last_seen`` is kept to TOUCH_EVERY seconds so
        # that a busy node does not cost one write transaction per request
        self._touched: dict[str, tuple[str, str, float]] = {}
        self._touch_lock = threading.Lock()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def _tx_retry(self, fn: Callable[[Connection], _T]) -> _T:
        """``fn`` in a transaction, run once more when a concurrent insert of the same key won.

        The read-then-insert methods below race with themselves (two threads both see no row,
        both insert); the loser's retry sees the winner's row. A failed statement aborts the
        whole transaction on PostgreSQL, so the retry needs a new transaction, not a catch.
        """
        try:
            with self._tx() as c:
                return fn(c)
        except SQLIntegrityError:
            with self._tx() as c:
                return fn(c)

    def close(self) -> None:
        self.engine.dispose()

    # -- identities, replay protection, audit -----------------------------------------------

    TOUCH_EVERY = 30.0

    def touch_participant(self, name: str, role: str, fingerprint: str) -> None:
        """Record that ``name`` was seen (its first time, a new key or role, else every 30 s)."""
        now = time.time()
        with self._touch_lock:
            known = self._touched.get(name)
            if known and known[:2] == (role, fingerprint) and now - known[2] < self.TOUCH_EVERY:
                return

        def touch(c: Connection) -> None:
            row = c.execute(select(participants).where(participants.c.name == name)).first()
            if row is None:
                c.execute(
                    insert(participants).values(
                        name=name,
                        role=role,
                        fingerprint=fingerprint,
                        first_seen=now,
                        last_seen=now,
                        revoked=False,
                    )
                )
            else:
                c.execute(
                    update(participants)
                    .where(participants.c.name == name)
                    .values(last_seen=now, fingerprint=fingerprint, role=role)
                )

        self._tx_retry(touch)
        with self._touch_lock:
            self._touched[name] = (role, fingerprint, now)

    def is_revoked(self, name: str) -> bool:
        with self._tx() as c:
            row = c.execute(
                select(participants.c.revoked).where(participants.c.name == name)
            ).first()
        return bool(row and row[0])

    def revoke(self, name: str, reason: str) -> bool:
        """Refuse every future request from ``name``, also one not seen yet.

        True when ``name`` had contacted this coordinator; False when it is revoked ahead of
        its first contact (the coordinator knows only who has signed a request to it).
        """
        now = time.time()
        known = False

        def revoke(c: Connection) -> None:
            nonlocal known
            seen = c.execute(select(participants.c.role).where(participants.c.name == name)).first()
            known = seen is not None and seen[0] != "unknown"
            res = c.execute(
                update(participants)
                .where(participants.c.name == name)
                .values(revoked=True, revoked_at=now, revoked_reason=reason)
            )
            if res.rowcount == 0:
                c.execute(
                    insert(participants).values(
                        name=name,
                        role="unknown",
                        fingerprint="",
                        first_seen=now,
                        last_seen=now,
                        revoked=True,
                        revoked_at=now,
                        revoked_reason=reason,
                    )
                )

        self._tx_retry(revoke)
        return known

    def participants(self) -> list[dict[str, Any]]:
        with self._tx() as c:
            rows = c.execute(select(participants).order_by(participants.c.name)).all()
        return [dict(r._mapping) for r in rows]

    def remember_nonce(self, fingerprint: str, nonce: str, expires_at: float) -> bool:
        """True the first time a (key, nonce) pair is seen; False for a replay."""
        now = time.time()
        try:
            with self._tx() as c:
                c.execute(
                    insert(nonces).values(
                        fingerprint=fingerprint, nonce=nonce, expires_at=expires_at
                    )
                )
                if secrets.randbelow(200) == 0:
                    c.execute(delete(nonces).where(nonces.c.expires_at < now))
        except SQLIntegrityError:
            return False
        return True

    def audit(
        self,
        *,
        principal: str,
        role: str,
        action: str,
        target: str = "",
        outcome: str = "ok",
        detail: str = "",
    ) -> None:
        with self._tx() as c:
            c.execute(
                insert(audit).values(
                    time=time.time(),
                    # cut to the columns' lengths: PostgreSQL refuses longer strings, and an
                    # action may quote a caller's URL path
                    principal=principal[:64],
                    role=role[:16],
                    action=action[:64],
                    target=target[:200],
                    outcome=outcome[:16],
                    detail=detail[:2000],
                )
            )

    def audit_log(
        self, *, limit: int = 200, target_prefix: str | None = None
    ) -> list[dict[str, Any]]:
        q = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if target_prefix:
            q = q.where(audit.c.target.startswith(target_prefix, autoescape=True))
        with self._tx() as c:
            rows = c.execute(q).all()
        return [dict(r._mapping) for r in reversed(rows)]

    def uploaded_by(self, name: str, sha256: str) -> bool:
        """Whether ``name`` itself delivered bytes that hashed to ``sha256`` (the audit log
        records an "upload" with outcome ok only then; a refused upload leaves none)."""
        query = (
            select(audit.c.id)
            .where(
                and_(
                    audit.c.principal == name,
                    audit.c.action == "upload",
                    audit.c.target == sha256,
                    audit.c.outcome == "ok",
                )
            )
            .limit(1)
        )
        with self._tx() as c:
            return c.execute(query).first() is not None

    # -- jobs ----------------------------------------------------------------------------

    def create_job(
        self,
        *,
        name: str,
        researcher: str,
        task_sha256: str,
        task_name: str,
        config: dict[str, Any],
        initial_sha256: str,
    ) -> JobRow:
        job_id = "job-" + secrets.token_hex(6)
        with self._tx() as c:
            c.execute(
                insert(jobs).values(
                    id=job_id,
                    name=name,
                    researcher=researcher,
                    created_at=time.time(),
                    status="running",
                    task_sha256=task_sha256,
                    task_name=task_name,
                    config=json.dumps(config, sort_keys=True),
                    initial_sha256=initial_sha256,
                    params_sha256=initial_sha256,
                    rounds_done=0,
                    error=None,
                )
            )
        job = self.job(job_id)
        assert job is not None
        return job

    def job(self, job_id: str) -> JobRow | None:
        with self._tx() as c:
            row = c.execute(select(jobs).where(jobs.c.id == job_id)).first()
        return None if row is None else _job(row)

    def jobs(self, *, status: str | None = None) -> list[JobRow]:
        q = select(jobs).order_by(jobs.c.created_at)
        if status is not None:
            q = q.where(jobs.c.status == status)
        with self._tx() as c:
            return [_job(r) for r in c.execute(q).all()]

    def set_job_status(
        self, job_id: str, status: str, error: str | None = None, *, if_status: str | None = None
    ) -> bool:
        """Set a job's status (only from ``if_status`` when given); False when it was not."""
        with self._tx() as c:
            where = jobs.c.id == job_id
            if if_status is not None:
                where = and_(where, jobs.c.status == if_status)
            res = c.execute(update(jobs).where(where).values(status=status, error=error))
            if res.rowcount == 0:
                return False
            if status in ("complete", "failed", "cancelled"):
                c.execute(
                    update(tasks)
                    .where(and_(tasks.c.job_id == job_id, tasks.c.status.in_(OPEN_TASK)))
                    .values(status="closed", finished_at=time.time())
                )
        return True

    def record_round(
        self, job_id: str, round: int, params_sha256: str, summary: dict[str, Any]
    ) -> None:
        """Checkpoint: the round's aggregated model and what happened, in one transaction."""
        with self._tx() as c:
            c.execute(
                insert(rounds).values(
                    job_id=job_id,
                    round=round,
                    params_sha256=params_sha256,
                    summary=json.dumps(summary, sort_keys=True),
                    finished_at=time.time(),
                )
            )
            c.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(rounds_done=round, params_sha256=params_sha256)
            )

    def rounds(self, job_id: str) -> list[dict[str, Any]]:
        with self._tx() as c:
            rows = c.execute(
                select(rounds).where(rounds.c.job_id == job_id).order_by(rounds.c.round)
            ).all()
        return [{**dict(r._mapping), "summary": json.loads(r._mapping["summary"])} for r in rows]

    # -- approvals ------------------------------------------------------------------------

    def set_approval(
        self, job_id: str, site: str, approval: str, reason: str | None = None
    ) -> None:
        """A site's decision on a job; ``reason`` (a declined job's) replaces the last one."""

        def approve(c: Connection) -> None:
            res = c.execute(
                update(job_sites)
                .where(and_(job_sites.c.job_id == job_id, job_sites.c.site == site))
                .values(approval=approval, updated_at=time.time())
            )
            if res.rowcount == 0:
                c.execute(
                    insert(job_sites).values(
                        job_id=job_id, site=site, approval=approval, updated_at=time.time()
                    )
                )
            mine = and_(job_site_reasons.c.job_id == job_id, job_site_reasons.c.site == site)
            c.execute(delete(job_site_reasons).where(mine))
            if reason and approval == "rejected":
                c.execute(insert(job_site_reasons).values(job_id=job_id, site=site, reason=reason))

        self._tx_retry(approve)

    def approvals(self, job_id: str) -> dict[str, str]:
        with self._tx() as c:
            rows = c.execute(select(job_sites).where(job_sites.c.job_id == job_id)).all()
        return {r._mapping["site"]: r._mapping["approval"] for r in rows}

    def decline_reasons(self, job_id: str) -> dict[str, str]:
        """Why each site that declined the job did so (the sites that said)."""
        with self._tx() as c:
            rows = c.execute(
                select(job_site_reasons).where(job_site_reasons.c.job_id == job_id)
            ).all()
        return {r._mapping["site"]: r._mapping["reason"] for r in rows}

    # -- tasks ------------------------------------------------------------------------------

    def ensure_task(
        self,
        *,
        job_id: str,
        round: int,
        operation: str,
        site: str,
        instruction: dict[str, Any],
        params_sha256: str,
    ) -> TaskRow:
        """The task for (job, round, operation, site), created once (idempotent on restart)."""
        key = and_(
            tasks.c.job_id == job_id,
            tasks.c.round == round,
            tasks.c.operation == operation,
            tasks.c.site == site,
        )

        def ensure(c: Connection) -> Any:
            row = c.execute(select(tasks).where(key)).first()
            if row is None:  # a concurrent creator makes this insert fail: _tx_retry reads it
                c.execute(
                    insert(tasks).values(
                        job_id=job_id,
                        round=round,
                        operation=operation,
                        site=site,
                        instruction=json.dumps(instruction, sort_keys=True),
                        params_sha256=params_sha256,
                        status="pending",
                        created_at=time.time(),
                    )
                )
                row = c.execute(select(tasks).where(key)).first()
            return row

        row = self._tx_retry(ensure)
        assert row is not None
        return _task(row)

    def next_task(self, site: str) -> TaskRow | None:
        """The oldest open task of a running job for ``site`` (re-delivered if unanswered)."""
        with self._tx() as c:
            row = c.execute(
                select(tasks)
                .join(jobs, jobs.c.id == tasks.c.job_id)
                .where(
                    and_(
                        tasks.c.site == site,
                        tasks.c.status.in_(OPEN_TASK),
                        jobs.c.status == "running",
                    )
                )
                .order_by(tasks.c.id)
                .limit(1)
            ).first()
            if row is None:
                return None
            c.execute(
                update(tasks)
                .where(tasks.c.id == row._mapping["id"])
                .values(status="delivered", delivered_at=time.time())
            )
        return _task(row)

    def task(self, task_id: int) -> TaskRow | None:
        with self._tx() as c:
            row = c.execute(select(tasks).where(tasks.c.id == task_id)).first()
        return None if row is None else _task(row)

    def complete_task(
        self, task_id: int, *, reply: dict[str, Any], reply_sha256: str | None
    ) -> str:
        """Record a reply. Returns "accepted", "duplicate" (same reply again) or "closed"."""
        body = json.dumps(reply, sort_keys=True)
        with self._tx() as c:
            row = c.execute(select(tasks).where(tasks.c.id == task_id)).first()
            if row is None:
                return "closed"
            m = row._mapping
            if m["status"] == "done":
                same = m["reply_sha256"] == reply_sha256 and m["reply"] == body
                return "duplicate" if same else "closed"
            if m["status"] not in OPEN_TASK:
                return "closed"
            res = c.execute(
                update(tasks)
                .where(and_(tasks.c.id == task_id, tasks.c.status.in_(OPEN_TASK)))
                .values(
                    status="done", reply=body, reply_sha256=reply_sha256, finished_at=time.time()
                )
            )
            return "accepted" if res.rowcount == 1 else "closed"

    def close_tasks(self, task_ids: list[int], status: str = "expired") -> None:
        if not task_ids:
            return
        with self._tx() as c:
            c.execute(
                update(tasks)
                .where(and_(tasks.c.id.in_(task_ids), tasks.c.status.in_(OPEN_TASK)))
                .values(status=status, finished_at=time.time())
            )

    def tasks_by_id(self, task_ids: list[int]) -> dict[int, TaskRow]:
        if not task_ids:
            return {}
        with self._tx() as c:
            rows = c.execute(select(tasks).where(tasks.c.id.in_(task_ids))).all()
        return {r._mapping["id"]: _task(r) for r in rows}

    def site_may_read(self, site: str, sha256: str) -> bool:
        """A site reads only the models sent to it and its own replies, never another site's."""
        with self._tx() as c:
            row = c.execute(
                select(tasks.c.id)
                .where(
                    and_(
                        tasks.c.site == site,
                        or_(tasks.c.params_sha256 == sha256, tasks.c.reply_sha256 == sha256),
                    )
                )
                .limit(1)
            ).first()
        return row is not None

    # -- uploads ------------------------------------------------------------------------

    def create_upload(
        self, *, owner: str, sha256: str, size: int, chunk_size: int
    ) -> dict[str, Any]:
        with self._tx() as c:
            row = c.execute(
                select(uploads).where(
                    and_(
                        uploads.c.owner == owner,
                        uploads.c.sha256 == sha256,
                        uploads.c.done.is_(False),
                    )
                )
            ).first()
            if row is not None and row._mapping["size"] == size:
                return dict(row._mapping)
            upload_id = secrets.token_urlsafe(18)
            c.execute(
                insert(uploads).values(
                    id=upload_id,
                    owner=owner,
                    sha256=sha256,
                    size=size,
                    chunk_size=chunk_size,
                    received="[]",
                    created_at=time.time(),
                    done=False,
                )
            )
            row = c.execute(select(uploads).where(uploads.c.id == upload_id)).first()
        assert row is not None
        return dict(row._mapping)

    def upload(self, upload_id: str) -> dict[str, Any] | None:
        with self._tx() as c:
            row = c.execute(select(uploads).where(uploads.c.id == upload_id)).first()
        return None if row is None else dict(row._mapping)

    def mark_chunk(self, upload_id: str, index: int) -> None:
        # compare-and-set: chunks of one upload may arrive in parallel, and a plain
        # read-modify-write of ``received`` would lose one of two concurrent marks
        while True:
            with self._tx() as c:
                row = c.execute(select(uploads.c.received).where(uploads.c.id == upload_id)).first()
                if row is None:
                    return
                received = set(json.loads(row[0]))
                if index in received:
                    return
                res = c.execute(
                    update(uploads)
                    .where(and_(uploads.c.id == upload_id, uploads.c.received == row[0]))
                    .values(received=json.dumps(sorted(received | {index})))
                )
                if res.rowcount == 1:
                    return

    def finish_upload(self, upload_id: str) -> None:
        with self._tx() as c:
            c.execute(update(uploads).where(uploads.c.id == upload_id).values(done=True))
