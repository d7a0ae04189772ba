"""The site's egress ledger: every message that leaves the hospital, in a hash-chained log.

The node calls :meth:`EgressLedger.append` *before* each upload; the upload happens only
after the entry is on disk (written, flushed, fsynced). The file is JSON lines, one entry per
line, each line the canonical JSON (sorted keys, no spaces, UTF-8) of::

    seq          0, 1, 2, … — the line number
    time         UTC, ISO-8601
    job          job id
    round        round number, or null (e.g. a "hello")
    kind         "update", "metrics", "failure", "hello", …
    destination  where it went (URL or name)
    bytes        size of what left
    sha256       hex sha256 of what left
    epsilon      privacy cost of *this* message when known (not cumulative), else null
    delta        its delta, else null
    note         free text, may be ""
    prev         ``hash`` of the previous entry; 64 zeros for the first
    hash         sha256 of the canonical JSON of the entry without ``hash``

:meth:`EgressLedger.verify` re-reads the whole file and finds edited fields, deleted,
inserted or reordered lines, wrong ``seq`` and a torn last line (a crash mid-write).
A chain cannot show that entries were cut *from the end*: for that, write down
:meth:`EgressLedger.head` (count and last hash, printed by ``medfed node ledger verify``)
and check it later with ``verify(anchor=...)`` / ``--anchor N:HASH``.

Repair. A torn last line means the write was cut short, so that message was never sent:
:meth:`EgressLedger.repair` moves the partial line into ``<ledger>.torn-<time>`` and the
ledger goes on. Any other fault is evidence, never repaired: keep the file, move it aside
(the node then starts a new ledger) and report it.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medfed.errors import IntegrityError

__all__ = [
    "GENESIS",
    "LEDGER_FILE",
    "EgressLedger",
    "JobTotals",
    "LedgerCheck",
    "LedgerEntry",
    "LedgerHead",
]

LEDGER_FILE = "egress-ledger.jsonl"
"""File name of the ledger inside a node's state folder."""

GENESIS = "0" * 64
"""``prev`` of the first entry."""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = frozenset(
    (
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
    )
)


def canonical_json(obj: dict[str, Any]) -> builtins.bytes:
    """Sorted keys, no spaces, UTF-8, no NaN: the bytes that are hashed and written."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One message that left the site."""

    seq: int
    time: str
    job: str
    round: int | None
    kind: str
    destination: str
    bytes: int
    sha256: str
    epsilon: float | None
    delta: float | None
    note: str
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        """The entry without ``hash``: what ``hash`` is computed over."""
        out = asdict(self)
        del out["hash"]
        return out

    def line(self) -> builtins.bytes:
        """The line as written to the file, newline included."""
        return canonical_json(asdict(self)) + b"\n"


@dataclass(frozen=True, slots=True)
class LedgerHead:
    """An anchor: how many entries, and the hash of the last (``GENESIS`` when empty)."""

    count: int
    hash: str

    def __str__(self) -> str:
        return f"{self.count}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> LedgerHead:
        """Read ``COUNT:HASH`` as printed by ``str(head)``."""
        count, sep, digest = text.strip().partition(":")
        if not sep or not count.isdigit() or not _HEX64.fullmatch(digest.lower()):
            raise ValueError(f"an anchor is COUNT:HASH (64 hex characters), got {text!r}")
        return cls(int(count), digest.lower())


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    """Result of :meth:`EgressLedger.verify`; ``count``/``head`` cover the entries that verified."""

    ok: bool
    count: int
    first_bad_seq: int | None
    reason: str
    head: str = GENESIS
    torn: bool = False


@dataclass(frozen=True, slots=True)
class JobTotals:
    """What left the site for one job; ``epsilon`` sums the known per-message costs
    (basic composition, an upper bound) and is None when no message had one."""

    job: str
    messages: int
    bytes: int
    epsilon: float | None


class _Bad(Exception):
    pass


