"""The egress ledger: real files, every kind of tampering found, concurrent appends stay a chain."""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from medfed.errors import IntegrityError
from medfed.site.ledger import (
    GENESIS,
    LEDGER_FILE,
    EgressLedger,
    LedgerHead,
    canonical_json,
)


def _fill(path: Path, n: int = 4) -> EgressLedger:
    book = EgressLedger(path)
    for i in range(n):
        book.append(
            job=f"job-{i % 2}",
            round=i,
            kind="update",
            destination="https://coordinator.example:8443",
            data=f"payload {i}".encode(),
            epsilon=0.25 if i % 2 == 0 else None,
            delta=1e-5 if i % 2 == 0 else None,
            note="héllo" if i == 1 else "",
        )
    return book


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _rehash(d: dict[str, object]) -> bytes:
    """A forger's line: fields changed, hash recomputed, canonical form kept."""
    body = {k: v for k, v in d.items() if k != "hash"}
    d = {**body, "hash": hashlib.sha256(canonical_json(body)).hexdigest()}
    return canonical_json(d) + b"\n"


def test_entries_form_a_chain_with_the_documented_fields(tmp_path: Path) -> None:
    book = _fill(tmp_path / LEDGER_FILE)
    entries = list(book.entries())
    assert [e.seq for e in entries] == [0, 1, 2, 3]
    assert entries[0].prev == GENESIS
    assert all(b.prev == a.hash for a, b in itertools.pairwise(entries))
    first = json.loads(_lines(book.path)[0])
    assert set(first) == {
        "seq",
        "time",
        "job",
        "round",
        "kind",
        "destination",
        "bytes",
        "sha256",
        "epsilon",
        "delta",
        "note",
        "prev",
        "hash",
    }
    assert first["bytes"] == len(b"payload 0")
    assert first["sha256"] == hashlib.sha256(b"payload 0").hexdigest()
    assert first["time"].endswith("+00:00")
    body = {k: v for k, v in first.items() if k != "hash"}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert first["hash"] == hashlib.sha256(raw.encode()).hexdigest()
    assert entries[1].note == "héllo" and entries[1].epsilon is None


def test_verify_and_head_of_an_intact_ledger(tmp_path: Path) -> None:
    book = _fill(tmp_path / LEDGER_FILE)
    check = book.verify()
    assert check.ok and check.count == 4 and check.first_bad_seq is None
    head = book.head()
    assert head == LedgerHead(4, list(book.entries())[-1].hash) and check.head == head.hash
    assert LedgerHead.parse(str(head)) == head
    empty = EgressLedger(tmp_path / "none.jsonl")
    assert empty.verify().ok and empty.head() == LedgerHead(0, GENESIS)


def test_streamed_message_is_recorded_by_size_and_digest(tmp_path: Path) -> None:
    book = EgressLedger(tmp_path / LEDGER_FILE)
    digest = "AB" * 32
    entry = book.append(
        job="j", round=None, kind="hello", destination="coord", nbytes=10, sha256=digest
    )
    assert entry.bytes == 10 and entry.sha256 == digest.lower() and entry.round is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": b"x", "nbytes": 2},
        {"data": b"x", "sha256": "0" * 64},
        {"nbytes": 3},
        {"nbytes": -1, "sha256": "0" * 64},
        {"data": b"x", "epsilon": float("nan")},
        {"data": b"x", "epsilon": -1.0},
        {"data": b"x", "delta": 1.0},
        {"data": b"x", "job": ""},
        {"data": b"x", "round": -1},
    ],
)
def test_invalid_arguments_write_nothing(tmp_path: Path, kwargs: dict[str, object]) -> None:
    book = EgressLedger(tmp_path / LEDGER_FILE)
    args: dict[str, object] = {"job": "j", "round": 1, "kind": "update", "destination": "c"}
    with pytest.raises(ValueError):
        book.append(**{**args, **kwargs})  # type: ignore[arg-type]
    assert not book.exists()


def _tampered(path: Path, how: str) -> None:
    lines = _lines(path)
    if how == "edit a field":
        lines[1] = lines[1].replace(b'"kind":"update"', b'"kind":"metric"')
    elif how == "edit a number":
        d = json.loads(lines[2])
        d["bytes"] += 1
        lines[2] = canonical_json(d) + b"\n"
    elif how == "delete a line":
        del lines[1]
    elif how == "swap two lines":
        lines[1], lines[2] = lines[2], lines[1]
    elif how == "truncate mid-line":
        lines[-1] = lines[-1][:25]
    elif how == "insert a forged line":
        forged = json.loads(lines[1])
        forged.update(seq=1, prev="f" * 64, note="forged")
        lines.insert(1, _rehash(forged))
    elif how == "forge a line in place":
        forged = json.loads(lines[2])
        forged.update(bytes=1, sha256="0" * 64)
        lines[2] = _rehash(forged)
    elif how == "renumber":
        d = json.loads(lines[3])
        d["seq"] = 7
        lines[3] = _rehash(d)
    elif how == "re-encode":
        lines[0] = json.dumps(json.loads(lines[0])).encode() + b"\n"  # same values, spaces
    elif how == "blank line":
        lines.insert(2, b"\n")
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize(
    ("how", "bad_seq", "needle"),
    [
        ("edit a field", 1, "hash does not match"),
        ("edit a number", 2, "hash does not match"),
        ("delete a line", 1, "seq"),
        ("swap two lines", 1, "seq"),
        ("truncate mid-line", 3, "torn"),
        ("insert a forged line", 1, "prev"),
        ("forge a line in place", 3, "prev"),
        ("renumber", 3, "seq"),
        ("re-encode", 0, "canonical"),
        ("blank line", 2, "JSON"),
    ],
)
def test_every_tampering_is_found(tmp_path: Path, how: str, bad_seq: int, needle: str) -> None:
    book = _fill(tmp_path / LEDGER_FILE)
    _tampered(book.path, how)
    check = EgressLedger(book.path).verify()
    assert not check.ok
    assert check.first_bad_seq == bad_seq and check.count == bad_seq
    assert needle in check.reason, check.reason
    assert check.torn == (how == "truncate mid-line")


