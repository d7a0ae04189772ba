"""``medfed node inspect``: what this site would send for a statistics query, before it leaves.

The data steward names a data set (registered with ``medfed node dataset add``, or a bundled
one) and a query — the options of ``medfed stats``, or ``--job ID`` for a statistics job
waiting for approval — and sees the exact sums this site would send for the query's first
exchange (:func:`medfed.site.statistics.site_contribution`): counts and sums over records,
never a record. ``--json`` prints the raw message and reply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from medfed.cli.stats import QUERY_OPTIONS, query_from_options

__all__ = ["inspect"]


@click.command()
@click.argument("dataset")
@click.option("--state", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The node's state folder [KIT/state].")  # fmt: skip
@click.option("--kit", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="MEDFED_KIT", help="The site kit; its state folder is used.")  # fmt: skip
@click.option("--site", "data_site", default=None,
              help="A bundled data set: which site's share [the kit's name].")  # fmt: skip
@click.option("--job", "job_id", default=None,
              help="A statistics job waiting for approval here: inspect its query.")  # fmt: skip
@QUERY_OPTIONS
@click.option("--json", "as_json", is_flag=True, help="Print the raw message and reply (JSON).")
def inspect(
    dataset: str,
    state: Path | None,
    kit: Path | None,
    data_site: str | None,
    job_id: str | None,
    as_json: bool,
    **query_options: Any,
) -> None:
    """Show exactly what this site would send for a statistics query on DATASET.

    \b
    Examples:
      medfed node inspect bc --kit KIT --feature age --statistic count --min-count 10
      medfed node inspect bc --kit KIT --job job-1234abcd --json
    """
    from medfed.cli.console import out, text
    from medfed.data.statistics.answer import resolve_features
    from medfed.data.statistics.table import feature_names
    from medfed.errors import DataError
    from medfed.federation.node.statistics import first_message, pending_statistics, preview

    data, spec = _served(dataset, state, kit, data_site)
    if job_id is not None:
        query, features = pending_statistics(_pending_terms(state, kit, job_id))
    else:
        query = query_from_options(**query_options)
        features = resolve_features(query, feature_names(spec))
    message = first_message(query, features)
    try:
        message, sent = preview(data, spec, query, features)
    except DataError as exc:  # the site declines: only that refusal would leave
        if as_json:
            failure = {"kind": type(exc).__name__, "message": str(exc)}
            click.echo(json.dumps({"message": message, "reply": {"failure": failure}}, indent=2))
            return
        out.print(
            f"This site would send no statistics on {text(dataset)} for this query: "
            f"{text(str(exc))}. Only that refusal would leave.",
            soft_wrap=True,
        )
        return
    layout = [[name, size] for name, size in sent.layout]
    blocks = {name: [float(v) for v in sent[name]] for name in sent}
    if as_json:
        reply = {"stats": "contribution", "layout": layout, "blocks": blocks}
        click.echo(json.dumps({"message": message, "reply": reply}, indent=2))
        return
    _print(out, text, dataset, features, message, blocks, query.min_count)


def _print(
    out: Any,
    text: Any,
    dataset: str,
    features: tuple[str, ...],
    message: dict[str, Any],
    blocks: dict[str, list[float]],
    min_count: int,
) -> None:
    from rich import box
    from rich.table import Table

    def cell(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else f"{v:.6g}"

    out.print(
        f"What this site would send for the query's first exchange on {text(dataset)} "
        f"(stage {text(message['query']['stage'])}; sites with fewer than {min_count} "
        "records send nothing):",
        soft_wrap=True,
    )
    per_feature = [n for n, v in blocks.items() if len(v) == len(features) and n != "rows"]
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("feature")
    for name in per_feature:
        table.add_column(text(name), justify="right")
    for i, feature in enumerate(features):
        table.add_row(text(feature), *(cell(blocks[n][i]) for n in per_feature))
    out.print(f"records: {cell(blocks['rows'][0])}" if "rows" in blocks else "")
    out.print(table)
    for name, values in blocks.items():
        if name not in per_feature and name != "rows":
            out.print(f"{text(name)}: " + ", ".join(cell(v) for v in values), soft_wrap=True)
    if message["query"].get("noise_multiplier") is not None:
        out.print("[dim]DP: each send draws fresh noise; these figures are one such draw[/]")
    out.print(
        "[dim]only counts and sums over records leave; a second exchange (histograms, "
        "quantiles, survival) is asked on the federation's released figures[/]",
        soft_wrap=True,
    )


def _served(dataset: str, state: Path | None, kit: Path | None, site: str | None) -> Any:
    """The data set's records here: registered on this node, or a bundled one's share."""
    from medfed.errors import DataError
    from medfed.site.datasets import DatasetRegistry

    folder = state or (kit / "state" if kit is not None else None)
    if folder is not None and DatasetRegistry.in_state(folder).has(dataset):
        served = DatasetRegistry.in_state(folder).load(dataset)
        if served.report is not None and not served.report.passed:
            raise DataError(f"{dataset} {served.report}; this node sends nothing from it")
        return served.data, served.spec
    from medfed.cli.node_start import site_dataset

    try:
        loaded = site_dataset(dataset)
    except DataError as exc:
        raise DataError(
            f"{dataset!r} is not registered on this node (medfed node dataset list shows what "
            f"is), nor a bundled data set: {exc}"
        ) from None
    name = site or (None if kit is None else kit.name)
    if name not in loaded.site_names:
        raise DataError(
            f"{dataset!r} is not registered on this node; for a bundled data set say which "
            f"site's share with --site (one of {', '.join(loaded.site_names)})"
        )
    return loaded.site(name), loaded.spec


def _pending_terms(state: Path | None, kit: Path | None, job_id: str) -> Any:
    from medfed.cli.node import _state_dir
    from medfed.errors import UsageError
    from medfed.site.approval import ApprovalStore

    store = ApprovalStore.in_state(_state_dir(state, kit), create=False)
    found = [r for r in store.all() if r.job == job_id]
    if not found:
        raise UsageError(f"no job {job_id} has asked this node; medfed node pending lists them")
    return found[-1].terms
