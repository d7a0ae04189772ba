"""``medfed stats --kit``: a statistics job at the federation's coordinator, and its result.

The researcher needs no patient data: the features come from ``--feature``, the data
contract, or (for a bundled data set) its public description. The job's bundle is the
query's JSON text, so every data steward approves exactly that query; the coordinator keeps
only the released (suppressed) figures, which ``medfed stats --job ID`` shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["federation_options", "fetch_job", "fetch_result", "result_of_view", "submit"]


def federation_options(*, job: str, name: str, wait: str) -> Callable[[Any], Any]:
    """The options that send a query to the real federation (``medfed stats``, ``medfed data
    quality``): ``job`` says what ``--job`` shows, ``name`` the job's default name, ``wait``
    what ``--wait`` waits for."""
    options = (
        click.option("--kit", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Your researcher kit: ask the real federation (a statistics job)."),
        click.option("--job", "job_id", default=None, help=f"Show {job} (with --kit)."),
        click.option("--contract", "contract_path", default=None,
                     type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="Federation: the data contract the sites' data set is under."),
        click.option("--min-sites", type=int, default=2, show_default=True,
                     help="Federation: sites that must approve before the query runs."),
        click.option("--round-timeout", type=float, default=600.0, show_default=True,
                     help="Federation: seconds an exchange waits for the sites."),
        click.option("--name", default=None, help=f"Federation: a name for the job [{name}]."),
        click.option("--wait/--no-wait", default=False, help=f"Federation: wait for {wait}."),
        click.option("--insecure", is_flag=True, hidden=True),
    )  # fmt: skip

    def decorate(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _features(
    query: Any, data: str | None, contract: Path | None, options: dict[str, Any]
) -> list[str]:
    from medfed.errors import ConfigError

    if query.features:
        return list(query.features)
    from medfed.data.statistics.table import feature_names

    if contract is not None:
        from medfed.data.image_contract import read_any_contract

        return list(feature_names(read_any_contract(contract).spec()))
    if data is None:
        raise ConfigError(
            "say which features: --feature NAME (repeatable), --contract FILE or --data NAME"
        )
    from medfed.data import load_dataset

    return list(feature_names(load_dataset(data, options=options).spec))


def submit(
    kit: Path,
    query: Any,
    *,
    data: str | None,
    contract: Path | None,
    secure: bool,
    min_sites: int,
    round_timeout: float,
    name: str | None,
    wait: bool,
    options: dict[str, Any],
    insecure: bool = False,
    follow_up: str = "medfed stats",
) -> tuple[str, Any]:
    """Submit ``query`` as a statistics job; its id, and its result when ``wait``
    (``follow_up``: the command that shows it later, with ``--kit KIT --job ID``)."""
    from medfed.cli.console import out, text
    from medfed.cli.remote import client
    from medfed.data.statistics.codec import query_to_json
    from medfed.federation.coordinator.stats_job import query_document, stats_job_config
    from medfed.records import Params
    from medfed.serde import params_to_bytes

    features = _features(query, data, contract, options)
    data_spec: dict[str, Any] = {}
    if data is not None:
        data_spec["data"] = data
    if contract is not None:
        from medfed.data.image_contract import read_any_contract

        pinned = read_any_contract(contract)
        data_spec.update(contract=pinned.title, contract_sha256=pinned.sha256)
    config = stats_job_config(
        {
            "kind": "statistics",
            "query": query_to_json(query),
            "features": features,
            "privacy": {"secure_aggregation": secure},
            "min_sites": min_sites,
            "round_timeout": round_timeout,
            "data_spec": data_spec,
        }
    )  # checked here as the coordinator checks it
    document = query_document(config["query"], config["features"])
    with client(kit, insecure=insecure) as c:
        bundle = c.upload_blob(document)
        empty = c.upload_blob(params_to_bytes(Params()))  # no model: a statistics job trains none
        view = c.post_json(
            "/v1/jobs",
            {
                "name": name or "statistics",
                "task_name": "statistics",
                "bundle_sha256": bundle,
                "initial_sha256": empty,
                "config": config,
            },
        )
    job_id = str(view["id"])
    out.print(
        f"submitted statistics job [bold]{text(job_id)}[/] (query sha256 {text(bundle)}); each "
        "site's data steward sees the query with `medfed node pending` (and what would leave "
        f"with `medfed node inspect`); then: {follow_up} --kit KIT --job {text(job_id)}",
        soft_wrap=True,
    )
    return job_id, (fetch_result(kit, job_id, wait=True, insecure=insecure) if wait else None)


def result_of_view(view: dict[str, Any]) -> Any:
    """The released result stored with a statistics job's view (None before it ran)."""
    from medfed.data.statistics.codec import query_from_json, result_from_json
    from medfed.errors import ConfigError

    config = view.get("config") or {}
    if config.get("kind") != "statistics":
        raise ConfigError(f"{view.get('id')} is a training job; see it with medfed job status")
    for r in view.get("rounds_detail") or []:
        if isinstance(r.get("statistics"), dict):
            return result_from_json(r["statistics"], query_from_json(config["query"]))
    return None


def fetch_result(kit: Path, job_id: str, *, wait: bool, insecure: bool = False) -> Any:
    """The job's released result; waits for it with ``wait``, else says where the job is."""
    return fetch_job(kit, job_id, wait=wait, insecure=insecure)[1]


def fetch_job(
    kit: Path, job_id: str, *, wait: bool, insecure: bool = False
) -> tuple[dict[str, Any], Any]:
    """The job's view and its released result (None, said, while it runs)."""
    from medfed.cli.console import out, text
    from medfed.cli.remote import client
    from medfed.errors import UsageError

    with client(kit, insecure=insecure) as c:
        view = c.get_json(f"/v1/jobs/{job_id}")
        while wait and view["status"] == "running":
            time.sleep(1)
            view = c.get_json(f"/v1/jobs/{job_id}")
    result = result_of_view(view)
    if result is not None:
        return view, result
    status = str(view.get("status"))
    if status == "running":
        waiting = [s for s in view.get("pending_sites", []) if view["sites"].get(s) != "rejected"]
        out.print(
            f"{text(job_id)} is running; no result yet"
            + (f" (waiting for approval at: {text(', '.join(waiting))})" if waiting else ""),
            soft_wrap=True,
        )
        return view, None
    raise UsageError(f"{job_id} ended as {status} without a result: {view.get('error') or ''}")