def _entry_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_types(d: dict[str, Any]) -> None:
    for name in ("time", "job", "kind", "destination", "note"):
        if not isinstance(d[name], str):
            raise _Bad(f"field {name!r} is not text")
    for name in ("seq", "bytes"):
        if not _is_int(d[name]) or d[name] < 0:
            raise _Bad(f"field {name!r} is not a non-negative integer")
    if d["round"] is not None and not _is_int(d["round"]):
        raise _Bad("field 'round' is not an integer or null")
    for name in ("epsilon", "delta"):
        if d[name] is not None and not isinstance(d[name], float):
            raise _Bad(f"field {name!r} is not a number or null")
    for name in ("sha256", "prev", "hash"):
        if not isinstance(d[name], str) or not _HEX64.fullmatch(d[name]):
            raise _Bad(f"field {name!r} is not 64 lowercase hex characters")


def _parse(raw: builtins.bytes, *, seq: int, prev: str) -> LedgerEntry:
    """One complete line (without its newline) → the entry, checked against its place."""
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _Bad("it is not valid UTF-8 JSON") from None
    if not isinstance(d, dict):
        raise _Bad("it is not a JSON object")
    if set(d) != _FIELDS:
        missing, extra = sorted(_FIELDS - set(d)), sorted(set(d) - _FIELDS)
        raise _Bad(f"its fields are wrong (missing {missing}, unexpected {extra})")
    _check_types(d)
    entry = LedgerEntry(**d)
    try:
        canonical = canonical_json(d)
    except ValueError:
        canonical = b""
    if raw != canonical:
        raise _Bad("it is not in canonical form (edited by hand?)")
    if _entry_hash(entry.body()) != entry.hash:
        raise _Bad("its hash does not match its contents (a field was edited)")
    if entry.seq != seq:
        raise _Bad(f"its seq is {entry.seq} (lines deleted, inserted or reordered)")
    if entry.prev != prev:
        raise _Bad(
            "its prev is not the hash of the entry before it (lines deleted, inserted or reordered)"
        )
    return entry


@dataclass(frozen=True, slots=True)
class _Scan:
    count: int
    head: str
    end: int  # offset just after the last entry that verified
    bad: str | None
    torn: bool


def _lines(fh: Any, start: int, stop: int) -> Iterator[tuple[int, builtins.bytes]]:
    """(offset, line) for the bytes in [start, stop); the last one may lack its newline."""
    fh.seek(start)
    pos = start
    while pos < stop:
        raw: builtins.bytes = fh.readline(stop - pos)
        if not raw:
            return
        yield pos, raw
        pos += len(raw)


