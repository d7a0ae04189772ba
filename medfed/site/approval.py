"""Task approval at the node: a job runs only after the data steward approved what it runs.

A job arrives with the sha256 of its task bundle and its *terms*: the settings it runs with
(training, data spec, privacy, rounds) and the data set it would use here. The node calls
:meth:`ApprovalStore.request` (idempotent) and runs the job only when
:meth:`ApprovalStore.status` of the same hash and terms is ``APPROVED``. The steward decides
with ``medfed node approve|reject`` (:meth:`~ApprovalStore.approve`,
:meth:`~ApprovalStore.reject`), naming the request by at least 8 hex characters of its
*approval id*: the sha256 of the code hash and the terms together (:func:`approval_id`).

An approval covers that code *with those terms*: a later job with the same bundle and the same
settings is covered too; the same code with other settings (``local_epochs = 1000``, another
data set, no privacy) is a new request that waits for a new decision, and
:meth:`~ApprovalStore.approved_before` finds what the steward approved of that code before, so
the difference can be shown. A decision is taken once: repeating it changes nothing, and
changing it (approving what was rejected, or withdrawing an approval) needs ``override=True``.
Every decision is kept in :meth:`~ApprovalStore.history`.

Stores written before terms were bound (schema 1) are migrated in place: their decisions are
kept, on the code hash alone, which no job with terms matches, so such jobs ask again.

The store is one SQLite file (``approvals.sqlite`` in the node's state folder), opened per
operation, so the node agent and the steward's commands can use it at the same time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from medfed.errors import UsageError

__all__ = [
    "APPROVALS_FILE",
    "ApprovalStore",
    "Decision",
    "HistoryEntry",
    "Request",
    "Status",
    "approval_id",
    "flat_terms",
    "terms_changes",
]

APPROVALS_FILE = "approvals.sqlite"
"""File name of the approval store inside a node's state folder."""

MIN_PREFIX = 8
_SCHEMA_VERSION = 2
_HEX = frozenset("0123456789abcdef")
MAX_TERMS_BYTES = 64 << 10
"""Largest terms (canonical JSON) a request may carry: a job's settings are a few hundred."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    approval_id  TEXT PRIMARY KEY CHECK (length(approval_id) = 64),
    task_sha256  TEXT NOT NULL CHECK (length(task_sha256) = 64),
    terms        TEXT,
    origin       TEXT NOT NULL DEFAULT '',
    job          TEXT NOT NULL,
    task_name    TEXT NOT NULL,
    researcher   TEXT NOT NULL,
    summary      TEXT NOT NULL DEFAULT '',
    requested_at TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_at   TEXT,
    decided_by   TEXT,
    reason       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS requests_by_task ON requests (task_sha256);
CREATE TABLE IF NOT EXISTS decisions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    approval_id  TEXT NOT NULL REFERENCES requests (approval_id),
    status       TEXT NOT NULL CHECK (status IN ('approved', 'rejected')),
    decided_at   TEXT NOT NULL,
    decided_by   TEXT NOT NULL,
    reason       TEXT NOT NULL,
    override     INTEGER NOT NULL
);
"""

# schema 1 keyed requests by the code hash alone: its rows are kept, with no terms
_MIGRATE_FROM_1 = """
ALTER TABLE requests RENAME TO requests_v1;
ALTER TABLE decisions RENAME TO decisions_v1;
{schema}
INSERT INTO requests (approval_id, task_sha256, terms, origin, job, task_name, researcher,
    summary, requested_at, status, decided_at, decided_by, reason)
    SELECT approval_id_v1(task_sha256), task_sha256, NULL, '', job, task_name, researcher,
    summary, requested_at, status, decided_at, decided_by, reason FROM requests_v1;
INSERT INTO decisions (id, approval_id, status, decided_at, decided_by, reason, override)
    SELECT id, approval_id_v1(task_sha256), status, decided_at, decided_by, reason, override
    FROM decisions_v1;
DROP TABLE decisions_v1;
DROP TABLE requests_v1;
"""


