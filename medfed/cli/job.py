"""``medfed job``: submit a task to the federation and follow it (researchers)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import click

from medfed.cli.simulate import STRATEGY_OPTIONS

_KIT = click.option(
    "--kit",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    envvar="MEDFED_KIT",
    help="Your researcher kit from `medfed provision`.",
)
_INSECURE = click.option("--insecure", is_flag=True, hidden=True)


@click.group()
def job() -> None:
    """Submit jobs to a federation and follow them."""


@job.command()
@_KIT
@_INSECURE
@click.argument(
    "task_file", required=False, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="A run file (TOML), the same format as `medfed simulate --config`; flags override it.",
)
@click.option("--name", default=None, help="A name for the job [the task file's name].")
@click.option(
    "--data",
    "data_name",
    default=None,
    help="The data set the sites hold (its shape defines the model's input) [the run file's].",
)
@click.option(
    "--contract",
    "contract_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The data contract the sites' data set is registered under: the model's input comes "
    "from it, and no data is needed here.",
)
@click.option("--rounds", type=int, default=None, help="Rounds [10].")
@click.option("--strategy", default=None, help="Aggregation strategy [fedavg].")
@STRATEGY_OPTIONS
@click.option(
    "--min-sites",
    type=int,
    default=None,
    help="Sites a round needs [the run file's; 2 without one].",
)
@click.option("--fraction", type=float, default=None, help="Share of sites asked each round [1].")
@click.option("--seed", type=int, default=None, help="Seed [0].")
@click.option("--round-timeout", type=float, default=None, help="Seconds a round waits [600].")
@click.option("--local-epochs", type=int, default=None, help="Local epochs per round [1].")
@click.option("--batch-size", type=int, default=None, help="[32]")
@click.option("--lr", type=float, default=None, help="Local learning rate [0.05].")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None, help="[sgd]")
@click.option(
    "--dp",
    type=click.Choice(["none", "client", "sample"]),
    default=None,
    help="Differential privacy: client level (DP-FedAvg) or sample level (DP-SGD at each "
    "site); each site's budget pays for it [none].",
)
@click.option(
    "--secagg/--no-secagg",
    default=None,
    help="Secure aggregation: the coordinator sees only the sum [on with --dp].",
)
@click.option(
    "--clip",
    type=float,
    default=None,
    help="DP clip norm of an update (client) or of a record's gradient (sample) [1.0].",
)
@click.option("--noise-multiplier", type=float, default=None, help="DP noise multiplier [1.0].")
@click.option(
    "--target-epsilon", type=float, default=None, help="Calibrate the noise to this ε instead."
)
@click.option("--delta", type=float, default=None, help="DP δ [1e-5].")
@click.option(
    "--norm-factor",
    type=float,
    default=None,
    help="Scale down an update whose L2 norm is over this many times the round's median "
    "(0: no bound) [100].",
)
@click.option(
    "--examples-factor",
    type=float,
    default=None,
    help="Count a site claiming over this many times the round's median number of examples "
    "at that cap (0: no bound) [100].",
)
@click.option(
    "--max-examples",
    type=int,
    default=None,
    help="The most examples any site may claim in a round (0: no cap) [0].",
)
def submit(
    kit: Path,
    insecure: bool,
    task_file: Path | None,
    config_path: str | None,
    name: str | None,
    contract_path: Path | None,
    **flags: Any,
) -> None:
    """Submit TASK_FILE (a Python task module defining `task`) as a federated job.

    The job is described like a simulation: `--config run.toml` takes the same run file as
    `medfed simulate --config` (its `task` names the task file when TASK_FILE is not
    given), and the flags override it. The initial model is built here, from your code; the
    coordinator never runs it. Each site's data steward must approve this exact file before
    their site takes part.

    \b
    Examples:
      medfed job submit examples/breast_mlp.py --data breast-cancer --rounds 20
      medfed job submit --config consortium.toml --rounds 50
    """
    from medfed.cli.console import out, text
    from medfed.cli.remote import client
    from medfed.cli.simulate import run_config_from_flags
    from medfed.data import load_dataset
    from medfed.errors import ConfigError
    from medfed.federation.coordinator.job_config import JobConfig
    from medfed.site.task_loading import load_task
    from medfed.tensor_file import write_params

    if config_path is None and flags["min_sites"] is None:
        flags["min_sites"] = 2  # a federation's round needs two hospitals unless told
    if config_path is None and flags["data_name"] is None:
        raise ConfigError("name the data set the sites hold: --data NAME (or --config run.toml)")
    run = run_config_from_flags(config_path, flags)
    task_file = _task_file(task_file, run.task)
    data = run.data
    contract = None
    if contract_path is not None:  # the input is the contract's: no patient data needed here
        from medfed.data.image_contract import read_any_contract

        contract = read_any_contract(contract_path)  # a table's or an image contract
        spec = contract.spec()
    else:
        spec = load_dataset(data.name, data_dir=data.dir, options=data.options).spec
    task = load_task(f"{task_file}:task")
    data_spec: dict[str, Any] = {
        "kind": str(spec.kind),
        "input_shape": list(spec.input_shape),
        "n_classes": spec.n_classes,
        "data": data.name,
    }
    if spec.kind.value == "regression":  # the default model predicts in the target's unit
        data_spec.update(target_center=spec.target_center, target_scale=spec.target_scale)
    if contract is not None:
        data_spec.update(contract=contract.title, contract_sha256=contract.sha256)
    if data.harmonise != "none":  # the features the sites' statistics are asked about
        from medfed.data.statistics.table import feature_names

        data_spec["feature_names"] = list(feature_names(spec))
    config = JobConfig(run=run, data_spec=data_spec)
    seed = config.run.seed
    initial = task.initial_params(spec, seed=seed)
    # streamed into a file and uploaded chunk by chunk from it: no copy of it as bytes
    with (
        tempfile.TemporaryDirectory(prefix="medfed-submit-") as tmp,
        client(kit, insecure=insecure) as c,
    ):
        model = Path(tmp) / "initial.safetensors"
        initial_sha, _ = write_params(model, initial)
        bundle_sha = c.upload_blob(task_file.read_bytes())
        c.upload_file(model, sha256=initial_sha)
        view = c.post_json(
            "/v1/jobs",
            {
                "name": name or task_file.stem,
                "task_name": task.name,
                "bundle_sha256": bundle_sha,
                "initial_sha256": initial_sha,
                "config": config.to_json(),
            },
        )
    out.print(
        f"submitted [bold]{text(view['id'])}[/] ({text(view['name'])}); task sha256 "
        f"{text(bundle_sha)}",
        soft_wrap=True,
    )
    out.print(
        "each site's data steward sees its code and settings with `medfed node pending` and "
        f"approves them with: medfed node approve ID (or {text(bundle_sha[:12])}, the code's hash)",
        soft_wrap=True,
    )


def _task_file(given: Path | None, ref: str | None) -> Path:
    """The task file to submit: TASK_FILE, or the run file's ``task`` (``path.py[:task]``)."""
    from medfed.errors import ConfigError

    if given is not None:
        return given
    if ref is None:
        raise ConfigError(
            'a job needs its task file: give TASK_FILE, or task = "path/to/task.py" in the run file'
        )
    path, _, attribute = ref.partition(":")
    if attribute not in ("", "task"):
        raise ConfigError(
            f"a job's task file must define its task as `task` (the run file names {ref!r}): "
            "rename it in the file, or give the file as TASK_FILE"
        )
    if not Path(path).is_file():
        raise ConfigError(f"the run file's task file {path} does not exist")
    return Path(path)