@pytest.mark.parametrize("how", ["edit a field", "truncate mid-line", "swap two lines"])
def test_append_refuses_a_ledger_that_does_not_verify(tmp_path: Path, how: str) -> None:
    book = _fill(tmp_path / LEDGER_FILE)
    _tampered(book.path, how)
    before = book.path.read_bytes()
    fresh = EgressLedger(book.path)
    with pytest.raises(IntegrityError, match="nothing was recorded"):
        fresh.append(job="j", round=9, kind="update", destination="c", data=b"x")
    assert book.path.read_bytes() == before


def test_append_checks_what_other_writers_added(tmp_path: Path) -> None:
    ours = _fill(tmp_path / LEDGER_FILE, 2)
    theirs = EgressLedger(ours.path)
    theirs.append(job="j", round=2, kind="update", destination="c", data=b"theirs")
    with ours.path.open("ab") as fh:
        fh.write(b'{"not":"an entry"}\n')
    with pytest.raises(IntegrityError):
        ours.append(job="j", round=3, kind="update", destination="c", data=b"ours")


def test_entries_stop_at_a_bad_line(tmp_path: Path) -> None:
    book = _fill(tmp_path / LEDGER_FILE)
    _tampered(book.path, "edit a field")
    seen = []
    with pytest.raises(IntegrityError, match="line 2"):
        for entry in book.entries():
            seen.append(entry.seq)
    assert seen == [0]


def test_repair_sets_a_torn_tail_aside_and_appends_go_on(tmp_path: Path) -> None:
    book = _fill(tmp_path / LEDGER_FILE)
    whole = book.path.read_bytes()
    torn = whole + b'{"seq":4,"ti'
    book.path.write_bytes(torn)
    aside = book.repair()
    assert aside is not None and aside.read_bytes() == b'{"seq":4,"ti'
    assert book.path.read_bytes() == whole
    assert book.repair() is None
    entry = book.append(job="j", round=4, kind="update", destination="c", data=b"after")
    assert entry.seq == 4 and book.verify().ok


def test_repair_refuses_anything_but_a_torn_tail(tmp_path: Path) -> None:
    book = _fill(tmp_path / LEDGER_FILE)
    _tampered(book.path, "delete a line")
    before = book.path.read_bytes()
    with pytest.raises(IntegrityError, match="cannot be repaired"):
        book.repair()
    assert book.path.read_bytes() == before


def test_anchor_catches_entries_cut_from_the_end(tmp_path: Path) -> None:
    book = _fill(tmp_path / LEDGER_FILE)
    anchor = book.head()
    book.append(job="j", round=5, kind="metrics", destination="c", data=b"later")
    assert book.verify(anchor=anchor).ok  # growing is fine
    lines = _lines(book.path)
    book.path.write_bytes(b"".join(lines[:3]))  # a clean chain, but shorter
    assert book.verify().ok
    check = book.verify(anchor=anchor)
    assert not check.ok and "removed from the end" in check.reason
    other = LedgerHead(2, "e" * 64)
    assert not book.verify(anchor=other).ok


def test_totals_per_job(tmp_path: Path) -> None:
    book = _fill(tmp_path / LEDGER_FILE)
    totals = book.totals()
    assert list(totals) == ["job-0", "job-1"]
    assert totals["job-0"].messages == 2 and totals["job-0"].epsilon == pytest.approx(0.5)
    assert totals["job-0"].bytes == len(b"payload 0") + len(b"payload 2")
    assert totals["job-1"].epsilon is None


def _append_many(path: str, worker: int, n: int) -> None:
    book = EgressLedger(path)
    for i in range(n):
        book.append(
            job=f"w{worker}", round=i, kind="update", destination="c", data=f"{worker}/{i}".encode()
        )


def test_concurrent_appends_from_two_processes_stay_one_chain(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 40)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    check = EgressLedger(path).verify()
    assert check.ok, check.reason
    assert check.count == 80
    totals = EgressLedger(path).totals()
    assert totals["w0"].messages == totals["w1"].messages == 40


_TEMPLATE: bytes | None = None


def _template() -> bytes:
    global _TEMPLATE
    if _TEMPLATE is None:
        with tempfile.TemporaryDirectory() as d:
            _TEMPLATE = _fill(Path(d) / LEDGER_FILE, 3).path.read_bytes()
    return _TEMPLATE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_single_byte_change_is_found(data: st.DataObject) -> None:
    original = _template()
    pos = data.draw(st.integers(0, len(original) - 1), label="position")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != original[pos]), label="byte")
    changed = bytearray(original)
    changed[pos] = new
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / LEDGER_FILE
        path.write_bytes(bytes(changed))
        assert not EgressLedger(path).verify().ok
