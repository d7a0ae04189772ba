"""``medfed node``: the hospital's side — the data steward's approvals and the egress ledger.

The logic lives in :mod:`medfed.site.approval` and :mod:`medfed.site.ledger`; this module only
parses options and prints.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from medfed.site.approval import ApprovalStore, Decision, Request
    from medfed.site.ledger import EgressLedger, LedgerEntry

_STATE = click.option(
    "--state",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The node's state folder [KIT/state].",
)
_KIT = click.option(
    "--kit",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The site kit from `medfed provision`; its state folder is used.",
)


def _state_dir(state: Path | None, kit: Path | None, *, create: bool = False) -> Path:
    from medfed.errors import UsageError

    if state is not None:
        folder = state
    elif kit is not None:
        folder = kit / "state"
    else:
        raise UsageError("say which node: give --state DIR or --kit DIR")
    if create and not folder.exists() and folder.parent.is_dir():
        folder.mkdir(mode=0o700)  # a budget may be set before the node first starts
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a node state folder; check --state / --kit")
    return folder


def _who(by: str | None) -> str:
    """--by, or the login name of whoever runs the command."""
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        from medfed.errors import UsageError

        raise UsageError("cannot tell who you are; say who decides with --by NAME") from None


def _short(digest: str) -> str:
    return digest[:12]


def _when(iso: str | None) -> str:
    return "" if not iso else iso.replace("T", " ").replace("+00:00", " UTC")


def _minute(iso: str) -> str:
    """'2026-01-02T03:04:05.678+00:00' → '2026-01-02 03:04' (tables say UTC in the header)."""
    return iso[:16].replace("T", " ")


@click.group()
def node() -> None:
    """The hospital's node: approve the code that may run here, and see what left the site."""


# ── `medfed node start` (the node agent) goes here: node.add_command(start) ──────────────


# ── task approval ────────────────────────────────────────────────────────────────────────