def _canonical(terms: Mapping[str, Any] | None) -> str | None:
    if terms is None:
        return None
    try:
        text = json.dumps(terms, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise UsageError(f"a job's terms must be plain JSON values ({exc})") from None
    if len(text) > MAX_TERMS_BYTES:
        raise UsageError(f"a job's terms are over {MAX_TERMS_BYTES >> 10} KiB; refused")
    return text


def flat_terms(terms: Mapping[str, Any] | None) -> dict[str, str]:
    """Terms as ``dotted.key -> value`` text, sorted, for a steward to read."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key in sorted(value):
                walk(f"{prefix}.{key}" if prefix else str(key), value[key])
        else:
            out[prefix] = json.dumps(value, sort_keys=True)

    walk("", dict(terms or {}))
    return out


def terms_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[str]:
    """What differs from ``before`` to ``after``: ``"key: old → new"`` per changed setting."""
    old, new = flat_terms(before), flat_terms(after)
    return [
        f"{key}: {old.get(key, '(unset)')} → {new.get(key, '(unset)')}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def approval_id(task_sha256: str, terms: Mapping[str, Any] | None = None) -> str:
    """The id a decision is filed under: sha256 of the code hash and the canonical terms.

    ``terms=None`` is the code hash alone (how schema 1 decided); any terms, even ``{}``, give
    another id.
    """
    digest = _full_hash(task_sha256)
    bound = {"task_sha256": digest, "terms": json.loads(_canonical(terms) or "null")}
    text = json.dumps(bound, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class Status(StrEnum):
    """Where a task hash stands. ``UNKNOWN``: never requested at this node."""

    UNKNOWN = "unknown"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Request:
    """Code and terms a job asked to run with, and the steward's decision on them (if any)."""

    approval_id: str
    task_sha256: str
    terms: dict[str, Any] | None  # None: a decision on the code alone (before schema 2)
    origin: str  # where the code came from: the coordinator, the job, the researcher
    job: str
    task_name: str
    researcher: str
    summary: str
    requested_at: str
    status: Status
    decided_at: str | None
    decided_by: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What :meth:`ApprovalStore.approve`/``reject`` did: ``changed`` is False for a repeat."""

    request: Request
    changed: bool
    previous: Status


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One recorded decision; ``override`` marks one that reversed an earlier decision."""

    approval_id: str
    status: Status
    decided_at: str
    decided_by: str
    reason: str
    override: bool


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _full_hash(task_sha256: str) -> str:
    digest = task_sha256.strip().lower() if isinstance(task_sha256, str) else ""
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise UsageError(f"{task_sha256!r} is not a task sha256 (64 hex characters)")
    return digest


def _text(name: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{name} must be given (non-empty text)")
    return value.strip()


def _row_to_request(row: sqlite3.Row) -> Request:
    return Request(
        approval_id=row["approval_id"],
        task_sha256=row["task_sha256"],
        terms=None if row["terms"] is None else json.loads(row["terms"]),
        origin=row["origin"],
        job=row["job"],
        task_name=row["task_name"],
        researcher=row["researcher"],
        summary=row["summary"],
        requested_at=row["requested_at"],
        status=Status(row["status"]),
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        reason=row["reason"],
    )


class ApprovalStore:
    """The node's task approvals, in one SQLite file (see the module doc).

    ``create=False`` refuses to make a new store (for the steward's commands, so a mistyped
    ``--state`` is an error rather than an empty list).
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise UsageError(
                    f"no approval store at {self.path}; check --state (the node creates it "
                    "when the first job arrives)"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise UsageError(f"{self.path} was written by a newer medfed; upgrade medfed")
            if version == 1:
                conn.create_function("approval_id_v1", 1, approval_id, deterministic=True)
                script = _MIGRATE_FROM_1.format(schema=_SCHEMA)
                conn.executescript(f"BEGIN IMMEDIATE; {script} PRAGMA user_version = 2; COMMIT;")
            elif version < _SCHEMA_VERSION:
                conn.executescript(_SCHEMA + f"PRAGMA user_version = {_SCHEMA_VERSION};")

    @classmethod
    def in_state(cls, state_dir: str | os.PathLike[str], *, create: bool = True) -> ApprovalStore:
        """The store of the node whose state folder is ``state_dir``."""
        return cls(Path(state_dir) / APPROVALS_FILE, create=create)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise UsageError(f"cannot open the approval store {self.path}: {exc}") from None
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"{self.path} is not a usable approval store: {exc}") from None
        finally:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken before reading so decisions cannot race."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- the node's side -----------------------------------------------------------------

    def request(
        self,
        *,
        task_sha256: str,
        job: str,
        task_name: str,
        researcher: str,
        summary: str = "",
        terms: Mapping[str, Any] | None = None,
        origin: str = "",
    ) -> Status:
        """Ask for approval of code with its terms (idempotent); returns where it stands now.

        The same code and terms asked for before keep their first request and its decision: a
        rejected request stays rejected, an approved one is approved for this job too.
        """
        key = approval_id(task_sha256, terms)
        row = (_text("job", job), _text("task_name", task_name), _text("researcher", researcher))
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO requests (approval_id, task_sha256, terms, origin, job, "
                "task_name, researcher, summary, requested_at, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                (key, _full_hash(task_sha256), _canonical(terms), origin, *row, summary, _now()),
            )
            status = conn.execute(
                "SELECT status FROM requests WHERE approval_id = ?", (key,)
            ).fetchone()[0]
        return Status(status)

    def status(self, task_sha256: str, terms: Mapping[str, Any] | None = None) -> Status:
        """The status of exactly this code with these terms; ``UNKNOWN`` if never requested."""
        key = approval_id(task_sha256, terms)
        with self._connect() as conn:
            row = conn.execute(
                "SELECT status FROM requests WHERE approval_id = ?", (key,)
            ).fetchone()
        return Status.UNKNOWN if row is None else Status(row[0])

    def approved_before(self, request: Request) -> Request | None:
        """The latest other approved request of the same code (to show what changed)."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT * FROM requests WHERE task_sha256 = ? AND approval_id != ? "
                "AND status = 'approved' ORDER BY decided_at DESC, approval_id LIMIT 1",
                (request.task_sha256, request.approval_id),
            ).fetchone()
        return None if row is None else _row_to_request(row)

    # -- the steward's side --------------------------------------------------------------

    def approve(
        self, task_sha256_or_prefix: str, *, by: str, reason: str = "", override: bool = False
    ) -> Decision:
        """Approve a task; approving a rejected one needs ``override=True`` (recorded)."""
        return self._decide(task_sha256_or_prefix, Status.APPROVED, by, reason, override)

    def reject(
        self, task_sha256_or_prefix: str, *, by: str, reason: str, override: bool = False
    ) -> Decision:
        """Reject a task, saying why; withdrawing an approval needs ``override=True``."""
        return self._decide(
            task_sha256_or_prefix, Status.REJECTED, by, _text("reason", reason), override
        )

    def _decide(
        self, prefix: str, status: Status, by: str, reason: str, override: bool
    ) -> Decision:
        by = _text("by (who decides)", by)
        with self._transaction() as conn:
            current = self._get(conn, self._resolve(conn, prefix))
            if current.status == status:
                return Decision(current, changed=False, previous=current.status)
            if current.status != Status.PENDING and not override:
                verb = "approve" if status == Status.APPROVED else "reject"
                raise UsageError(
                    f"request {current.approval_id[:12]} was already {current.status} by "
                    f"{current.decided_by} at {current.decided_at}; to {verb} it anyway pass "
                    "override=True (--override), which is recorded"
                )
            now = _now()
            conn.execute(
                "UPDATE requests SET status = ?, decided_at = ?, decided_by = ?, reason = ? "
                "WHERE approval_id = ?",
                (status.value, now, by, reason, current.approval_id),
            )
            conn.execute(
                "INSERT INTO decisions (approval_id, status, decided_at, decided_by, reason, "
                "override) VALUES (?, ?, ?, ?, ?, ?)",
                (current.approval_id, status.value, now, by, reason, int(override)),
            )
            updated = self._get(conn, current.approval_id)
        return Decision(updated, changed=True, previous=current.status)

    # -- reading -------------------------------------------------------------------------

    def get(self, task_sha256_or_prefix: str) -> Request:
        """The request an approval id (or code hash) or an unambiguous prefix names."""
        with self._connect() as conn:
            return self._get(conn, self._resolve(conn, task_sha256_or_prefix))

    def pending(self) -> list[Request]:
        """Requests waiting for a decision, oldest first."""
        return self._select("WHERE status = 'pending'")

    def all(self) -> list[Request]:
        """Every request, oldest first."""
        return self._select("")

    def history(self, task_sha256_or_prefix: str) -> list[HistoryEntry]:
        """Every decision taken on a task, oldest first."""
        with self._connect() as conn:
            digest = self._resolve(conn, task_sha256_or_prefix)
            rows = conn.execute(
                "SELECT * FROM decisions WHERE approval_id = ? ORDER BY id", (digest,)
            ).fetchall()
        return [
            HistoryEntry(
                r["approval_id"],
                Status(r["status"]),
                r["decided_at"],
                r["decided_by"],
                r["reason"],
                bool(r["override"]),
            )
            for r in rows
        ]

    def _select(self, where: str) -> list[Request]:
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT * FROM requests {where} ORDER BY requested_at, approval_id"
            ).fetchall()
        return [_row_to_request(r) for r in rows]

    @staticmethod
    def _get(conn: sqlite3.Connection, digest: str) -> Request:
        row = conn.execute("SELECT * FROM requests WHERE approval_id = ?", (digest,)).fetchone()
        return _row_to_request(row)

    @staticmethod
    def _resolve(conn: sqlite3.Connection, prefix: str) -> str:
        """An approval id from a prefix of at least 8 hex characters of the approval id or of
        the code hash that names one request."""
        text = prefix.strip().lower() if isinstance(prefix, str) else ""
        if not text or not set(text) <= _HEX or len(text) > 64:
            raise UsageError(
                f"{prefix!r} is not a request id; give at least {MIN_PREFIX} hex characters "
                "as shown by `medfed node pending`"
            )
        if len(text) < MIN_PREFIX:
            raise UsageError(
                f"{prefix!r} is too short; give at least {MIN_PREFIX} hex characters of the id"
            )
        matches = [
            r[0]
            for r in conn.execute(
                "SELECT approval_id FROM requests WHERE substr(approval_id, 1, ?) = ? "
                "OR substr(task_sha256, 1, ?) = ? ORDER BY approval_id LIMIT 4",
                (len(text), text, len(text), text),
            )
        ]
        if not matches:
            raise UsageError(
                f"no request at this node has an id or code hash starting with {text}; "
                "`medfed node pending --all` lists them"
            )
        if len(matches) > 1:
            shown = ", ".join(m[:16] for m in matches[:3])
            raise UsageError(
                f"{text} matches more than one request ({shown}…): the same code asked with "
                "other settings, or a short prefix; give the id `medfed node pending` shows"
            )
        return str(matches[0])