def _scan(fh: Any, *, start: int, stop: int, seq: int, prev: str) -> _Scan:
    end = start
    for offset, raw in _lines(fh, start, stop):
        if not raw.endswith(b"\n"):
            return _Scan(
                seq,
                prev,
                end,
                f"torn last line ({len(raw)} bytes without a newline at byte {offset}): "
                "a write was cut short; `medfed node ledger repair` sets it aside",
                True,
            )
        try:
            entry = _parse(raw[:-1], seq=seq, prev=prev)
        except _Bad as exc:
            return _Scan(seq, prev, end, f"line {seq + 1} (seq {seq}): {exc}", False)
        seq, prev, end = seq + 1, entry.hash, offset + len(raw)
    return _Scan(seq, prev, end, None, False)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EgressLedger:
    """Append-only, hash-chained JSON-lines log of what left the site (see the module doc).

    Safe across processes: appends hold an exclusive ``flock``; readers a shared one.
    Before writing, an append checks the whole file the first time this object writes, and
    afterwards only the entries added since (by any process); :meth:`verify` checks it all.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._tail: tuple[int, int, int, str] | None = None  # (inode, end offset, count, head)

    @classmethod
    def in_state(cls, state_dir: str | os.PathLike[str]) -> EgressLedger:
        """The ledger of the node whose state folder is ``state_dir``."""
        return cls(Path(state_dir) / LEDGER_FILE)

    def exists(self) -> bool:
        return self.path.is_file()

    # -- writing -------------------------------------------------------------------------

    def append(
        self,
        *,
        job: str,
        round: int | None,
        kind: str,
        destination: str,
        data: builtins.bytes | None = None,
        nbytes: int | None = None,
        sha256: str | None = None,
        epsilon: float | None = None,
        delta: float | None = None,
        note: str = "",
    ) -> LedgerEntry:
        """Record one message before it leaves; returns once the entry is on disk.

        Give ``data`` (the exact bytes sent), or ``nbytes`` and ``sha256`` when the bytes are
        streamed. ``epsilon``/``delta`` are the privacy cost of this message alone.
        Raises :class:`~medfed.errors.IntegrityError` (and writes nothing) when the ledger's
        tail is torn or does not verify, and ``ValueError`` for invalid arguments.
        """
        nbytes, sha256 = _size_and_digest(data, nbytes, sha256)
        _check_args(job=job, round=round, kind=kind, destination=destination, note=note)
        eps = _cost("epsilon", epsilon, upper=math.inf)
        dlt = _cost("delta", delta, upper=1.0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if created:
                _fsync_dir(self.path.parent)
            size = os.fstat(fd).st_size
            count, head = self._check_tail(os.fstat(fd).st_ino, size)
            body: dict[str, Any] = {
                "seq": count,
                "time": _now(),
                "job": job,
                "round": round,
                "kind": kind,
                "destination": destination,
                "bytes": nbytes,
                "sha256": sha256,
                "epsilon": eps,
                "delta": dlt,
                "note": note,
                "prev": head,
            }
            entry = LedgerEntry(**body, hash=_entry_hash(body))
            line = entry.line()
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, size)  # best effort: leave no torn line behind
                raise
            self._tail = (os.fstat(fd).st_ino, size + len(line), count + 1, entry.hash)
            return entry
        finally:
            os.close(fd)  # releases the lock

    def _check_tail(self, inode: int, size: int) -> tuple[int, str]:
        """(count, head) of the ledger, checking only what was added since we last looked."""
        start, seq, prev = 0, 0, GENESIS
        if self._tail is not None and self._tail[0] == inode and self._tail[1] <= size:
            _, start, seq, prev = self._tail
        with open(self.path, "rb") as fh:
            scan = _scan(fh, start=start, stop=size, seq=seq, prev=prev)
        if scan.bad is not None:
            self._tail = None
            advice = (
                "run `medfed node ledger repair` (the partial line is kept aside)"
                if scan.torn
                else "keep it as evidence, move it aside so the node starts a new ledger, "
                "and report it"
            )
            raise IntegrityError(
                f"the egress ledger {self.path} does not verify at entry {scan.count}: "
                f"{scan.bad}; nothing was recorded — {advice}"
            )
        return scan.count, scan.head

    def repair(self) -> Path | None:
        """Set a torn last line aside (into ``<ledger>.torn-<time>``) so appends can go on.

        Returns the file that holds the cut bytes, or None when there was nothing to repair.
        Any other fault raises :class:`~medfed.errors.IntegrityError`: it is not a crash
        but a change to the file, and is left as it is.
        """
        if not self.exists():
            return None
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            with open(self.path, "rb") as fh:
                scan = _scan(fh, start=0, stop=size, seq=0, prev=GENESIS)
                if scan.bad is None:
                    return None
                if not scan.torn:
                    raise IntegrityError(
                        f"the egress ledger {self.path} cannot be repaired: entry {scan.count}: "
                        f"{scan.bad}; keep it as evidence and move it aside"
                    )
                fh.seek(scan.end)
                cut = fh.read(size - scan.end)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            aside = self.path.with_name(f"{self.path.name}.torn-{stamp}")
            with open(aside, "xb") as out:
                out.write(cut)
                out.flush()
                os.fsync(out.fileno())
            os.ftruncate(fd, scan.end)
            os.fsync(fd)
            _fsync_dir(self.path.parent)
            self._tail = None
            return aside
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------------------

    def _snapshot_size(self, fh: Any) -> int:
        """The file size while no append is half-written (complete lines up to there)."""
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        try:
            return os.fstat(fh.fileno()).st_size
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def entries(self) -> Iterator[LedgerEntry]:
        """Every entry, oldest first, checked as it is read.

        Raises :class:`~medfed.errors.IntegrityError` at the first line that does not verify
        (after yielding the ones before it). An absent ledger has no entries.
        """
        if not self.exists():
            return
        with open(self.path, "rb") as fh:
            size = self._snapshot_size(fh)
            seq, prev = 0, GENESIS
            for _, raw in _lines(fh, 0, size):
                if not raw.endswith(b"\n"):
                    raise IntegrityError(f"{self.path}: torn last line at entry {seq}")
                try:
                    entry = _parse(raw[:-1], seq=seq, prev=prev)
                except _Bad as exc:
                    raise IntegrityError(
                        f"{self.path}: line {seq + 1} (seq {seq}): {exc}"
                    ) from None
                yield entry
                seq, prev = seq + 1, entry.hash

    def verify(self, anchor: LedgerHead | None = None) -> LedgerCheck:
        """Re-read the whole ledger and check every entry and link; never raises for content.

        With ``anchor`` (a :meth:`head` written down earlier), also check that the entry it
        names is still there with the same hash — this catches entries cut from the end.
        """
        if not self.exists():
            scan = _Scan(0, GENESIS, 0, None, False)
        else:
            with open(self.path, "rb") as fh:
                scan = _scan(fh, start=0, stop=self._snapshot_size(fh), seq=0, prev=GENESIS)
        if scan.bad is not None:
            return LedgerCheck(False, scan.count, scan.count, scan.bad, scan.head, scan.torn)
        if anchor is not None and anchor.count > 0:
            if scan.count < anchor.count:
                reason = (
                    f"the anchor names {anchor.count} entries but the ledger has {scan.count}: "
                    "entries were removed from the end"
                )
                return LedgerCheck(False, scan.count, scan.count, reason, scan.head)
            found = self._hash_at(anchor.count - 1)
            if found != anchor.hash:
                reason = f"entry {anchor.count - 1} no longer has the anchored hash {anchor.hash}"
                return LedgerCheck(False, scan.count, anchor.count - 1, reason, scan.head)
        return LedgerCheck(True, scan.count, None, "", scan.head)

    def _hash_at(self, seq: int) -> str | None:
        for entry in self.entries():
            if entry.seq == seq:
                return entry.hash
        return None

    def head(self) -> LedgerHead:
        """(count, last hash) of the entries that verify: write it down to anchor the ledger."""
        check = self.verify()
        return LedgerHead(check.count, check.head)

    def totals(self) -> dict[str, JobTotals]:
        """Per job: messages, bytes and the sum of known epsilons, in order of first message."""
        acc: dict[str, tuple[int, int, float | None]] = {}
        for e in self.entries():
            messages, nbytes, eps = acc.get(e.job, (0, 0, None))
            if e.epsilon is not None:
                eps = (eps or 0.0) + e.epsilon
            acc[e.job] = (messages + 1, nbytes + e.bytes, eps)
        return {job: JobTotals(job, m, b, eps) for job, (m, b, eps) in acc.items()}


def _size_and_digest(
    data: builtins.bytes | None, nbytes: int | None, sha256: str | None
) -> tuple[int, str]:
    if data is not None:
        actual = (len(data), hashlib.sha256(data).hexdigest())
        if nbytes is not None and nbytes != actual[0]:
            raise ValueError(f"nbytes={nbytes} but data holds {actual[0]} bytes")
        if sha256 is not None and sha256.lower() != actual[1]:
            raise ValueError("sha256 does not match data")
        return actual
    if nbytes is None or sha256 is None:
        raise ValueError("give data, or both nbytes and sha256")
    if not _is_int(nbytes) or nbytes < 0:
        raise ValueError(f"nbytes must be a non-negative integer, got {nbytes!r}")
    if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256.lower()):
        raise ValueError("sha256 must be 64 hex characters")
    return nbytes, sha256.lower()


def _check_args(*, job: str, round: int | None, kind: str, destination: str, note: str) -> None:
    for name, value in (("job", job), ("kind", kind), ("destination", destination)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be non-empty text, got {value!r}")
    if not isinstance(note, str):
        raise ValueError(f"note must be text, got {note!r}")
    if round is not None and (not _is_int(round) or round < 0):
        raise ValueError(f"round must be a non-negative integer or None, got {round!r}")
    for name, value in (("job", job), ("kind", kind), ("destination", destination), ("note", note)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name} is not valid text (lone surrogate)") from None


def _cost(name: str, value: float | None, *, upper: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number or None, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or value >= upper:
        raise ValueError(f"{name} must be finite, >= 0 and < {upper}, got {value!r}")
    return value