@job.command("list")
@_KIT
@_INSECURE
def list_(kit: Path, insecure: bool) -> None:
    """Your jobs."""
    from rich import box
    from rich.table import Table

    from medfed.cli.console import out, text
    from medfed.cli.remote import client

    with client(kit, insecure=insecure) as c:
        rows = c.get_json("/v1/jobs")
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("job", "name", "status", "rounds", "submitted"):
        table.add_column(col)
    for r in rows:
        table.add_row(  # the coordinator's text: never markup
            text(r["id"]),
            text(r["name"]),
            text(r["status"]),
            f"{r['rounds_done']}/{r['rounds']}",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"])),
        )
    out.print(table)


def _print_status(view: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    from medfed.cli.console import out, text

    # every string in a view is the coordinator's (some of it a site's): printed as text
    out.print(
        f"[bold]{text(view['id'])}[/] {text(view['name'])}: [bold]{text(view['status'])}[/], "
        f"round {text(view['rounds_done'])} of {text(view['rounds'])}"
        + (f" — {text(view['error'])}" if view.get("error") else "")
    )
    sites = view.get("sites", {})
    if sites:
        out.print("sites: " + ", ".join(text(f"{s} ({a})") for s, a in sorted(sites.items())))
    for site, reason in sorted((view.get("declined") or {}).items()):
        out.print(text(f"  {site} declined: {reason}"))
    # a site that declined is not waiting: it is listed above with its decision
    waiting = [s for s in view.get("pending_sites", []) if sites.get(s) != "rejected"]
    if waiting:
        out.print("[yellow]waiting for approval at:[/] " + ", ".join(map(text, waiting)))
    if (view.get("config") or {}).get("kind") == "statistics":  # its released tables
        from medfed.cli.stats import show_result
        from medfed.cli.stats_job import result_of_view

        result = result_of_view(view)
        if result is not None:
            show_result(result)
        return
    rounds = view.get("rounds_detail", [])
    if rounds:
        table = Table(box=box.SIMPLE_HEAD, title="federated evaluation per round")
        private = any((r.get("privacy") or {}).get("epsilon") is not None for r in rounds)
        columns = ["round", "trained", "failed", "loss", "accuracy", "AUROC", "C-index"]
        for col in columns + (["ε"] if private else []):
            table.add_column(col, justify="right")
        for r in rounds[-10:]:
            ev = r.get("evaluate") or {}

            def f(key: str, ev: dict[str, Any] = ev) -> str:
                return "—" if ev.get(key) is None else f"{ev[key]:.3f}"

            cells = [
                text(r["round"]),
                str(len(r["trained"])),
                str(len(r["failures"])),
                f("loss"),
                f("accuracy"),
                f("auroc"),
                f("c_index"),
            ]
            if private:
                eps = (r.get("privacy") or {}).get("epsilon")
                cells.append("—" if eps is None else f"{eps:.3g}")
            table.add_row(*cells)
        out.print(table)
        last = (rounds[-1].get("privacy") or {}) if private else {}
        if last.get("epsilon") is not None:
            out.print(
                f"privacy: ε = {last['epsilon']:.3g} at δ = {last.get('delta', 0):g} after "
                f"round {text(rounds[-1]['round'])} (client level, noise multiplier "
                f"{last.get('noise_multiplier', 0):.3g})"
            )
        per_site = rounds[-1].get("epsilon_per_site") or {}
        if per_site:  # sample level: each site's DP-SGD accountant
            out.print(
                f"privacy: ε per site after round {text(rounds[-1]['round'])} (sample level, "
                "DP-SGD): " + ", ".join(f"{text(s)} {e:.3g}" for s, e in sorted(per_site.items()))
            )


@job.command()
@_KIT
@_INSECURE
@click.argument("job_id")
@click.option("--watch", is_flag=True, help="Follow the job until it ends.")
def status(kit: Path, insecure: bool, job_id: str, watch: bool) -> None:
    """A job's state, sites (approved or pending) and per-round evaluation."""
    from medfed.cli.remote import client

    with client(kit, insecure=insecure) as c:
        view = c.get_json(f"/v1/jobs/{job_id}")
        while watch and view["status"] == "running":
            time.sleep(2)
            view = c.get_json(f"/v1/jobs/{job_id}")
    _print_status(view)


@job.command()
@_KIT
@_INSECURE
@click.argument("job_id")
def logs(kit: Path, insecure: bool, job_id: str) -> None:
    """What happened in a job, from the coordinator's audit log."""
    from medfed.cli.console import out
    from medfed.cli.remote import client

    with client(kit, insecure=insecure) as c:
        rows = c.get_json(f"/v1/jobs/{job_id}/logs")
    for r in rows:
        when = time.strftime("%H:%M:%S", time.localtime(r["time"]))
        out.print(
            f"{when}  {r['principal']:<18} {r['action']:<14} {r['target']:<28} "
            f"{r['outcome']} {r['detail']}",
            soft_wrap=True,
            markup=False,
        )


@job.command()
@_KIT
@_INSECURE
@click.argument("job_id")
def cancel(kit: Path, insecure: bool, job_id: str) -> None:
    """Stop a running job (rounds already done are kept)."""
    from medfed.cli.remote import client

    with client(kit, insecure=insecure) as c:
        view = c.post_json(f"/v1/jobs/{job_id}/cancel", {})
    _print_status(view)


@job.command()
@_KIT
@_INSECURE
@click.argument("job_id")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the model [JOB_ID.safetensors].",
)
def download(kit: Path, insecure: bool, job_id: str, out: Path | None) -> None:
    """Download the job's latest global model (safetensors, checked against its sha256)."""
    from medfed.cli.console import out as console
    from medfed.cli.remote import client

    target = out or Path(f"{job_id}.safetensors")
    with client(kit, insecure=insecure) as c:
        view = c.get_json(f"/v1/jobs/{job_id}")
        if (view.get("config") or {}).get("kind") == "statistics":
            from medfed.errors import UsageError

            raise UsageError(
                f"{job_id} is a statistics job: it has no model; see its released figures with "
                f"medfed stats --kit KIT --job {job_id}"
            )
        # streamed to TARGET.part, checked, then renamed: a broken download resumes
        c.download_blob_to(view["params_sha256"], target)
    console.print(
        f"wrote {target} (round {view['rounds_done']}, sha256 {view['params_sha256']})",
        markup=False,
    )
