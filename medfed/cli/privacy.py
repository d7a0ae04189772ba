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
    "--sites-per-round",
    type=int,
    help="Sites drawn in each round (a fixed number; no amplification is claimed) "
    "[default: all --sites].",
)
@click.option("--sample-rate", type=float, hidden=True)  # refused with an explanation
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

    σ and ε come from the run's own accountant: sites are drawn as a fixed number per round,
    so no amplification by sampling is claimed (every round counts at q = 1). Prints the
    noise multiplier, the noise std each site adds with and without secure aggregation, and
    ε after a quarter, half, three quarters and all of the rounds.
    """
    import math
    import warnings

    from rich import box
    from rich.table import Table

    from medfed.cli.console import out, warn
    from medfed.errors import ConfigError
    from medfed.privacy.plan import ASSUMPTION, make_plan, secagg_threshold, sites_per_round_of

    if sample_rate is not None:
        raise ConfigError(
            "--sample-rate is not accepted: runs draw a fixed number of sites per round and "
            "claim no amplification by sampling (q = 1); give --sites-per-round instead"
        )
    per_round = sites_per_round_of(sites=sites, sites_per_round=sites_per_round)
    threshold = secagg_threshold(min_sites=min_sites, sites_per_round=per_round)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        p = make_plan(
            rounds=rounds,
            delta=delta,
            clip=clip,
            target_epsilon=target_epsilon,
            noise_multiplier=noise_multiplier,
            min_sites=threshold,
            sites_per_round=per_round,
            accountant=accountant,
        )
    drawn = "" if per_round is None else f", {per_round} sites per round"
    out.print(
        f"client-level DP, {p.rounds} rounds{drawn}, δ = {p.delta:g}, "
        f"{p.accountant.upper()} accountant (the run's)",
        soft_wrap=True,
    )
    out.print(f"assumes {ASSUMPTION}", soft_wrap=True)
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
    # σ rounded up (more noise): a run given the printed value spends at most the plan's ε
    sigma = math.ceil(p.noise_multiplier * 1e6) / 1e6
    run = (
        f"a run of this plan: medfed simulate --data DATA --dp client --rounds {p.rounds} "
        f"--noise-multiplier {sigma:.6f} --clip {p.clip:g} --delta {p.delta:g}"
    )
    if p.min_sites is not None:
        run += f" --min-sites {p.min_sites}"
    if per_round is not None and sites is not None:
        run += f" --sites {sites} --fraction {per_round / sites:.6g}"
    if p.accountant != "rdp":
        run += f" (and privacy.accountant = {p.accountant!r} in its config)"
    out.print(run, soft_wrap=True)
    for w in caught:
        warn(str(w.message))
