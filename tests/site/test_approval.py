"""Task approval: decisions are durable, taken once, and named by unambiguous hash prefixes."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from medfed.errors import UsageError
from medfed.site.approval import APPROVALS_FILE, ApprovalStore, Status, approval_id


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


A = _sha("task bundle a")
B = _sha("task bundle b")


@pytest.fixture
def store(tmp_path: Path) -> ApprovalStore:
    return ApprovalStore.in_state(tmp_path / "state")


def _ask(store: ApprovalStore, digest: str, job: str = "job-1") -> Status:
    return store.request(
        task_sha256=digest, job=job, task_name="mlp", researcher="dr-who", summary="an MLP"
    )


def test_a_new_task_is_pending_until_approved(store: ApprovalStore) -> None:
    assert store.status(A) == Status.UNKNOWN
    assert _ask(store, A) == Status.PENDING
    assert store.status(A) == Status.PENDING
    [req] = store.pending()
    assert (req.task_sha256, req.job, req.task_name, req.researcher) == (
        A,
        "job-1",
        "mlp",
        "dr-who",
    )
    assert req.summary == "an MLP" and req.decided_at is None
    decision = store.approve(A[:8], by="steward", reason="reviewed")
    assert decision.changed and decision.previous == Status.PENDING
    assert decision.request.status == Status.APPROVED and decision.request.decided_by == "steward"
    assert store.status(A) == Status.APPROVED and store.pending() == []


def test_request_is_idempotent_and_an_approval_covers_the_hash(store: ApprovalStore) -> None:
    _ask(store, A, "job-1")
    store.approve(A, by="steward")
    assert _ask(store, A, "job-2") == Status.APPROVED
    assert [r.job for r in store.all()] == ["job-1"]


def test_approvals_survive_reopening(tmp_path: Path) -> None:
    first = ApprovalStore.in_state(tmp_path)
    _ask(first, A)
    _ask(first, B)
    first.approve(A[:10], by="steward")
    first.reject(B[:10], by="steward", reason="exports raw rows")
    again = ApprovalStore(tmp_path / APPROVALS_FILE, create=False)
    assert again.status(A) == Status.APPROVED
    assert again.status(B) == Status.REJECTED
    assert again.get(B[:8]).reason == "exports raw rows"


def test_rejected_stays_rejected(store: ApprovalStore) -> None:
    _ask(store, A)
    store.reject(A[:8], by="steward", reason="no")
    assert _ask(store, A, "job-again") == Status.REJECTED
    with pytest.raises(UsageError, match="override"):
        store.approve(A[:8], by="steward")
    assert store.status(A) == Status.REJECTED


def test_a_decision_is_taken_once_and_overrides_are_recorded(store: ApprovalStore) -> None:
    _ask(store, A)
    store.approve(A[:8], by="alice")
    again = store.approve(A[:8], by="bob")
    assert not again.changed and again.request.decided_by == "alice"
    with pytest.raises(UsageError, match="override"):
        store.reject(A[:8], by="bob", reason="changed my mind")
    withdrawn = store.reject(A[:8], by="bob", reason="changed my mind", override=True)
    assert withdrawn.changed and withdrawn.previous == Status.APPROVED
    back = store.approve(A[:8], by="carol", reason="fixed", override=True)
    assert back.request.status == Status.APPROVED
    history = store.history(A[:8])
    assert [(h.status, h.decided_by, h.override) for h in history] == [
        (Status.APPROVED, "alice", False),
        (Status.REJECTED, "bob", True),
        (Status.APPROVED, "carol", True),
    ]


def test_prefix_rules(store: ApprovalStore) -> None:
    twin_a, twin_b = "abcdef01" + "0" * 56, "abcdef01" + "1" * 56
    for digest in (twin_a, twin_b, A):
        _ask(store, digest)
    with pytest.raises(UsageError, match="more than one"):
        store.approve("abcdef01", by="s")
    assert store.approve("abcdef010", by="s").request.task_sha256 == twin_a
    with pytest.raises(UsageError, match="too short"):
        store.approve(A[:7], by="s")
    with pytest.raises(UsageError, match="not a request id"):
        store.approve("xyz12345", by="s")
    with pytest.raises(UsageError, match="no request"):
        store.approve("12345678" if not A.startswith("12345678") else "87654321", by="s")
    assert store.approve(A.upper()[:12], by="s").request.task_sha256 == A


def test_errors_are_one_sentence_usage_errors(store: ApprovalStore, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="64 hex"):
        store.status(A[:20])
    with pytest.raises(UsageError, match="job"):
        store.request(task_sha256=A, job="", task_name="t", researcher="r")
    _ask(store, A)
    with pytest.raises(UsageError, match="reason"):
        store.reject(A, by="s", reason=" ")
    with pytest.raises(UsageError, match="by"):
        store.approve(A, by="")
    with pytest.raises(UsageError, match="no approval store"):
        ApprovalStore.in_state(tmp_path / "elsewhere", create=False)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, just text" * 10)
    with pytest.raises(UsageError, match="approval store"):
        ApprovalStore(junk)


def test_a_failed_decision_changes_nothing(store: ApprovalStore) -> None:
    _ask(store, A)
    store.reject(A, by="s", reason="no")
    with pytest.raises(UsageError):
        store.approve(A, by="s")
    assert store.history(A)[-1].status == Status.REJECTED and len(store.history(A)) == 1
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


TERMS = {"dataset": "breast-cancer", "train": {"local_epochs": 1}, "rounds": 5}


def _ask_terms(store: ApprovalStore, terms: dict, job: str = "job-1") -> Status:
    return store.request(
        task_sha256=A,
        job=job,
        task_name="mlp",
        researcher="dr-who",
        terms=terms,
        origin="researcher dr-who, job 'study' via https://coordinator",
    )


def test_an_approval_covers_the_code_with_its_terms_only(store: ApprovalStore) -> None:
    assert _ask_terms(store, TERMS) == Status.PENDING
    [req] = store.pending()
    assert req.approval_id == approval_id(A, TERMS) != A
    assert req.terms == TERMS and "dr-who" in req.origin
    store.approve(req.approval_id[:8], by="steward")
    assert store.status(A, TERMS) == Status.APPROVED
    # the same settings in another order are the same terms
    assert store.status(A, dict(reversed(list(TERMS.items())))) == Status.APPROVED
    # the same code with more epochs, for another data set, or by the hash alone: not covered
    more_epochs = {**TERMS, "train": {"local_epochs": 1000}}
    other_data = {**TERMS, "dataset": "heart-disease"}
    for terms in (more_epochs, other_data):
        assert store.status(A, terms) == Status.UNKNOWN
        assert _ask_terms(store, terms, job="job-2") == Status.PENDING
    assert store.status(A) == Status.UNKNOWN
    new = next(r for r in store.pending() if r.terms == more_epochs)
    before = store.approved_before(new)
    assert before is not None and before.terms == TERMS
    # the code hash alone now names three requests: the steward must say which
    with pytest.raises(UsageError, match="more than one"):
        store.approve(A[:12], by="steward")


def test_terms_must_be_plain_and_bounded(store: ApprovalStore) -> None:
    with pytest.raises(UsageError, match="plain JSON"):
        _ask_terms(store, {"x": float("nan")})
    with pytest.raises(UsageError, match="KiB"):
        _ask_terms(store, {"x": "a" * (70 << 10)})
    assert store.all() == []


def test_a_schema_1_store_is_migrated_and_its_code_only_approvals_cover_no_terms(
    tmp_path: Path,
) -> None:
    path = tmp_path / APPROVALS_FILE
    with sqlite3.connect(path) as conn:  # what medfed wrote before terms were bound
        conn.executescript(
            """
            CREATE TABLE requests (task_sha256 TEXT PRIMARY KEY, job TEXT NOT NULL,
              task_name TEXT NOT NULL, researcher TEXT NOT NULL, summary TEXT NOT NULL DEFAULT '',
              requested_at TEXT NOT NULL, status TEXT NOT NULL, decided_at TEXT,
              decided_by TEXT, reason TEXT NOT NULL DEFAULT '');
            CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, task_sha256 TEXT
              NOT NULL, status TEXT NOT NULL, decided_at TEXT NOT NULL, decided_by TEXT NOT NULL,
              reason TEXT NOT NULL, override INTEGER NOT NULL);
            PRAGMA user_version = 1;
            """
        )
        conn.execute(
            "INSERT INTO requests VALUES (?, 'job-0', 'mlp', 'dr-who', '', "
            "'2026-01-01T00:00:00+00:00', 'approved', '2026-01-01T00:01:00+00:00', 'steward', "
            "'ok')",
            (A,),
        )
        conn.execute(
            "INSERT INTO decisions VALUES (1, ?, 'approved', '2026-01-01T00:01:00+00:00', "
            "'steward', 'ok', 0)",
            (A,),
        )
    conn.close()
    store = ApprovalStore(path)
    [old] = store.all()
    assert old.terms is None and old.status == Status.APPROVED
    assert [h.decided_by for h in store.history(A[:8])] == ["steward"]
    assert store.status(A) == Status.APPROVED  # the code-only decision is kept as it was
    assert store.status(A, TERMS) == Status.UNKNOWN  # and covers no job with terms
    assert _ask_terms(store, TERMS) == Status.PENDING
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
