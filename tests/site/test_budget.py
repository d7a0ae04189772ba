"""Site budgets in a real SQLite file: refusal of jobs and rounds, composition, reopening."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from medfed.errors import ConfigError, UsageError
from medfed.privacy.accounting import GaussianRounds, composed_epsilon, epsilon
from medfed.site.budget import BudgetExceeded, SiteBudget

SIGMA, Q = 1.0, 0.5


def eps(rounds: int, sigma: float = SIGMA, q: float = Q) -> float:
    return epsilon(noise_multiplier=sigma, sample_rate=q, rounds=rounds, delta=1e-5)


@pytest.fixture
def budget(tmp_path: Path) -> SiteBudget:
    b = SiteBudget(tmp_path / "node" / "privacy.sqlite")
    b.set_budget("icu", epsilon=eps(20) * 1.0001, delta=1e-5)
    return b


def test_a_job_within_budget_is_reserved_and_charged(budget: SiteBudget) -> None:
    committed = budget.reserve("icu", job="j1", noise_multiplier=SIGMA, sample_rate=Q, rounds=8)
    assert committed == pytest.approx(eps(8))
    assert budget.spent("icu") == 0.0
    spent = [budget.charge("icu", job="j1", round=r) for r in range(1, 4)]
    assert spent == pytest.approx([eps(1), eps(2), eps(3)])
    status = budget.status("icu")
    assert status.spent == pytest.approx(eps(3)) and status.committed == pytest.approx(eps(8))


def test_a_job_that_would_overspend_is_refused_up_front(budget: SiteBudget) -> None:
    budget.reserve("icu", job="first", noise_multiplier=SIGMA, sample_rate=Q, rounds=15)
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve("icu", job="second", noise_multiplier=SIGMA, sample_rate=Q, rounds=10)
    err = info.value
    assert isinstance(err, UsageError) and err.exit_code == 2
    message = str(err)
    assert "'second'" in message and "'icu'" in message and "left" in message
    assert "medfed privacy plan" in message and "\n" not in message
    assert err.asked == pytest.approx(eps(10)) and err.committed == pytest.approx(eps(15))
    # a job that fits what is left is accepted
    budget.reserve("icu", job="third", noise_multiplier=SIGMA, sample_rate=Q, rounds=5)


def test_a_round_beyond_the_plan_is_refused_when_it_would_overspend(budget: SiteBudget) -> None:
    budget.reserve("icu", job="j", noise_multiplier=SIGMA, sample_rate=Q, rounds=20)
    for r in range(20):
        budget.charge("icu", job="j", round=r)
    with pytest.raises(BudgetExceeded, match="round 20 of job 'j'"):
        budget.charge("icu", job="j", round=20)
    assert budget.jobs("icu")[0].rounds_done == 20  # the refused round was not charged


def test_lowering_the_budget_stops_the_next_round(budget: SiteBudget) -> None:
    budget.reserve("icu", job="j", noise_multiplier=SIGMA, sample_rate=Q, rounds=10)
    budget.charge("icu", job="j", round=0)
    budget.set_budget("icu", epsilon=eps(1) * 1.0001, delta=1e-5)
    with pytest.raises(BudgetExceeded):
        budget.charge("icu", job="j", round=1)


def test_jobs_compose_in_the_accountant_not_by_adding_epsilons(budget: SiteBudget) -> None:
    budget.reserve("icu", job="a", noise_multiplier=SIGMA, sample_rate=Q, rounds=4)
    budget.reserve(
        "icu", job="b", noise_multiplier=2.0, sample_rate=0.1, rounds=2, steps_per_round=30
    )
    for r in range(4):
        budget.charge("icu", job="a", round=r)
    for r in range(2):
        budget.charge("icu", job="b", round=r)
    runs = [GaussianRounds(SIGMA, Q, 4), GaussianRounds(2.0, 0.1, 60)]
    spent = budget.spent("icu")
    assert spent == pytest.approx(composed_epsilon(runs, delta=1e-5))
    jobs = {j.job: j for j in budget.jobs("icu")}
    assert jobs["a"].epsilon == pytest.approx(eps(4))
    assert spent < jobs["a"].epsilon + jobs["b"].epsilon


def test_finishing_a_job_releases_its_unused_rounds(budget: SiteBudget) -> None:
    budget.reserve("icu", job="big", noise_multiplier=SIGMA, sample_rate=Q, rounds=18)
    budget.charge("icu", job="big", round=0)
    with pytest.raises(BudgetExceeded):
        budget.reserve("icu", job="next", noise_multiplier=SIGMA, sample_rate=Q, rounds=10)
    budget.finish("icu", job="big")
    budget.reserve("icu", job="next", noise_multiplier=SIGMA, sample_rate=Q, rounds=10)
    with pytest.raises(UsageError, match="finished"):
        budget.charge("icu", job="big", round=1)


def test_everything_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "privacy.sqlite"
    first = SiteBudget(path)
    first.set_budget("icu", epsilon=10.0, delta=1e-6)
    first.reserve("icu", job="j", noise_multiplier=1.5, sample_rate=0.2, rounds=30)
    for r in range(7):
        first.charge("icu", job="j", round=r)
    spent = first.spent("icu")
    del first
    again = SiteBudget(path)
    assert again.spent("icu") == spent
    (job,) = again.jobs("icu")
    assert (job.rounds_done, job.planned_rounds, job.finished) == (7, 30, False)
    # a restarted node re-reserving the same plan resumes; another plan is refused
    again.reserve("icu", job="j", noise_multiplier=1.5, sample_rate=0.2, rounds=30)
    with pytest.raises(UsageError, match="another plan"):
        again.reserve("icu", job="j", noise_multiplier=1.0, sample_rate=0.2, rounds=30)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = db.execute("SELECT round, epsilon_spent FROM releases ORDER BY id").fetchall()
    assert [r for r, _ in rows] == list(range(7)) and rows[-1][1] == pytest.approx(spent)


def test_two_processes_cannot_both_take_the_last_of_a_budget(tmp_path: Path) -> None:
    path = tmp_path / "privacy.sqlite"
    SiteBudget(path).set_budget("icu", epsilon=eps(10) * 1.0001, delta=1e-5)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def try_reserve(i: int) -> None:
        b = SiteBudget(path)  # its own connections, as another process would have
        barrier.wait()
        try:
            b.reserve("icu", job=f"j{i}", noise_multiplier=SIGMA, sample_rate=Q, rounds=10)
            outcomes.append("ok")
        except BudgetExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=try_reserve, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "refused", "refused", "refused"]


def test_a_data_set_without_a_budget_cannot_be_used(tmp_path: Path) -> None:
    b = SiteBudget(tmp_path / "p.sqlite")
    with pytest.raises(ConfigError, match="no privacy budget"):
        b.reserve("icu", job="j", noise_multiplier=1.0, sample_rate=1.0, rounds=1)
    with pytest.raises(ConfigError, match="epsilon"):
        b.set_budget("icu", epsilon=-1, delta=1e-5)
