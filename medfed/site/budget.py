"""A site's lifetime privacy budget per data set, kept in a SQLite file at the node.

The node's operator sets a budget ``(ε, δ)`` per data set. Every DP job on that data set
first **reserves** its planned rounds, and the node refuses a job whose planned ε would take
the data set over its budget; then it **charges** each round before the round's update
leaves the site, and refuses a round that would go over (a job running more rounds than it
planned, or a budget lowered meanwhile); at the end it **finishes** the job, which releases
the rounds it planned but did not run.

How jobs compose. Each job is stored as what it does to the data: ``(σ, q, steps)`` — noise
multiplier, sample rate, and Gaussian mechanisms per round (1 for client-level DP; optimizer
steps per round for DP-SGD). The ε of a data set is that of *all* its jobs' mechanisms
composed in one accountant (:func:`medfed.privacy.accounting.composed_epsilon`, RDP by
default) at the budget's δ: exact adaptive composition, much tighter than adding up the jobs'
ε (which would also be valid). A client-level event protects the whole site, hence each of
its patients, so client- and sample-level jobs compose in the same ledger; the site's
sampling probability is then all the amplification counted.

- ``spent``: the rounds that ran (charged);
- ``committed``: spent, plus the planned rounds of active jobs not yet run.

Durability: WAL journal, ``synchronous=FULL``, and each check-then-write runs in one
``BEGIN IMMEDIATE`` transaction, so two jobs cannot both take the last of a budget and a
charge that returned is on disk. A round is charged *before* its update leaves: a crash in
between over-counts (safe), never under-counts. A retried round is a new release and is
charged again.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from medfed.errors import ConfigError, UsageError
from medfed.privacy.accounting import ACCOUNTANTS, GaussianRounds, composed_epsilon

__all__ = ["BudgetExceeded", "BudgetStatus", "JobCharge", "SiteBudget"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budgets (
    dataset    TEXT PRIMARY KEY,
    epsilon    REAL NOT NULL,
    delta      REAL NOT NULL,
    accountant TEXT NOT NULL,
    updated    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    dataset          TEXT NOT NULL,
    job              TEXT NOT NULL,
    noise_multiplier REAL NOT NULL,
    sample_rate      REAL NOT NULL,
    steps_per_round  INTEGER NOT NULL,
    planned_rounds   INTEGER NOT NULL,
    rounds_done      INTEGER NOT NULL DEFAULT 0,
    finished         INTEGER NOT NULL DEFAULT 0,
    created          TEXT NOT NULL,
    updated          TEXT NOT NULL,
    PRIMARY KEY (dataset, job)
);
CREATE TABLE IF NOT EXISTS releases (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset       TEXT NOT NULL,
    job           TEXT NOT NULL,
    round         INTEGER NOT NULL,
    epsilon_spent REAL NOT NULL,
    at            TEXT NOT NULL
);
"""

_TOLERANCE = 1e-9  # relative slack when comparing ε to the budget (float noise only)


class BudgetExceeded(UsageError):
    """A job or a round would take a data set over its lifetime privacy budget."""

    def __init__(self, message: str, *, committed: float, left: float, asked: float) -> None:
        super().__init__(message)
        self.committed, self.left, self.asked = committed, left, asked


@dataclass(frozen=True)
class BudgetStatus:
    """A data set's budget and what is spent and committed of it (ε at the budget's δ)."""

    dataset: str
    epsilon: float
    delta: float
    accountant: str
    spent: float
    committed: float

    @property
    def left(self) -> float:
        """``epsilon − committed``: indicative only, ε does not add up linearly."""
        return max(0.0, self.epsilon - self.committed)


@dataclass(frozen=True)
class JobCharge:
    """One job's record on one data set; ``epsilon`` is its own ε (rounds run) at the budget δ."""

    job: str
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    planned_rounds: int
    rounds_done: int
    finished: bool
    epsilon: float

    def rounds(self, *, done_only: bool) -> GaussianRounds:
        rounds = (
            self.rounds_done
            if done_only or self.finished
            else max(self.planned_rounds, self.rounds_done)
        )
        return GaussianRounds(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            rounds=rounds * self.steps_per_round,
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"the {what} must be a non-empty name, got {value!r}")
    return value


