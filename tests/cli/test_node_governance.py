"""`medfed node pending|approve|reject|ledger` through click, against real state folders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from medfed.cli.main import _Group
from medfed.cli.node import node
from medfed.site.approval import ApprovalStore, Status
from medfed.site.ledger import EgressLedger

SHA = hashlib.sha256(b"bundle").hexdigest()


@click.group(cls=_Group)
def cli() -> None:
    """The real error handling of `medfed`, with only the node group registered."""


cli.add_command(node)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["node", *map(str, args)])


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "kit" / "state"
    store = ApprovalStore.in_state(folder)
    store.request(task_sha256=SHA, job="job-7", task_name="mlp", researcher="dr-who")
    return folder


def test_pending_lists_the_waiting_task(state: Path) -> None:
    result = run("pending", "--state", state)
    assert result.exit_code == 0, result.output
    for needle in (SHA[:12], "job-7", "mlp", "dr-who"):
        assert needle in result.output


def test_approve_by_prefix_with_kit(state: Path) -> None:
    result = run("approve", SHA[:8], "--kit", state.parent, "--by", "steward")
    assert result.exit_code == 0, result.output
    assert "approved" in result.output and "steward" in result.output and SHA[:12] in result.output
    assert ApprovalStore.in_state(state).status(SHA) == Status.APPROVED
    again = run("approve", SHA[:8], "--state", state, "--by", "other")
    assert again.exit_code == 0 and "already approved by steward" in again.output
    assert "no tasks are waiting" in run("pending", "--state", state).output
    listed = run("pending", "--state", state, "--all").output
    assert "approved" in listed and "steward" in listed


def test_reject_needs_a_reason_and_stays_rejected(state: Path) -> None:
    assert run("reject", SHA[:8], "--state", state).exit_code == 2
    result = run("reject", SHA[:8], "--state", state, "--reason", "exports raw rows", "--by", "s")
    assert result.exit_code == 0 and "rejected" in result.output
    assert "exports raw rows" in result.output
    refused = run("approve", SHA[:8], "--state", state)
    assert refused.exit_code == 2 and "override" in refused.output
    assert ApprovalStore.in_state(state).status(SHA) == Status.REJECTED
    forced = run("approve", SHA[:8], "--state", state, "--override", "--reason", "fixed")
    assert forced.exit_code == 0 and "was rejected" in forced.output


def test_usage_mistakes_are_one_sentence(state: Path, tmp_path: Path) -> None:
    for args, needle in [
        (("pending",), "--state"),
        (("pending", "--state", tmp_path / "nowhere"), "not a node state folder"),
        (("approve", "abc", "--state", state), "too short"),
        (("approve", "ffffffffff", "--state", state), "no request"),
        (("ledger", "show", "--state", state), "no egress ledger"),
    ]:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output
        assert "Traceback" not in result.output


def _ledger(state: Path) -> EgressLedger:
    book = EgressLedger.in_state(state)
    for i in range(3):
        book.append(
            job="job-7" if i < 2 else "job-8",
            round=i + 1,
            kind="update",
            destination="https://coordinator",
            data=bytes(1000 * (i + 1)),
            epsilon=0.5,
        )
    return book


def test_ledger_show_with_totals_and_filters(state: Path) -> None:
    _ledger(state)
    result = run("ledger", "show", "--state", state)
    assert result.exit_code == 0, result.output
    assert "job-7" in result.output and "job-8" in result.output
    assert "Totals per job" in result.output and "3,000" in result.output
    only = run("ledger", "show", "--state", state, "--job", "job-7", "--last", "1").output
    table = only.split("Totals per job")[0]
    assert "2,000" in table and "1,000" not in table and "job-8" not in only


def test_ledger_verify_intact_then_broken(state: Path) -> None:
    book = _ledger(state)
    result = run("ledger", "verify", "--state", state)
    assert result.exit_code == 0
    assert f"ledger intact: 3 entries, head {book.head().hash}" in result.output
    anchor = str(book.head())
    assert run("ledger", "verify", "--state", state, "--anchor", anchor).exit_code == 0
    bad_anchor = run("ledger", "verify", "--state", state, "--anchor", "3:zz")
    assert bad_anchor.exit_code == 2 and "--anchor" in bad_anchor.output

    lines = book.path.read_bytes().splitlines(keepends=True)
    book.path.write_bytes(lines[0] + lines[2].replace(b'"round":3', b'"round":2'))
    broken = run("ledger", "verify", "--state", state)
    assert broken.exit_code == 1
    assert "entry 1" in broken.output and "hash does not match" in broken.output
    shown = run("ledger", "show", "--state", state)
    assert shown.exit_code == 0 and "warning" in shown.output and "job-7" in shown.output


def test_ledger_repair_of_a_torn_tail(state: Path) -> None:
    book = _ledger(state)
    with book.path.open("ab") as fh:
        fh.write(b'{"seq":3,')
    torn = run("ledger", "verify", "--state", state)
    assert torn.exit_code == 1 and "torn" in torn.output and "repair" in torn.output
    fixed = run("ledger", "repair", "--state", state)
    assert fixed.exit_code == 0 and ".torn-" in fixed.output
    assert run("ledger", "verify", "--state", state).exit_code == 0
    assert "nothing to repair" in run("ledger", "repair", "--state", state).output


def test_a_deleted_ledger_fails_against_its_anchor(state: Path) -> None:
    book = _ledger(state)
    anchor = str(book.head())
    book.path.unlink()
    result = run("ledger", "verify", "--state", state, "--anchor", anchor)
    assert result.exit_code == 1 and "removed" in result.output


def test_names_from_a_job_are_printed_as_text_not_markup(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    store = ApprovalStore.in_state(folder)
    store.request(task_sha256=SHA, job="[/]job", task_name="[bold]x", researcher="[red]eve")
    result = run("pending", "--state", folder)
    assert result.exit_code == 0, result.output
    assert "[bold]x" in result.output and "[red]eve" in result.output
    approved = run("approve", SHA[:8], "--state", folder, "--by", "[i]s")
    assert approved.exit_code == 0 and "[/]job" in approved.output


def test_budget_set_and_show_and_the_refusal_of_a_job_beyond_it(tmp_path: Path) -> None:
    from medfed.site.budget import BudgetExceeded, SiteBudget

    kit = tmp_path / "kit"
    kit.mkdir()
    nothing = run("budget", "show", "--kit", kit)
    assert nothing.exit_code == 2 and "node state folder" in nothing.output
    done = run("budget", "set", "breast-cancer", "--epsilon", "3", "--kit", kit)
    assert done.exit_code == 0, done.output
    assert "ε = 3 at δ = 1e-05" in done.output
    book = SiteBudget.in_state(kit / "state")
    book.reserve("breast-cancer", job="job-1", noise_multiplier=4.0, sample_rate=1.0, rounds=5)
    with pytest.raises(BudgetExceeded):
        book.reserve("breast-cancer", job="job-2", noise_multiplier=0.5, sample_rate=1.0, rounds=50)
    shown = run("budget", "show", "--kit", kit)
    assert shown.exit_code == 0 and "job-1" in shown.output and "job-2" not in shown.output
    bad = run("budget", "set", "breast-cancer", "--epsilon", "-1", "--kit", kit)
    assert bad.exit_code == 2 and "positive" in bad.output
    unknown = run("budget", "show", "lung", "--kit", kit)
    assert unknown.exit_code == 2 and "no privacy budget" in unknown.output