@node.command()
@_STATE
@_KIT
@click.option("--all", "show_all", is_flag=True, help="Also list tasks already decided.")
def pending(state: Path | None, kit: Path | None, show_all: bool) -> None:
    """List the tasks waiting for the data steward's decision."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from medfed.cli.console import out
    from medfed.site.approval import ApprovalStore

    store = ApprovalStore.in_state(_state_dir(state, kit), create=False)
    requests = store.all() if show_all else store.pending()
    if not requests:
        out.print(
            "no tasks are waiting for approval" if not show_all else "no tasks yet", soft_wrap=True
        )
        return
    title = "Tasks at this node" if show_all else "Tasks waiting for approval"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("id", no_wrap=True)
    table.add_column("job", overflow="fold")
    table.add_column("task", overflow="fold")
    table.add_column("researcher", overflow="fold")
    table.add_column("requested (UTC)", no_wrap=True)
    if show_all:
        table.add_column("status", no_wrap=True)
        table.add_column("by", overflow="fold")
    for r in requests:
        row = [_short(r.approval_id), r.job, r.task_name, r.researcher, _minute(r.requested_at)]
        if show_all:
            row += [r.status.value, r.decided_by or ""]
        table.add_row(*map(escape, row))
    out.print(table)
    for r in requests:  # what each approval would cover: the code, where it came from, terms
        out.print(_terms_text(store, r), soft_wrap=True, markup=False, highlight=False)
    out.print(
        "[dim]medfed node approve ID  ·  medfed node reject ID --reason TEXT[/]", soft_wrap=True
    )


def _terms_text(store: ApprovalStore, r: Request) -> str:
    from medfed.site.approval import flat_terms, terms_changes

    lines = [f"{_short(r.approval_id)}  code sha256 {r.task_sha256}"]
    if r.origin:
        lines.append(f"    from: {r.origin}")
    if r.terms is None:
        lines.append("    settings: not bound (decided on the code alone by an earlier medfed)")
    else:
        lines += [f"    {key} = {value}" for key, value in flat_terms(r.terms).items()]
        before = store.approved_before(r) if r.status.value == "pending" else None
        if before is not None:
            changes = terms_changes(before.terms, r.terms)
            lines.append(f"    changed since you approved {_short(before.approval_id)}:")
            lines += [f"      {change}" for change in changes]
    return "\n".join(lines)


def _decided(verb: str, decision: Decision) -> None:
    from medfed.cli.console import out

    r = decision.request
    what = (
        f"task {r.task_name!r} ({_short(r.approval_id)}, code {_short(r.task_sha256)}) of job "
        f"{r.job} from {r.researcher}"
    )
    if not decision.changed:
        when = _when(r.decided_at)
        out.print(
            f"{what} was already {verb} by {r.decided_by} at {when}", soft_wrap=True, markup=False
        )
        return
    change = f" (was {decision.previous.value})" if decision.previous.value != "pending" else ""
    why = f": {r.reason}" if r.reason else ""
    out.print(f"{verb} {what} by {r.decided_by}{change}{why}", soft_wrap=True, markup=False)


@node.command()
@click.argument("sha_prefix")
@_STATE
@_KIT
@click.option("--by", default=None, help="Who decides [the login name].")
@click.option("--reason", default="", help="Why (kept with the decision).")
@click.option("--override", is_flag=True, help="Approve a task that was rejected (recorded).")
def approve(
    sha_prefix: str,
    state: Path | None,
    kit: Path | None,
    by: str | None,
    reason: str,
    override: bool,
) -> None:
    """Let the request whose id (or code hash) starts with SHA_PREFIX run at this site.

    An approval covers that code with the settings `medfed node pending` shows: the same
    code with other settings is a new request.
    """
    from medfed.site.approval import ApprovalStore

    store = ApprovalStore.in_state(_state_dir(state, kit), create=False)
    decision = store.approve(sha_prefix, by=_who(by), reason=reason, override=override)
    _decided("approved", decision)


@node.command()
@click.argument("sha_prefix")
@click.option("--reason", required=True, help="Why (kept with the decision).")
@_STATE
@_KIT
@click.option("--by", default=None, help="Who decides [the login name].")
@click.option("--override", is_flag=True, help="Withdraw an approval (recorded).")
def reject(
    sha_prefix: str,
    reason: str,
    state: Path | None,
    kit: Path | None,
    by: str | None,
    override: bool,
) -> None:
    """Refuse the request whose id (or code hash) starts with SHA_PREFIX; it will not run here."""
    from medfed.site.approval import ApprovalStore

    store = ApprovalStore.in_state(_state_dir(state, kit), create=False)
    decision = store.reject(sha_prefix, by=_who(by), reason=reason, override=override)
    _decided("rejected", decision)


# ── egress ledger ────────────────────────────────────────────────────────────────────────


@node.group()
def ledger() -> None:
    """The egress ledger: every message that left this site, hash-chained."""


def _open_ledger(state: Path | None, kit: Path | None, *, must_exist: bool = True) -> EgressLedger:
    from medfed.errors import UsageError
    from medfed.site.ledger import EgressLedger

    book = EgressLedger.in_state(_state_dir(state, kit))
    if must_exist and not book.exists():
        raise UsageError(f"no egress ledger at {book.path}: nothing has left this node yet")
    return book


@ledger.command()
@_STATE
@_KIT
@click.option("--job", default=None, help="Only this job's messages.")
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=None,
    help="Only the last N messages (totals cover all).",
)
def show(state: Path | None, kit: Path | None, job: str | None, last: int | None) -> None:
    """List what left the site, with totals per job."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from medfed.cli.console import out, warn
    from medfed.errors import IntegrityError

    book = _open_ledger(state, kit)
    shown: list[LedgerEntry] = []
    problem = ""
    try:
        shown.extend(e for e in book.entries() if job is None or e.job == job)
    except IntegrityError as exc:  # show what verifies, then say where it stops
        problem = str(exc)
    if last is not None:
        shown = shown[-last:]
    # one destination (the usual case) goes in the caption, so the table fits 80 columns
    places = sorted({e.destination for e in shown})
    caption = f"all sent to {places[0]}" if len(places) == 1 else None
    wanted: list[tuple[str, int | None]] = [
        ("seq", None),
        ("time (UTC)", None),
        ("job", 5),
        ("round", None),
        ("kind", 6),
        *([("to", 6)] if caption is None else []),
        ("bytes", None),
        ("sha256", None),
        ("ε", None),
        *([("note", 4)] if any(e.note for e in shown) else []),
    ]
    table = Table(
        title=escape(f"Egress ledger {book.path}"),
        caption=escape(caption) if caption else None,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for name, width in wanted:
        table.add_column(
            name,
            justify="right" if name in ("seq", "round", "bytes") else "left",
            no_wrap=width is None,
            min_width=width,
            overflow="fold",
        )
    for e in shown:
        cells = {
            "seq": str(e.seq),
            "time (UTC)": _minute(e.time),
            "job": e.job,
            "round": "" if e.round is None else str(e.round),
            "kind": e.kind,
            "to": e.destination,
            "bytes": f"{e.bytes:,}",
            "sha256": e.sha256[:8],
            "ε": "" if e.epsilon is None else f"{e.epsilon:.3g}",
            "note": e.note,
        }
        table.add_row(*(escape(cells[name]) for name, _ in wanted))
    out.print(table)
    totals = Table(title="Totals per job", box=box.SIMPLE_HEAD)
    for name in ("job", "messages", "bytes", "ε (sum)"):
        totals.add_column(name, justify="left" if name == "job" else "right")
    if not problem:
        for t in book.totals().values():
            if job is None or t.job == job:
                eps = "" if t.epsilon is None else f"{t.epsilon:.4g}"
                totals.add_row(escape(t.job), str(t.messages), f"{t.bytes:,}", eps)
        out.print(totals)
    else:
        warn(  # printed as text
            problem + "; shown up to the last entry that verifies (see `medfed node ledger verify`)"
        )


@ledger.command()
@_STATE
@_KIT
@click.option(
    "--anchor",
    default=None,
    metavar="N:HASH",
    help="A head written down earlier: also prove no entry was cut from the end.",
)
def verify(state: Path | None, kit: Path | None, anchor: str | None) -> None:
    """Prove the ledger untampered: exit 0 when every entry and link checks, 1 otherwise."""

    from medfed.cli.console import error, out
    from medfed.site.ledger import LedgerHead

    try:
        mark = LedgerHead.parse(anchor) if anchor is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--anchor") from None
    # with an anchor, a missing ledger is a broken one (its entries were removed), not a mistake
    book = _open_ledger(state, kit, must_exist=mark is None or mark.count == 0)
    check = book.verify(anchor=mark)
    if check.ok:
        out.print(
            f"ledger intact: {check.count} entries, head {check.head}", soft_wrap=True, markup=False
        )
        return
    error(f"ledger broken at entry {check.first_bad_seq}: {check.reason}")  # printed as text
    click.get_current_context().exit(1)


@ledger.command()
@_STATE
@_KIT
def repair(state: Path | None, kit: Path | None) -> None:
    """Set aside a last line torn by a crash (kept in a .torn file); nothing else is changed."""
    from medfed.cli.console import out

    book = _open_ledger(state, kit)
    aside = book.repair()
    if aside is None:
        out.print("nothing to repair: the ledger has no torn last line", soft_wrap=True)
    else:
        out.print(
            f"set the torn last line aside in {aside}; the ledger verifies again",
            soft_wrap=True,
            markup=False,
        )


@node.group()
def budget() -> None:
    """This site's lifetime privacy budget per data set (ε at δ, composed by the accountant)."""


@budget.command("set")
@click.argument("dataset")
@_STATE
@_KIT
@click.option("--epsilon", type=float, required=True, help="Lifetime ε of this data set.")
@click.option("--delta", type=float, default=1e-5, show_default=True, help="The budget's δ.")
def budget_set(
    dataset: str, state: Path | None, kit: Path | None, epsilon: float, delta: float
) -> None:
    """Set (or change) the lifetime budget of DATASET; what was spent stays spent."""
    from medfed.cli.console import out
    from medfed.site.budget import SiteBudget

    book = SiteBudget.in_state(_state_dir(state, kit, create=True))
    book.set_budget(dataset, epsilon=epsilon, delta=delta)
    s = book.status(dataset)
    out.print(
        f"budget of {dataset}: ε = {s.epsilon:g} at δ = {s.delta:g} "
        f"(spent {s.spent:.3g}, committed {s.committed:.3g})",
        markup=False,
    )


@budget.command("show")
@click.argument("dataset", required=False)
@_STATE
@_KIT
def budget_show(dataset: str | None, state: Path | None, kit: Path | None) -> None:
    """Budgets, ε spent (rounds run) and committed (rounds jobs still plan), per data set."""
    from rich.markup import escape
    from rich.table import Table

    from medfed.cli.console import out
    from medfed.errors import UsageError
    from medfed.site.budget import SiteBudget

    book = SiteBudget.in_state(_state_dir(state, kit))
    names = book.datasets() if dataset is None else [dataset]
    if not names:
        raise UsageError(
            "no privacy budget is set on this node; set one with "
            "`medfed node budget set DATASET --epsilon E`"
        )
    table = Table("data set", "ε budget", "δ", "spent", "committed", "left", "jobs")
    for name in names:
        s = book.status(name)
        # job ids come from the coordinator: cells are text, never markup
        jobs = ", ".join(j.job for j in book.jobs(name)) or "—"
        table.add_row(
            escape(name),
            f"{s.epsilon:g}",
            f"{s.delta:g}",
            f"{s.spent:.3g}",
            f"{s.committed:.3g}",
            f"{s.left:.3g}",
            escape(jobs),
        )
    out.print(table)
