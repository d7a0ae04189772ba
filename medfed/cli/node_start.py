"""``medfed node start``: the agent that runs next to a hospital's data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from medfed.data.base import FederatedDataset, SiteData


@click.command()
@click.option(
    "--kit",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    envvar="MEDFED_KIT",
    help="This site's startup kit from `medfed provision`.",
)
@click.option(
    "--data",
    "data_name",
    required=True,
    help="The data set this site serves: one registered with `medfed node dataset add`, or a "
    "bundled one.",
)
@click.option(
    "--site",
    "data_site",
    default=None,
    help="Which site's share of a bundled data set [the kit's name].",
)
@click.option("--sites", type=int, default=None, help="Number of sites the data set is split into.")
@click.option("--data-dir", default=None, help="Folder of a data set that is not bundled.")
@click.option(
    "--data-seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of a generated data set (synthetic-*): a simulation's --seed gives its sites.",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Data set option, as `medfed simulate --option` (repeatable).",
)
@click.option(
    "--state",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The node's state folder: approvals, egress ledger [KIT/state].",
)
@click.option(
    "--auto-approve",
    is_flag=True,
    help="Approve every job's code without the data steward (development only).",
)
@click.option(
    "--stall-seconds",
    type=click.FloatRange(min=1.0),
    default=120.0,
    show_default=True,
    envvar="MEDFED_STALL_SECONDS",
    help="A model transfer fails (and is resumed later) after this long without progress.",
)
@click.option(
    "--require",
    "require",
    type=click.Choice(["dp", "secagg"]),
    multiple=True,
    help="Refuse every job without this protection (repeatable): the steward's minimum.",
)
@click.option("--insecure", is_flag=True, hidden=True)
def start(
    kit: Path,
    data_name: str,
    data_site: str | None,
    sites: int | None,
    data_dir: str | None,
    data_seed: int,
    options: tuple[str, ...],
    state: Path | None,
    auto_approve: bool,
    stall_seconds: float,
    require: tuple[str, ...],
    insecure: bool,
) -> None:
    """Connect to the coordinator (outbound only) and take part in approved jobs."""
    import time

    from rich.markup import escape

    from medfed.cli.console import err, warn
    from medfed.errors import DataError
    from medfed.federation.identity.kits import load_kit
    from medfed.federation.node.agent import NodeAgent, NodeSettings
    from medfed.federation.transfer.client import client_for_kit
    from medfed.site.datasets import DatasetRegistry

    k = load_kit(kit)
    if k.role != "site":
        raise DataError(f"{kit} is a {k.role} kit; a node needs a site kit")
    state_dir = state or kit / "state"
    registry = DatasetRegistry.in_state(state_dir)
    contract_sha256 = data_problem = None
    raw_data: Callable[[], SiteData] | None = None  # a bundled data set: as it is
    if registry.has(data_name):  # registered by the data steward: served as registered
        given = [
            f
            for f, v in (
                ("--site", data_site),
                ("--sites", sites),
                ("--data-dir", data_dir),
                ("--option", options),
            )
            if v
        ]
        if given:
            raise DataError(
                f"{data_name} is a data set registered on this node; {', '.join(given)} "
                "apply only to bundled data sets"
            )
        served = registry.load(data_name)
        data, spec, contract_sha256 = served.data, served.spec, served.entry.contract_sha256

        def raw_data() -> SiteData:  # read when a job asks to harmonise
            return registry.load_raw(data_name)

        if served.report is not None and not served.report.passed:
            data_problem = served.report.summary()
            warn(
                f"{data_name} {served.report}\nThis node declines every job until the data "
                f"pass (medfed node dataset check {data_name}); jobs hear only the rules broken."
            )
    else:
        dataset = site_dataset(
            data_name, sites=sites, data_dir=data_dir, seed=data_seed, options=options
        )
        name = data_site or k.name
        if name not in dataset.site_names:
            raise DataError(
                f"data set {data_name!r} has no site {name!r}; pass --site, one of: "
                + ", ".join(dataset.site_names)
            )
        data, spec = dataset.site(name), dataset.spec
    if insecure:
        warn("--insecure: talking to the coordinator over plain HTTP. Development only.")
    if auto_approve:
        warn(
            "--auto-approve: every job's code will run here WITHOUT the data steward's "
            "approval. Development only; never with patient data."
        )

    def event(message: str) -> None:
        # every event may hold another party's text (a job's task name, the coordinator's
        # reasons): it is printed as text, never read as markup
        err.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}")

    agent = NodeAgent(
        client=client_for_kit(k, insecure=insecure, stall_seconds=stall_seconds),
        site=k.name,
        data=data,
        spec=spec,
        settings=NodeSettings(
            state_dir=state_dir,
            auto_approve=auto_approve,
            require=frozenset(require),
        ),
        on_event=event,
        dataset=data_name,
        kit=k,
        contract_sha256=contract_sha256,
        data_problem=data_problem,
        raw_data=raw_data,
    )
    agent.lock()  # one node per state folder: a second one is refused here, before it serves
    err.print(
        f"[dim]{time.strftime('%H:%M:%S')}[/] node [bold]{escape(k.name)}[/] "
        f"({data.num_train} training records) → {escape(k.coordinator_url)}"
    )
    try:
        agent.run()
    except KeyboardInterrupt:
        event("node stopped")


def site_dataset(
    name: str,
    *,
    sites: int | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    options: Sequence[str] = (),
) -> FederatedDataset:
    """The data set a node serves its site's share of, loaded as a simulation loads it.

    With the simulation's ``--sites``, seed (``--data-seed``: it only changes generated data
    sets) and ``--option`` values, every site holds exactly the records it holds in that
    simulation (``medfed.orchestration.simulation.SimulationSites``), so a job trains the
    simulation's model.
    """
    from medfed.data import load_dataset
    from medfed.errors import DataError

    parsed: dict[str, str] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DataError(f"--option takes KEY=VALUE, got {item!r}")
        parsed[key.strip()] = value.strip()  # load_dataset parses a value as its option's type
    return load_dataset(name, num_sites=sites, data_dir=data_dir, seed=seed, options=parsed)
