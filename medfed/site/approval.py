"""Task approval at the node: code runs only after the data steward approved that exact code.

A job arrives with the sha256 of its task bundle. The node calls :meth:`ApprovalStore.request`
(idempotent) and runs the job only when :meth:`ApprovalStore.status` is ``APPROVED``. The
steward decides with ``medfed node approve|reject`` (:meth:`~ApprovalStore.approve`,
:meth:`~ApprovalStore.reject`), naming the task by at least 8 hex characters of its hash.

An approval covers the *code hash*: a later job with the same bundle is covered too, and any
change to the bundle is a new hash that waits for a new decision. A decision is taken once:
repeating it changes nothing, and changing it (approving what was rejected, or withdrawing an
approval) needs ``override=True``. Every decision is kept in :meth:`~ApprovalStore.history`.

The store is one SQLite file (``approvals.sqlite`` in the node's state folder), opened per
operation, so the node agent and the steward's commands can use it at the same time.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from medfed.errors import UsageError

__all__ = [
    "APPROVALS_FILE",
    "ApprovalStore",
    "Decision",
    "HistoryEntry",
    "Request",
    "Status",
]

APPROVALS_FILE = "approvals.sqlite"
"""File name of the approval store inside a node's state folder."""

MIN_PREFIX = 8
_SCHEMA_VERSION = 1
_HEX = frozenset("0123456789abcdef")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    task_sha256  TEXT PRIMARY KEY CHECK (length(task_sha256) = 64),
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
CREATE TABLE IF NOT EXISTS decisions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task_sha256  TEXT NOT NULL REFERENCES requests (task_sha256),
    status       TEXT NOT NULL CHECK (status IN ('approved', 'rejected')),
    decided_at   TEXT NOT NULL,
    decided_by   TEXT NOT NULL,
    reason       TEXT NOT NULL,
    override     INTEGER NOT NULL
);
"""


class Status(StrEnum):
    """Where a task hash stands. ``UNKNOWN``: never requested at this node."""

    UNKNOWN = "unknown"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Request:
    """A task hash a job asked to run, and the steward's decision on it (if any)."""

    task_sha256: str
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

    task_sha256: str
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
        task_sha256=row["task_sha256"],
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
            if version < _SCHEMA_VERSION:
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
        self, *, task_sha256: str, job: str, task_name: str, researcher: str, summary: str = ""
    ) -> Status:
        """Ask for approval of a task hash (idempotent); returns where it stands now.

        A hash asked for before keeps its first request and its decision: a rejected hash
        stays rejected, an approved one is approved for this job too.
        """
        digest = _full_hash(task_sha256)
        row = (_text("job", job), _text("task_name", task_name), _text("researcher", researcher))
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO requests (task_sha256, job, task_name, researcher, "
                "summary, requested_at, status) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                (digest, *row, summary or "", _now()),
            )
            status = conn.execute(
                "SELECT status FROM requests WHERE task_sha256 = ?", (digest,)
            ).fetchone()[0]
        return Status(status)

    def status(self, task_sha256: str) -> Status:
        """The status of an exact hash (no prefixes here); ``UNKNOWN`` if never requested."""
        digest = _full_hash(task_sha256)
        with self._connect() as conn:
            row = conn.execute(
                "SELECT status FROM requests WHERE task_sha256 = ?", (digest,)
            ).fetchone()
        return Status.UNKNOWN if row is None else Status(row[0])

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
                    f"task {current.task_sha256[:12]} was already {current.status} by "
                    f"{current.decided_by} at {current.decided_at}; to {verb} it anyway pass "
                    "override=True (--override), which is recorded"
                )
            now = _now()
            conn.execute(
                "UPDATE requests SET status = ?, decided_at = ?, decided_by = ?, reason = ? "
                "WHERE task_sha256 = ?",
                (status.value, now, by, reason, current.task_sha256),
            )
            conn.execute(
                "INSERT INTO decisions (task_sha256, status, decided_at, decided_by, reason, "
                "override) VALUES (?, ?, ?, ?, ?, ?)",
                (current.task_sha256, status.value, now, by, reason, int(override)),
            )
            updated = self._get(conn, current.task_sha256)
        return Decision(updated, changed=True, previous=current.status)

    # -- reading -------------------------------------------------------------------------

    def get(self, task_sha256_or_prefix: str) -> Request:
        """The request a hash or unambiguous prefix names."""
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
                "SELECT * FROM decisions WHERE task_sha256 = ? ORDER BY id", (digest,)
            ).fetchall()
        return [
            HistoryEntry(
                r["task_sha256"],
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
                f"SELECT * FROM requests {where} ORDER BY requested_at, task_sha256"
            ).fetchall()
        return [_row_to_request(r) for r in rows]

    @staticmethod
    def _get(conn: sqlite3.Connection, digest: str) -> Request:
        row = conn.execute("SELECT * FROM requests WHERE task_sha256 = ?", (digest,)).fetchone()
        return _row_to_request(row)

    @staticmethod
    def _resolve(conn: sqlite3.Connection, prefix: str) -> str:
        """A full hash from a prefix of at least 8 hex characters that names one request."""
        text = prefix.strip().lower() if isinstance(prefix, str) else ""
        if not text or not set(text) <= _HEX or len(text) > 64:
            raise UsageError(
                f"{prefix!r} is not a task hash; give at least {MIN_PREFIX} hex characters "
                "as shown by `medfed node pending`"
            )
        if len(text) < MIN_PREFIX:
            raise UsageError(
                f"{prefix!r} is too short; give at least {MIN_PREFIX} hex characters of the hash"
            )
        matches = [
            r[0]
            for r in conn.execute(
                "SELECT task_sha256 FROM requests WHERE substr(task_sha256, 1, ?) = ? "
                "ORDER BY task_sha256 LIMIT 4",
                (len(text), text),
            )
        ]
        if not matches:
            raise UsageError(
                f"no task at this node has a hash starting with {text}; "
                "`medfed node pending --all` lists them"
            )
        if len(matches) > 1:
            shown = ", ".join(m[:16] for m in matches[:3])
            raise UsageError(f"{text} matches more than one task ({shown}…); give more characters")
        return str(matches[0])
