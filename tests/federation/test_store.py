"""The coordinator's store, on a SQLite file and on a real PostgreSQL server.

Every test runs twice: on a fresh SQLite file, and on PostgreSQL in a schema of its own
(created and dropped around the test) when ``MEDFED_TEST_POSTGRES_URL`` names a server;
``.ci/run`` starts a throwaway one and sets it. Without it the PostgreSQL variants are not
generated, and ``test_postgresql_server`` alone skips, saying how to enable them (one line in
the summary rather than one per test).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

import medfed.federation.coordinator.store as store_module
from medfed.federation.coordinator.store import JobRow, Store, metadata

POSTGRES_URL = os.environ.get("MEDFED_TEST_POSTGRES_URL", "")
HOW_TO_ENABLE = (
    "PostgreSQL store tests need a server: set MEDFED_TEST_POSTGRES_URL="
    "postgresql+psycopg://USER@HOST/DB (bash .ci/run starts one and sets it)"
)

SHA_A, SHA_B, SHA_C, SHA_D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def test_postgresql_server() -> None:
    """The server the PostgreSQL variants use is reachable, and is PostgreSQL."""
    if not POSTGRES_URL:
        pytest.skip(HOW_TO_ENABLE)
    engine = create_engine(POSTGRES_URL)
    try:
        assert engine.dialect.name == "postgresql"
        with engine.connect() as c:
            assert "PostgreSQL" in c.execute(text("SELECT version()")).scalar_one()
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"] if POSTGRES_URL else ["sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'coordinator.db'}"
        return
    schema = "medfed_test_" + secrets.token_hex(6)
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
        # every connection of the store sees only this schema (unqualified names resolve here)
        scoped = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store(url)
    try:
        yield s
    finally:
        s.close()


def new_job(store: Store, name: str = "breast-cancer", **config: Any) -> JobRow:
    return store.create_job(
        name=name,
        researcher="bob",
        task_sha256=SHA_C,
        task_name="tasks.mlp",
        config={"rounds": 3, "nested": {"lr": 0.1, "sites": ["s1", "s2"]}, **config},
        initial_sha256=SHA_A,
    )


def new_task(
    store: Store, job_id: str, site: str, *, round: int = 1, operation: str = "train"
) -> int:
    task = store.ensure_task(
        job_id=job_id,
        round=round,
        operation=operation,
        site=site,
        instruction={"round": round, "site": site},
        params_sha256=SHA_A,
    )
    return task.id


def in_threads(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(i)`` in ``n`` threads released together; their results (errors re-raised)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = fn(i)
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def count_rows(store: Store, table: str) -> int:
    with store.engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one())


# -- jobs and rounds --------------------------------------------------------------------------


def test_create_get_list_and_status_of_jobs(store: Store) -> None:
    first = new_job(store, "first")
    time.sleep(0.01)  # jobs are listed by creation time
    second = new_job(store, "second")

    assert first.id.startswith("job-") and first.id != second.id
    assert first.status == "running" and first.rounds_done == 0 and first.error is None
    assert first.params_sha256 == first.initial_sha256 == SHA_A
    assert first.config == {"rounds": 3, "nested": {"lr": 0.1, "sites": ["s1", "s2"]}}
    assert (first.researcher, first.task_sha256, first.task_name) == ("bob", SHA_C, "tasks.mlp")
    assert store.job(first.id) == first
    assert store.job("job-000000000000") is None
    assert [j.id for j in store.jobs()] == [first.id, second.id]

    store.set_job_status(second.id, "failed", "site s2 ran out of memory")
    assert [j.id for j in store.jobs(status="running")] == [first.id]
    (failed,) = store.jobs(status="failed")
    assert (failed.id, failed.error) == (second.id, "site s2 ran out of memory")
    store.set_job_status(second.id, "running")
    assert store.job(second.id).error is None  # type: ignore[union-attr]


def test_record_round_checkpoints_model_and_progress(store: Store) -> None:
    job, other = new_job(store), new_job(store)
    store.record_round(job.id, 1, SHA_B, {"loss": 0.5, "sites": ["s1"]})
    after_one = store.job(job.id)
    assert after_one is not None
    assert (after_one.rounds_done, after_one.params_sha256) == (1, SHA_B)
    assert after_one.initial_sha256 == SHA_A

    store.record_round(job.id, 2, SHA_D, {"loss": 0.25})
    rows = store.rounds(job.id)
    assert [(r["round"], r["params_sha256"], r["summary"]) for r in rows] == [
        (1, SHA_B, {"loss": 0.5, "sites": ["s1"]}),
        (2, SHA_D, {"loss": 0.25}),
    ]
    assert all(isinstance(r["finished_at"], float) and r["job_id"] == job.id for r in rows)
    assert store.job(job.id).rounds_done == 2  # type: ignore[union-attr]
    assert store.rounds(other.id) == []
    assert store.job(other.id).rounds_done == 0  # type: ignore[union-attr]


def test_record_round_is_one_transaction(store: Store) -> None:
    job = new_job(store)
    store.record_round(job.id, 1, SHA_B, {"loss": 0.5})

    # the same round twice: refused, and the job still points at the first checkpoint
    with pytest.raises(SQLIntegrityError):
        store.record_round(job.id, 1, SHA_D, {"loss": 0.1})
    assert (store.job(job.id).rounds_done, store.job(job.id).params_sha256) == (1, SHA_B)  # type: ignore[union-attr]

    # the job's update fails after the round's row was written: the row is rolled back too
    def fail_job_update(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE JOBS"):
            raise RuntimeError("the disk filled up")

    event.listen(store.engine, "before_cursor_execute", fail_job_update)
    try:
        with pytest.raises(RuntimeError, match="disk filled up"):
            store.record_round(job.id, 2, SHA_C, {"loss": 0.2})
    finally:
        event.remove(store.engine, "before_cursor_execute", fail_job_update)
    assert [r["round"] for r in store.rounds(job.id)] == [1]
    assert store.job(job.id).rounds_done == 1  # type: ignore[union-attr]


def test_approvals_per_job_and_site(store: Store) -> None:
    job, other = new_job(store), new_job(store)
    assert store.approvals(job.id) == {}
    store.set_approval(job.id, "s1", "approved")
    store.set_approval(job.id, "s2", "declined")
    store.set_approval(job.id, "s1", "declined")  # a steward changes their mind
    store.set_approval(other.id, "s1", "approved")
    assert store.approvals(job.id) == {"s1": "declined", "s2": "declined"}
    assert store.approvals(other.id) == {"s1": "approved"}
    assert count_rows(store, "job_sites") == 3


def test_concurrent_approvals_of_one_site_do_not_fail(store: Store) -> None:
    job = new_job(store)
    in_threads(6, lambda i: store.set_approval(job.id, "s1", "approved"))
    assert store.approvals(job.id) == {"s1": "approved"}


# -- tasks ----------------------------------------------------------------------------------


def test_ensure_task_is_idempotent(store: Store) -> None:
    job = new_job(store)
    first = store.ensure_task(
        job_id=job.id,
        round=1,
        operation="train",
        site="s1",
        instruction={"lr": 0.1},
        params_sha256=SHA_A,
    )
    # a restarted coordinator asks again, maybe with a different instruction: the same row
    again = store.ensure_task(
        job_id=job.id,
        round=1,
        operation="train",
        site="s1",
        instruction={"lr": 0.9},
        params_sha256=SHA_B,
    )
    assert again == first
    assert (first.instruction, first.params_sha256, first.status) == ({"lr": 0.1}, SHA_A, "pending")
    assert (first.reply, first.reply_sha256) == (None, None)
    others = {
        new_task(store, job.id, "s2"),
        new_task(store, job.id, "s1", round=2),
        new_task(store, job.id, "s1", operation="evaluate"),
    }
    assert first.id not in others and len(others) == 3
    assert count_rows(store, "tasks") == 4


def test_ensure_task_from_concurrent_threads_creates_one_row(store: Store) -> None:
    job = new_job(store)
    for round in range(1, 6):
        ids = in_threads(6, lambda i, r=round: new_task(store, job.id, "s1", round=r))
        assert len(set(ids)) == 1, ids
    assert count_rows(store, "tasks") == 5


def test_next_task_only_for_running_jobs_and_the_right_site(store: Store) -> None:
    job, paused = new_job(store), new_job(store)
    t_s1 = new_task(store, job.id, "s1")
    t_s2 = new_task(store, job.id, "s2")
    new_task(store, paused.id, "s3")
    store.set_job_status(paused.id, "paused")  # not running, not finished: tasks stay open

    assert store.next_task("s3") is None
    assert store.next_task("nobody") is None
    got = store.next_task("s1")
    assert got is not None and (got.id, got.job_id, got.site) == (t_s1, job.id, "s1")
    assert store.task(t_s1).status == "delivered"  # type: ignore[union-attr]
    assert store.task(t_s2).status == "pending"  # type: ignore[union-attr]

    store.set_job_status(paused.id, "running")
    assert store.next_task("s3") is not None


def test_next_task_gives_the_oldest_open_task_first(store: Store) -> None:
    job, later = new_job(store), new_job(store)
    first = new_task(store, job.id, "s1", round=1)
    second = new_task(store, later.id, "s1", round=1)
    assert store.next_task("s1").id == first  # type: ignore[union-attr]
    assert store.complete_task(first, reply={"ok": True}, reply_sha256=None) == "accepted"
    assert store.next_task("s1").id == second  # type: ignore[union-attr]


def test_an_unanswered_task_is_delivered_again(store: Store) -> None:
    job = new_job(store)
    task_id = new_task(store, job.id, "s1")
    # the node crashed after fetching: its next poll gets the same task
    assert store.next_task("s1").id == task_id  # type: ignore[union-attr]
    assert store.next_task("s1").id == task_id  # type: ignore[union-attr]
    assert store.complete_task(task_id, reply={"ok": True}, reply_sha256=SHA_B) == "accepted"
    assert store.next_task("s1") is None


def test_complete_task_accepted_duplicate_and_closed(store: Store) -> None:
    job = new_job(store)
    task_id = new_task(store, job.id, "s1")
    store.next_task("s1")
    reply = {"site": "s1", "round": 1, "metrics": {"loss": 0.3}}

    assert store.complete_task(task_id, reply=reply, reply_sha256=SHA_B) == "accepted"
    done = store.task(task_id)
    assert done is not None
    assert (done.status, done.reply, done.reply_sha256) == ("done", reply, SHA_B)
    # the node retried after a lost response: the same reply is a duplicate, not an error
    assert store.complete_task(task_id, reply=dict(reply), reply_sha256=SHA_B) == "duplicate"
    # a different reply to an answered task is refused, and the first one stays
    assert store.complete_task(task_id, reply=reply, reply_sha256=SHA_C) == "closed"
    assert store.complete_task(task_id, reply={**reply, "round": 2}, reply_sha256=SHA_B) == (
        "closed"
    )
    assert store.task(task_id).reply_sha256 == SHA_B  # type: ignore[union-attr]
    # no such task
    assert store.complete_task(999_999, reply=reply, reply_sha256=None) == "closed"
    # a pending task (never fetched) may be answered too
    pending = new_task(store, job.id, "s2")
    assert store.complete_task(pending, reply={"ok": 1}, reply_sha256=None) == "accepted"


def test_close_tasks_expires_only_open_tasks(store: Store) -> None:
    job = new_job(store)
    late, answered, dropped = (new_task(store, job.id, s) for s in ("s1", "s2", "s3"))
    store.next_task("s1")
    store.complete_task(answered, reply={"ok": True}, reply_sha256=None)
    store.close_tasks([])  # nothing to do
    store.close_tasks([late, answered])
    store.close_tasks([dropped], status="dropped")

    assert store.task(late).status == "expired"  # type: ignore[union-attr]
    assert store.task(answered).status == "done"  # type: ignore[union-attr]
    assert store.task(dropped).status == "dropped"  # type: ignore[union-attr]
    assert store.next_task("s1") is None and store.next_task("s3") is None
    assert store.complete_task(late, reply={"ok": True}, reply_sha256=None) == "closed"
    rows = store.tasks_by_id([late, answered, 424242])
    assert set(rows) == {late, answered} and rows[answered].reply == {"ok": True}
    assert store.tasks_by_id([]) == {}


@pytest.mark.parametrize("final", ["complete", "failed", "cancelled"])
def test_finishing_a_job_closes_its_open_tasks(store: Store, final: str) -> None:
    job, other = new_job(store), new_job(store)
    pending, delivered, answered = (new_task(store, job.id, s) for s in ("s1", "s2", "s3"))
    untouched = new_task(store, other.id, "s1")
    store.next_task("s2")
    store.complete_task(answered, reply={"ok": True}, reply_sha256=None)

    store.set_job_status(job.id, "paused")  # not a final state: nothing closes
    assert store.task(pending).status == "pending"  # type: ignore[union-attr]

    store.set_job_status(job.id, final)
    rows = store.tasks_by_id([pending, delivered, answered])
    statuses = {task_id: row.status for task_id, row in rows.items()}
    assert statuses == {pending: "closed", delivered: "closed", answered: "done"}
    assert store.task(untouched).status == "pending"  # type: ignore[union-attr]
    assert store.complete_task(delivered, reply={"ok": True}, reply_sha256=None) == "closed"


def test_site_may_read_only_its_own_models_and_replies(store: Store) -> None:
    job = new_job(store)
    s1_task = new_task(store, job.id, "s1")  # sent SHA_A
    assert store.site_may_read("s1", SHA_A)
    assert not store.site_may_read("s2", SHA_A)  # s2 has no task of this job
    store.complete_task(s1_task, reply={"ok": True}, reply_sha256=SHA_D)
    new_task(store, job.id, "s2")
    assert store.site_may_read("s1", SHA_D)
    assert store.site_may_read("s2", SHA_A)
    assert not store.site_may_read("s2", SHA_D)  # another site's update
    assert not store.site_may_read("s1", SHA_B)


# -- replay protection, audit, identities ----------------------------------------------------


def test_remember_nonce_refuses_a_replay(store: Store) -> None:
    later = time.time() + 300
    assert store.remember_nonce(SHA_A, "0" * 32, later) is True
    assert store.remember_nonce(SHA_A, "0" * 32, later) is False
    assert store.remember_nonce(SHA_B, "0" * 32, later) is True  # another certificate
    assert store.remember_nonce(SHA_A, "1" * 128, later) is True
    # the store stays usable after a refused insert (PostgreSQL aborts that transaction)
    assert store.remember_nonce(SHA_A, "2" * 32, later) is True


def test_expired_nonces_are_purged(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    assert store.remember_nonce(SHA_A, "e" * 32, now - 10)
    monkeypatch.setattr(store_module.secrets, "randbelow", lambda _n: 0)  # purge on this call
    assert store.remember_nonce(SHA_A, "f" * 32, now + 300)
    assert count_rows(store, "nonces") == 1


def test_concurrent_uses_of_one_nonce_accept_exactly_one(store: Store) -> None:
    for k in range(5):
        nonce = secrets.token_hex(16)
        results = in_threads(8, lambda i, n=nonce: store.remember_nonce(SHA_A, n, 1e12))
        assert sorted(results) == [False] * 7 + [True], (k, results)


def test_audit_log_order_limit_and_target_prefix(store: Store) -> None:
    targets = ["job-1", "job-1/r1/train", "job-2/r1/train", "job_1", "job-10%", ""]
    for i, target in enumerate(targets):
        store.audit(principal="bob", role="researcher", action=f"a{i}", target=target)
    log = store.audit_log()
    assert [e["action"] for e in log] == [f"a{i}" for i in range(len(targets))]  # oldest first
    assert [e["target"] for e in log] == targets
    assert log[0]["outcome"] == "ok" and log[0]["detail"] == ""
    assert [e["action"] for e in store.audit_log(limit=2)] == ["a4", "a5"]  # the latest two

    def with_prefix(prefix: str) -> list[str]:
        return [e["target"] for e in store.audit_log(target_prefix=prefix)]

    assert with_prefix("job-1") == ["job-1", "job-1/r1/train", "job-10%"]
    # LIKE's wildcards in a prefix are literal characters
    assert with_prefix("job_") == ["job_1"]
    assert with_prefix("job-10%") == ["job-10%"]
    assert with_prefix("%") == []
    assert with_prefix("job-") == ["job-1", "job-1/r1/train", "job-2/r1/train", "job-10%"]


def test_audit_fits_long_values_into_their_columns(store: Store) -> None:
    # a refused request's action quotes its URL path, which the caller chose
    store.audit(
        principal="p" * 100,
        role="r" * 40,
        action="GET /v1/blobs/" + "a" * 200,
        target="t" * 300,
        outcome="refused-" * 5,
        detail="d" * 5000,
    )
    (entry,) = store.audit_log()
    assert entry["action"] == ("GET /v1/blobs/" + "a" * 200)[:64]
    assert (len(entry["principal"]), len(entry["role"]), len(entry["target"])) == (64, 16, 200)
    assert (len(entry["outcome"]), len(entry["detail"])) == (16, 2000)


def test_participants_touch_revoke_and_is_revoked(store: Store) -> None:
    store.touch_participant("s1", "site", SHA_A)
    (seen,) = store.participants()
    assert (seen["name"], seen["role"], seen["fingerprint"]) == ("s1", "site", SHA_A)
    assert seen["revoked"] is False and seen["first_seen"] == seen["last_seen"]
    assert store.is_revoked("s1") is False

    time.sleep(0.01)
    store.touch_participant("s1", "site", SHA_B)  # a reissued certificate
    (again,) = store.participants()
    assert again["fingerprint"] == SHA_B
    assert again["first_seen"] == seen["first_seen"] and again["last_seen"] > seen["last_seen"]

    assert store.revoke("s1", "laptop stolen") is True
    assert store.is_revoked("s1") is True
    store.touch_participant("s1", "site", SHA_B)  # being seen again does not lift it
    assert store.is_revoked("s1") is True
    # an identity may be revoked before it was ever seen: False says it was never seen
    assert store.revoke("s9", "never joined") is False
    assert store.revoke("s9", "never joined, again") is False
    assert store.is_revoked("s9") is True and store.is_revoked("s2") is False
    rows = {p["name"]: p for p in store.participants()}
    assert list(rows) == ["s1", "s9"]
    assert rows["s1"]["revoked_reason"] == "laptop stolen" and rows["s1"]["revoked_at"] > 0
    assert rows["s9"]["role"] == "unknown" and rows["s9"]["revoked"] is True


def test_first_requests_of_a_new_participant_in_parallel(store: Store) -> None:
    in_threads(6, lambda i: store.touch_participant("s1", "site", SHA_A))
    in_threads(4, lambda i: store.revoke("s2", "compromised"))
    assert [p["name"] for p in store.participants()] == ["s1", "s2"]
    assert store.is_revoked("s2") and not store.is_revoked("s1")


# -- uploads --------------------------------------------------------------------------------


def test_uploads_resume_mark_chunks_and_finish(store: Store) -> None:
    up = store.create_upload(owner="s1", sha256=SHA_A, size=10, chunk_size=4)
    assert (up["owner"], up["sha256"], up["size"], up["chunk_size"]) == ("s1", SHA_A, 10, 4)
    assert json.loads(up["received"]) == [] and up["done"] is False
    # the node restarted mid-upload and asks again: the same upload, to resume
    assert store.create_upload(owner="s1", sha256=SHA_A, size=10, chunk_size=4)["id"] == up["id"]
    # another owner, or another size, is another upload
    assert store.create_upload(owner="s2", sha256=SHA_A, size=10, chunk_size=4)["id"] != up["id"]
    assert store.create_upload(owner="s1", sha256=SHA_A, size=11, chunk_size=4)["id"] != up["id"]

    store.mark_chunk(up["id"], 2)
    store.mark_chunk(up["id"], 0)
    store.mark_chunk(up["id"], 2)  # a resent chunk
    store.mark_chunk("no-such-upload", 0)
    current = store.upload(up["id"])
    assert current is not None and json.loads(current["received"]) == [0, 2]
    assert store.upload("no-such-upload") is None

    store.finish_upload(up["id"])
    assert store.upload(up["id"])["done"] is True  # type: ignore[index]
    fresh = store.create_upload(owner="s1", sha256=SHA_A, size=10, chunk_size=4)
    assert fresh["id"] != up["id"]


def test_uploads_larger_than_two_gib(store: Store) -> None:
    size = 5 << 30
    up = store.create_upload(owner="s1", sha256=SHA_B, size=size, chunk_size=8 << 20)
    assert store.upload(up["id"])["size"] == size  # type: ignore[index]


def test_chunks_marked_in_parallel_are_all_kept(store: Store) -> None:
    up = store.create_upload(owner="s1", sha256=SHA_C, size=48, chunk_size=1)

    def mark(i: int) -> None:
        for index in range(i, 48, 6):
            store.mark_chunk(up["id"], index)

    in_threads(6, mark)
    assert json.loads(store.upload(up["id"])["received"]) == list(range(48))  # type: ignore[index]


# -- durability ------------------------------------------------------------------------------


def test_everything_survives_a_restart(url: str) -> None:
    first = Store(url)
    try:
        job = new_job(first)
        first.record_round(job.id, 1, SHA_B, {"loss": 0.5})
        first.set_approval(job.id, "s1", "approved")
        task_id = new_task(first, job.id, "s1", round=2)
        first.next_task("s1")
        first.complete_task(task_id, reply={"ok": True}, reply_sha256=SHA_D)
        open_task = new_task(first, job.id, "s2", round=2)
        assert first.remember_nonce(SHA_A, "9" * 32, 1e12)
        first.audit(principal="bob", role="researcher", action="job.submit", target=job.id)
        first.touch_participant("s1", "site", SHA_A)
        first.revoke("s2", "compromised")
        up = first.create_upload(owner="s1", sha256=SHA_C, size=10, chunk_size=4)
        first.mark_chunk(up["id"], 1)
    finally:
        first.close()

    second = Store(url)
    try:
        again = second.job(job.id)
        assert again is not None
        assert (again.status, again.rounds_done, again.params_sha256) == ("running", 1, SHA_B)
        assert [r["summary"] for r in second.rounds(job.id)] == [{"loss": 0.5}]
        assert second.approvals(job.id) == {"s1": "approved"}
        done = second.task(task_id)
        assert done is not None and (done.status, done.reply_sha256) == ("done", SHA_D)
        assert second.complete_task(task_id, reply={"ok": True}, reply_sha256=SHA_D) == "duplicate"
        assert second.next_task("s2").id == open_task  # type: ignore[union-attr]
        assert second.remember_nonce(SHA_A, "9" * 32, 1e12) is False  # still a replay
        assert [e["action"] for e in second.audit_log(target_prefix=job.id)] == ["job.submit"]
        assert second.is_revoked("s2") and not second.is_revoked("s1")
        resumed = second.create_upload(owner="s1", sha256=SHA_C, size=10, chunk_size=4)
        assert resumed["id"] == up["id"] and json.loads(resumed["received"]) == [1]
    finally:
        second.close()
