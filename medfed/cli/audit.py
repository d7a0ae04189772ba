"""``medfed audit``: attack medfed's own privacy protections and report whether they hold.

The audits live in :mod:`medfed.audit`; this module reads options, shows progress and prints.
Exit code 0 whenever an audit ran, whatever its verdict; ``--fail-on-leak`` exits 1 when the
protected target still leaks (for CI).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from medfed.errors import ConfigError

if TYPE_CHECKING:
    from medfed.audit.report import LeakageReport, MembershipReport, MembershipResult, Verdict

_VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "inconclusive": "bold yellow"}


@click.group()
def audit() -> None:
    """Attack your own federation's protections: reconstruction and membership audits."""


def _check_json_path(json_path: str | None) -> None:
    """Fail before a long audit, not after it, when the report cannot be written."""
    if json_path is None:
        return
    folder = Path(json_path).expanduser().resolve().parent
    if not folder.is_dir():
        raise ConfigError(f"--json {json_path}: the folder {str(folder)!r} does not exist")


@contextmanager
def _progress(total: int) -> Iterator[Callable[[str], None]]:
    """A Rich progress bar on stderr; yields the callback the audits call before each step."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from medfed.cli.console import err

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("starting", total=total)
        started = False

        def step(message: str) -> None:
            nonlocal started
            if started:
                bar.advance(task)
            started = True
            bar.update(task, description=message)

        yield step
        bar.update(task, completed=total)


def _verdict_line(verdict: Verdict, text: str) -> str:
    style = _VERDICT_STYLE[verdict.value]
    return f"[{style}]{verdict.value.upper()}[/]: {text}"


def _fmt(value: float, digits: int = 3) -> str:
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}f}"


def _print_leakage(report: LeakageReport) -> None:
    from rich import box
    from rich.table import Table

    from medfed.audit.report import Verdict
    from medfed.cli.console import out

    config = report.config
    table = Table(
        title=f"Gradient inversion: {config['task']}, {config['sites']} sites, "
        f"{config['batch_size']} record(s) per site",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("scenario", no_wrap=True)
    for name in ("best", "mean", "threshold", "at best", "rebuilt", "leaks"):
        table.add_column(name, justify="right", no_wrap=True)
    for s in report.scenarios:
        sim = s.similarity
        psnr = sim.metric == "psnr_db"
        unit, digits = (" dB", 1) if psnr else ("", 3)
        best = max(range(len(sim.per_record)), key=lambda i: sim.per_record[i], default=None)
        second = "—" if best is None else f"{sim.secondary[best]:.3f}"
        table.add_row(
            s.name,
            _fmt(sim.max, digits) + unit,
            _fmt(sim.mean, digits) + unit,
            f"PSNR≥{sim.threshold:g}{unit}"
            if psnr
            else f"cos≥{sim.threshold:g}, err≤{sim.secondary_max:g}",
            f"{'SSIM' if psnr else 'err'} {second}",
            f"{sim.reconstructed}/{len(sim.per_record)}",
            "[red]yes[/]" if s.leaks else "[green]no[/]",
        )
    out.print(table)
    for s in report.scenarios:
        out.print(f"[bold]{s.name}[/]: {s.description}; attack: {s.attack}", soft_wrap=True)
    out.print(f"[dim]{report.thresholds}[/]", soft_wrap=True)
    explanation = {
        Verdict.PASS: "records are reconstructed from a raw update, and none from what the "
        "coordinator sees under the configured protection.",
        Verdict.FAIL: "records are still reconstructed under the configured protection; "
        "raise --noise-multiplier or keep secure aggregation on.",
        Verdict.INCONCLUSIVE: "the attack reconstructs no record even from a raw update, so "
        "this run shows nothing about the protection (try --batch-size 1).",
    }[report.verdict]
    out.print(_verdict_line(report.verdict, explanation), soft_wrap=True)


@audit.command()
@click.option(
    "--task",
    type=click.Choice(["tabular", "imaging"]),
    default="tabular",
    show_default=True,
    help="tabular: Wisconsin breast cancer and the default MLP, analytic attack; imaging: "
    "synthetic 28×28 scans and the default CNN, gradient-matching attack.",
)
@click.option("--sites", type=int, default=4, show_default=True, help="Sites in the sum.")
@click.option(
    "--batch-size",
    type=int,
    default=1,
    show_default=True,
    help="Records per site in its local step (imaging: at most 4).",
)
@click.option(
    "--clip", type=float, default=1.0, show_default=True, help="DP: L2 clip of an update."
)
@click.option(
    "--noise-multiplier",
    type=float,
    default=1.0,
    show_default=True,
    help="DP: noise std on the sum, in units of --clip (0: clipping only).",
)
@click.option("--no-secagg", is_flag=True, help="The coordinator sees each site's update.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--iterations",
    type=int,
    default=300,
    show_default=True,
    help="Optimisation steps of the image attack.",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write JSON."
)
@click.option("--fail-on-leak", is_flag=True, help="Exit 1 if the protected view leaks (CI).")
def leakage(
    task: str,
    sites: int,
    batch_size: int,
    clip: float,
    noise_multiplier: float,
    no_secagg: bool,
    seed: int,
    iterations: int,
    json_path: str | None,
    fail_on_leak: bool,
) -> None:
    """Can the coordinator rebuild patient records from the updates it receives?

    Each site takes one local training step; the coordinator attacks (1) one site's raw update,
    (2) the sum of all sites' raw updates (secure aggregation alone) and (3) what it sees under
    the configured protection (default: client-level DP with clip 1.0 and noise multiplier 1.0
    on the sum, plus secure aggregation).

    \b
    A record counts as reconstructed when
      tabular: its closest candidate has cosine similarity >= 0.95 to the true record
               and relative error <= 0.1 (the values to within 10%, not only the profile);
      imaging: its best candidate has PSNR >= 20 dB (RMS error <= 10% of the image's range).
    A view leaks when at least one record is reconstructed.

    \b
    Verdict: PASS    the raw update leaks and the protected view does not;
             FAIL    the protected view leaks;
             INCONCLUSIVE  the raw update does not leak, so the run proves nothing.

    \b
    Examples:
      medfed audit leakage
      medfed audit leakage --task imaging --json leakage.json
      medfed audit leakage --noise-multiplier 0 --fail-on-leak
    """
    from medfed.audit.leakage import LEAKAGE_STEPS, LeakageConfig, run_leakage_audit

    config = LeakageConfig(
        task=task,
        sites=sites,
        batch_size=batch_size,
        clip=clip,
        noise_multiplier=noise_multiplier,
        secagg=not no_secagg,
        seed=seed,
        iterations=iterations,
    )
    _check_json_path(json_path)
    with _progress(LEAKAGE_STEPS) as step:
        report = run_leakage_audit(config, progress=step)
    _print_leakage(report)
    _finish(report, json_path, fail_on_leak, protected_leaks=report.scenario("protected").leaks)


def _membership_row(result: MembershipResult) -> list[str]:
    eps = "—" if result.epsilon is None else f"{result.epsilon:.3g}"
    test = "—" if result.test_auroc is None else f"{result.test_auroc:.3f}"
    return [
        result.name,
        f"{result.auroc:.3f}",
        f"{result.auroc_low:.3f}–{result.auroc_high:.3f}",
        f"{result.member_loss:.3f}/{result.nonmember_loss:.3f}",
        test,
        eps,
        "[red]yes[/]" if result.leaks else "[green]no[/]",
    ]


def _print_membership(report: MembershipReport) -> None:
    from rich import box
    from rich.table import Table

    from medfed.audit.report import Verdict
    from medfed.cli.console import out

    table = Table(
        title=f"Membership inference (loss threshold): {report.config['data']}",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("model", no_wrap=True)
    for name in ("AUROC", "95% CI", "loss in/out", "utility", "ε", "leaks"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_row(*_membership_row(report.without_dp))
    table.add_row(*_membership_row(report.with_dp))
    out.print(table)
    out.print(f"[dim]{report.without_dp.description}[/]", soft_wrap=True)
    out.print(
        "[dim]AUROC: the attack's (0.5 = chance); loss in/out: mean loss of members and "
        "non-members; utility: the model's own AUROC on the non-members; "
        f"ε at δ = {report.config['delta']:g}[/]",
        soft_wrap=True,
    )
    out.print(f"[dim]{report.thresholds}[/]", soft_wrap=True)
    explanation = {
        Verdict.PASS: "the attack tells training patients apart without DP, and not with DP-SGD.",
        Verdict.FAIL: "the attack still tells training patients apart under DP-SGD; raise "
        "--noise-multiplier.",
        Verdict.INCONCLUSIVE: "the attack does not beat chance even without DP on these data, so "
        "this run shows nothing about DP (try more --epochs or --data synthetic-ehr).",
    }[report.verdict]
    out.print(_verdict_line(report.verdict, explanation), soft_wrap=True)


@audit.command()
@click.option(
    "--data",
    "data_name",
    type=click.Choice(["synthetic-ehr", "breast-cancer"]),
    default="synthetic-ehr",
    show_default=True,
    help="Tabular data set; members and as many non-members are drawn at random from it.",
)
@click.option(
    "--members", type=int, default=1000, show_default=True, help="Training records (at most half)."
)
@click.option("--epochs", type=int, default=50, show_default=True, help="Training epochs.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option(
    "--noise-multiplier",
    type=float,
    default=1.0,
    show_default=True,
    help="DP-SGD noise std, in units of --max-grad-norm.",
)
@click.option(
    "--max-grad-norm", type=float, default=1.0, show_default=True, help="DP-SGD per-record clip."
)
@click.option("--delta", type=float, default=1e-5, show_default=True, help="The δ of (ε, δ).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write JSON."
)
@click.option("--fail-on-leak", is_flag=True, help="Exit 1 if the DP model leaks (CI).")
def membership(
    data_name: str,
    members: int,
    epochs: int,
    batch_size: int,
    noise_multiplier: float,
    max_grad_norm: float,
    delta: float,
    seed: int,
    json_path: str | None,
    fail_on_leak: bool,
) -> None:
    """Can an attacker tell whether a patient was in the training set?

    Trains the same MLP on the same records twice, without DP (long enough to overfit) and
    with DP-SGD (Opacus), and runs the loss-threshold attack (Yeom et al. 2018) on both:
    score = −loss, AUROC of training records against held-out ones (0.5 = chance).

    \b
    A model leaks when the attack's AUROC >= 0.55 and its 95% interval lies above 0.5.
    Verdict: PASS    the model without DP leaks and the DP model does not;
             FAIL    the DP model leaks;
             INCONCLUSIVE  even the model without DP does not leak on these data.

    \b
    Examples:
      medfed audit membership
      medfed audit membership --noise-multiplier 2 --json membership.json
    """
    from medfed.audit.membership import MEMBERSHIP_STEPS, MembershipConfig, run_membership_audit

    config = MembershipConfig(
        data=data_name,
        members=members,
        epochs=epochs,
        batch_size=batch_size,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        delta=delta,
        seed=seed,
    )
    _check_json_path(json_path)
    with _progress(MEMBERSHIP_STEPS) as step:
        report = run_membership_audit(config, progress=step)
    _print_membership(report)
    _finish(report, json_path, fail_on_leak, protected_leaks=report.with_dp.leaks)


def _finish(
    report: LeakageReport | MembershipReport,
    json_path: str | None,
    fail_on_leak: bool,
    *,
    protected_leaks: bool,
) -> None:
    from medfed.audit.report import write_json
    from medfed.cli.console import out, text

    if json_path is not None:
        written = write_json(report, json_path)
        out.print(f"[dim]wrote {text(written)}[/]")
    if fail_on_leak and protected_leaks:
        raise click.exceptions.Exit(1)