class SiteBudget:
    """The privacy budgets of one node's data sets, in the SQLite file at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._tx() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    FILE = "privacy_budget.sqlite"

    @classmethod
    def in_state(cls, state_dir: str | Path) -> SiteBudget:
        """The budgets of the node whose state folder is ``state_dir``."""
        return cls(Path(state_dir) / cls.FILE)

    def __repr__(self) -> str:
        return f"SiteBudget({str(self.path)!r})"

    def datasets(self) -> list[str]:
        """The data sets that have a budget, by name."""
        with self._tx(write=False) as db:
            return [r[0] for r in db.execute("SELECT dataset FROM budgets ORDER BY dataset")]

    @contextlib.contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction (BEGIN IMMEDIATE for writes, so a check and its write cannot
        interleave with another process's), rolled back on any error."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # --- budgets ------------------------------------------------------------------------------

    def set_budget(
        self, dataset: str, *, epsilon: float, delta: float, accountant: str = "rdp"
    ) -> None:
        """Set (or change) the lifetime budget of ``dataset``; what was spent stays spent."""
        _name(dataset, "data set")
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ConfigError(f"the budget's epsilon must be a positive number, got {epsilon}")
        if not 0 < delta < 1:
            raise ConfigError(f"the budget's delta must be in (0, 1), got {delta}")
        if accountant not in ACCOUNTANTS:
            raise ConfigError(f"the accountant must be 'rdp' or 'pld', got {accountant!r}")
        with self._tx() as db:
            db.execute(
                "INSERT INTO budgets (dataset, epsilon, delta, accountant, updated) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (dataset) DO UPDATE SET "
                "epsilon = excluded.epsilon, delta = excluded.delta, "
                "accountant = excluded.accountant, updated = excluded.updated",
                (dataset, float(epsilon), float(delta), accountant, _now()),
            )

    def status(self, dataset: str) -> BudgetStatus:
        """The budget of ``dataset`` with ε spent and committed."""
        with self._tx(write=False) as db:
            return self._status(db, dataset)

    def spent(self, dataset: str) -> float:
        """ε at the budget's δ of every round charged on ``dataset``, all jobs composed."""
        return self.status(dataset).spent

    def jobs(self, dataset: str) -> list[JobCharge]:
        """Every job that reserved rounds on ``dataset``, oldest first."""
        with self._tx(write=False) as db:
            budget = self._budget(db, dataset)
            return self._jobs(db, dataset, delta=budget[1], accountant=budget[2])

    # --- reserve, charge, finish ----------------------------------------------------------------

    def reserve(
        self,
        dataset: str,
        *,
        job: str,
        noise_multiplier: float,
        sample_rate: float,
        rounds: int,
        steps_per_round: int = 1,
    ) -> float:
        """Reserve a job's planned rounds, or raise :class:`BudgetExceeded`; returns committed ε.

        Reserving the same job again with the same plan is a no-op (a restarted node resumes);
        with another plan it is an error.
        """
        _name(job, "job id")
        if rounds < 1 or steps_per_round < 1:
            raise ConfigError("a job must plan at least one round of at least one step")
        GaussianRounds(noise_multiplier=noise_multiplier, sample_rate=sample_rate, rounds=rounds)
        plan = (float(noise_multiplier), float(sample_rate), int(steps_per_round), int(rounds))
        with self._tx() as db:
            eps_budget, delta, accountant = self._budget(db, dataset)
            jobs = self._jobs(db, dataset, delta=delta, accountant=accountant, with_epsilon=False)
            existing = next((j for j in jobs if j.job == job), None)
            if existing is not None:
                same = (
                    existing.noise_multiplier,
                    existing.sample_rate,
                    existing.steps_per_round,
                    existing.planned_rounds,
                ) == plan
                if existing.finished or not same:
                    raise UsageError(
                        f"job {job!r} already {'ran' if existing.finished else 'reserved'} "
                        f"on data set {dataset!r} with another plan; give the new job its own id"
                    )
                return self._committed(jobs, delta=delta, accountant=accountant)
            new = GaussianRounds(
                noise_multiplier=plan[0], sample_rate=plan[1], rounds=plan[3] * plan[2]
            )
            before = self._committed(jobs, delta=delta, accountant=accountant)
            after = composed_epsilon(
                [*(j.rounds(done_only=False) for j in jobs), new],
                delta=delta,
                accountant=accountant,
            )
            if after > eps_budget * (1 + _TOLERANCE):
                asked = composed_epsilon([new], delta=delta, accountant=accountant)
                raise _exceeded(
                    f"job {job!r} plans ε≈{asked:.3g}",
                    dataset=dataset,
                    budget=(eps_budget, delta),
                    committed=before,
                    asked=asked,
                )
            db.execute(
                "INSERT INTO jobs (dataset, job, noise_multiplier, sample_rate, "
                "steps_per_round, planned_rounds, created, updated) VALUES (?,?,?,?,?,?,?,?)",
                (dataset, job, plan[0], plan[1], plan[2], plan[3], _now(), _now()),
            )
            return after

    def charge(self, dataset: str, *, job: str, round: int) -> float:
        """Charge one round of ``job`` before its update leaves; returns ε spent on ``dataset``.

        Raises :class:`BudgetExceeded` (and charges nothing) when the round would take the
        data set over its budget, counting the reservations of the other active jobs.
        """
        with self._tx() as db:
            eps_budget, delta, accountant = self._budget(db, dataset)
            jobs = self._jobs(db, dataset, delta=delta, accountant=accountant, with_epsilon=False)
            mine = next((j for j in jobs if j.job == job), None)
            if mine is None or mine.finished:
                raise UsageError(
                    f"job {job!r} has {'finished' if mine else 'no reservation'} on data set "
                    f"{dataset!r}; reserve its rounds before running them"
                )
            others = [j.rounds(done_only=False) for j in jobs if j.job != job]
            done = mine.rounds_done + 1
            mine_after = GaussianRounds(
                noise_multiplier=mine.noise_multiplier,
                sample_rate=mine.sample_rate,
                rounds=max(mine.planned_rounds, done) * mine.steps_per_round,
            )
            after = composed_epsilon([*others, mine_after], delta=delta, accountant=accountant)
            if after > eps_budget * (1 + _TOLERANCE):
                before = self._committed(jobs, delta=delta, accountant=accountant)
                one = GaussianRounds(
                    noise_multiplier=mine.noise_multiplier,
                    sample_rate=mine.sample_rate,
                    rounds=mine.steps_per_round,
                )
                asked = composed_epsilon([one], delta=delta, accountant=accountant)
                raise _exceeded(
                    f"round {round} of job {job!r} (round {done} of {mine.planned_rounds} "
                    f"planned) needs ε≈{asked:.3g} more",
                    dataset=dataset,
                    budget=(eps_budget, delta),
                    committed=before,
                    asked=asked,
                )
            db.execute(
                "UPDATE jobs SET rounds_done = ?, updated = ? WHERE dataset = ? AND job = ?",
                (done, _now(), dataset, job),
            )
            spent_runs = [j.rounds(done_only=True) for j in jobs if j.job != job]
            spent_runs.append(
                GaussianRounds(
                    noise_multiplier=mine.noise_multiplier,
                    sample_rate=mine.sample_rate,
                    rounds=done * mine.steps_per_round,
                )
            )
            spent = composed_epsilon(spent_runs, delta=delta, accountant=accountant)
            db.execute(
                "INSERT INTO releases (dataset, job, round, epsilon_spent, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (dataset, job, int(round), spent, _now()),
            )
            return spent

    def finish(self, dataset: str, *, job: str) -> None:
        """Mark ``job`` finished: its unused planned rounds go back to the budget."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET finished = 1, updated = ? WHERE dataset = ? AND job = ?",
                (_now(), dataset, job),
            )
            if cur.rowcount == 0:
                raise UsageError(f"job {job!r} has no reservation on data set {dataset!r}")

    # --- internals ------------------------------------------------------------------------------

    def _budget(self, db: sqlite3.Connection, dataset: str) -> tuple[float, float, str]:
        row = db.execute(
            "SELECT epsilon, delta, accountant FROM budgets WHERE dataset = ?", (dataset,)
        ).fetchone()
        if row is None:
            raise ConfigError(
                f"data set {dataset!r} has no privacy budget at this node; its operator must "
                "set one (ε and δ) before DP jobs can use it: "
                f"`medfed node budget set {dataset} --epsilon E`"
            )
        return float(row[0]), float(row[1]), str(row[2])

    def _jobs(
        self,
        db: sqlite3.Connection,
        dataset: str,
        *,
        delta: float,
        accountant: str,
        with_epsilon: bool = True,
    ) -> list[JobCharge]:
        rows = db.execute(
            "SELECT job, noise_multiplier, sample_rate, steps_per_round, planned_rounds, "
            "rounds_done, finished FROM jobs WHERE dataset = ? ORDER BY created, rowid",
            (dataset,),
        ).fetchall()
        out = []
        for job, sigma, q, steps, planned, done, finished in rows:
            run = GaussianRounds(noise_multiplier=sigma, sample_rate=q, rounds=done * steps)
            eps = 0.0
            if with_epsilon:
                eps = composed_epsilon([run], delta=delta, accountant=accountant)
            out.append(JobCharge(job, sigma, q, steps, planned, done, bool(finished), eps))
        return out

    def _committed(self, jobs: list[JobCharge], *, delta: float, accountant: str) -> float:
        runs = [j.rounds(done_only=False) for j in jobs]
        return composed_epsilon(runs, delta=delta, accountant=accountant)

    def _status(self, db: sqlite3.Connection, dataset: str) -> BudgetStatus:
        eps_budget, delta, accountant = self._budget(db, dataset)
        jobs = self._jobs(db, dataset, delta=delta, accountant=accountant, with_epsilon=False)
        spent = composed_epsilon(
            [j.rounds(done_only=True) for j in jobs], delta=delta, accountant=accountant
        )
        committed = self._committed(jobs, delta=delta, accountant=accountant)
        return BudgetStatus(dataset, eps_budget, delta, accountant, spent, committed)


def _exceeded(
    what: str, *, dataset: str, budget: tuple[float, float], committed: float, asked: float
) -> BudgetExceeded:
    eps_budget, delta = budget
    left = max(0.0, eps_budget - committed)
    return BudgetExceeded(
        f"{what} on data set {dataset!r}, whose lifetime budget is ε={eps_budget:g} at "
        f"δ={delta:g} with ε≈{committed:.3g} already spent or reserved (about {left:.3g} left), "
        "so the node refuses it; add noise, run fewer rounds or ask fewer sites per round "
        "(see `medfed privacy plan`), or ask the node's operator to raise the budget",
        committed=committed,
        left=left,
        asked=asked,
    )
