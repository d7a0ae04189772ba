"""``medfed privacy``: plan the noise and the ε of a differentially private run.

The numbers come from :mod:`medfed.privacy.plan`; this module only reads options and prints.
"""

from __future__ import annotations

import click


@click.group()
def privacy() -> None:
    """Differential privacy: plan noise and budgets before a run."""


@privacy.command("plan")
@click.option("--target-epsilon", type=float, help="The ε the whole run may spend.")
@click.option(
    "--noise-multiplier", type=float, help="Instead of a target: the ε of this much noise."
)
@click.option("--delta", type=float, default=1e-5, show_default=True, help="The δ of (ε, δ)-DP.")
@click.option("--rounds", type=int, required=True, help="Rounds of the run.")
@click.option("--sites", type=int, help="Sites in the federation.")
@click.option(
    "--sites-per-round", type=int, help="Sites asked in each round [default: all --sites]."
)
@click.option(
    "--sample-rate",
    type=float,
    help="Instead of --sites/--sites-per-round: each site's chance to be in a round.",
)
@click.option(
    "--clip", type=float, default=1.0, show_default=True, help="L2 clip norm of an update."
)
@click.option(
    "--min-sites",
    type=int,
    help="Secure-aggregation threshold: sites whose noise is always in the sum "
    "[default: --sites-per-round].",
)
@click.option("--accountant", type=click.Choice(["rdp", "pld"]), default="rdp", show_default=True)
def plan(
    target_epsilon: float | None,
    noise_multiplier: float | None,
    delta: float,
    rounds: int,
    sites: int | None,
    sites_per_round: int | None,
    sample_rate: float | None,
    clip: float,
    min_sites: int | None,
    accountant: str,
) -> None:
    """The noise a client-level DP run needs for a target ε (or the ε of a given noise).

    Prints the noise multiplier, the noise std each site adds with and without secure
    aggregation, and ε after a quarter, half, three quarters and all of the rounds.
    """
    from rich import box
    from rich.table import Table

    from medfed.cli.console import out
    from medfed.privacy.plan import make_plan, sample_rate_of, secagg_threshold

    if sites is not None and sites_per_round is None and sample_rate is None:
        sites_per_round = sites  # every site in every round
    q = sample_rate_of(sites=sites, sites_per_round=sites_per_round, sample_rate=sample_rate)
    threshold = secagg_threshold(min_sites=min_sites, sites_per_round=sites_per_round)
    p = make_plan(
        rounds=rounds,
        delta=delta,
        sample_rate=q,
        clip=clip,
        target_epsilon=target_epsilon,
        noise_multiplier=noise_multiplier,
        min_sites=threshold,
        accountant=accountant,
    )
    out.print(
        f"client-level DP, {p.rounds} rounds, sample rate q = {p.sample_rate:.4g}, "
        f"δ = {p.delta:g}, {p.accountant.upper()} accountant"
    )
    out.print(f"noise multiplier σ       {p.noise_multiplier:.4f}")
    out.print(f"ε after all rounds       {p.epsilon:.4g}")
    out.print(f"central noise std σ·C    {p.central_std:.4g}  (on the sum of clipped updates)")
    out.print(f"per-site std, no secagg  {p.site_std_without_secagg:.4g}  (each site adds it all)")
    secure = p.site_std_with_secagg
    if secure is None:
        out.print("per-site std, secagg     give --min-sites (the secure-aggregation threshold)")
    else:
        out.print(f"per-site std, secagg     {secure:.4g}  (σ·C/√{p.min_sites}; dropouts only add)")
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("rounds", justify="right")
    table.add_column("ε", justify="right")
    for r, eps in p.milestones:
        table.add_row(str(r), f"{eps:.4g}")
    out.print(table)
