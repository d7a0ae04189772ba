"""``medfed simulate`` and ``medfed demo``: a federation of simulated hospitals on this machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from medfed.config import RunConfig

if TYPE_CHECKING:
    from medfed.orchestration.checkpoint import RoundCheckpoint
    from medfed.orchestration.run_store import RunStore
    from medfed.orchestration.simulation import Simulation, SimulationResult


DATA_OPTIONS = click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Data set option, e.g. --option alpha=0.3 (repeatable).",
)
"""``--option KEY=VALUE``: a data set's own knobs (`medfed simulate`, `medfed data export`)."""

STRATEGY_OPTIONS = click.option(
    "--strategy-option",
    "strategy_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A strategy's option, e.g. --strategy-option mu=0.1 (repeatable; see `medfed "
    "strategy list`).",
)
"""``--strategy-option KEY=VALUE`` (`medfed simulate`, `medfed job submit`)."""


def _demo_config(out: str, rounds: int | None, backend: str | None) -> RunConfig:
    from medfed.config import config_from_dict

    base = config_from_dict(
        {
            "rounds": 20,
            "seed": 0,
            "out": out,
            "data": {"name": "breast-cancer", "sites": 4},
            "train": {"local_epochs": 1, "batch_size": 16, "learning_rate": 0.05},
            "strategy": {"name": "fedavg", "min_sites": 2},
            "evaluation": {"every": 1, "baselines": True},
        }
    )
    return base.with_overrides(rounds=rounds, **{"backend.kind": backend})


@click.command()
@click.option("--out", default="runs/demo", show_default=True, help="Run folder (replaced).")
@click.option("--rounds", type=int, default=None, help="Rounds of federated training [20].")
@click.option(
    "--backend",
    type=click.Choice(["inprocess", "process"]),
    default=None,
    help="Run sites in this process or in worker processes.",
)
def demo(out: str, rounds: int | None, backend: str | None) -> None:
    """Four hospitals learn to spot malignant breast tumours together.

    Real data (Wisconsin breast cancer, bundled) split into four hospitals that differ in size,
    case mix and referral pattern. Prints, for each hospital, the federated model against the
    model it could train alone and against pooling everyone's records, on its own patients.
    """
    config = _demo_config(out, rounds, backend)
    _run(config, overwrite=True, title="medfed demo: 4 hospitals, breast cancer (Wisconsin)")


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="A run file (TOML); flags below override it.",
)
@click.option(
    "--task",
    default=None,
    help="Task as path/to/task.py:name (default: a model that fits the data).",
)
@click.option("--data", "data_name", default=None, help="Data set name (see `medfed data list`).")
@click.option(
    "--data-dir", default=None, help="Folder of a data set that is not bundled (tcga-brca)."
)
@click.option("--sites", type=int, default=None, help="Number of simulated sites.")
@click.option(
    "--harmonise",
    type=click.Choice(["none", "standardise", "combat"]),
    default=None,
    help="Standardise features with the federation's figures (combat: and remove site "
    "effects) [none].",
)
@DATA_OPTIONS
@click.option(
    "--personalise",
    type=click.Choice(["none", "finetune", "fedper"]),
    is_flag=False,
    flag_value="finetune",  # config.DEFAULT_PERSONALISE
    default=None,
    help="Evaluate each site with its own model too: finetune (epochs chosen on a validation "
    "split of its training records) or fedper (a local head); alone: finetune.",
)
@click.option("--rounds", type=int, default=None, help="Rounds of federated training.")
@click.option(
    "--seed", type=int, default=None, help="Seed: the same seed repeats a run bit for bit."
)
@click.option("--strategy", default=None, help="Aggregation strategy [fedavg].")
@STRATEGY_OPTIONS
@click.option("--fraction", type=float, default=None, help="Share of sites sampled each round.")
@click.option(
    "--min-sites", type=int, default=None, help="Fewest valid updates for a round to count."
)
@click.option("--local-epochs", type=int, default=None, help="Local epochs per round.")
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None, help="Local learning rate.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None)
@click.option("--backend", type=click.Choice(["inprocess", "process"]), default=None)
@click.option("--workers", type=int, default=None, help="Worker processes (process backend).")
@click.option(
    "--baselines/--no-baselines",
    default=None,
    help="Also train local-only and pooled models for comparison.",
)
@click.option(
    "--dp",
    type=click.Choice(["none", "client", "sample"]),
    default=None,
    help="Differential privacy: client-level (DP-FedAvg) or sample-level (DP-SGD) [none].",
)
@click.option(
    "--secagg/--no-secagg",
    default=None,
    help="Secure aggregation: the coordinator sees only the sum [on with --dp].",
)
@click.option("--clip", type=float, default=None, help="DP clip norm of an update [1.0].")
@click.option("--noise-multiplier", type=float, default=None, help="DP noise multiplier [1.0].")
@click.option(
    "--target-epsilon", type=float, default=None, help="Calibrate the noise to this ε instead."
)
@click.option("--delta", type=float, default=None, help="DP δ [1e-5].")
@click.option(
    "--adaptive-clip", is_flag=True, default=None, help="Clip at a quantile of update norms."
)
@click.option("--out", default=None, help="Run folder [runs/DATA-TIMESTAMP].")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option(
    "--resume",
    "resume",
    type=click.Path(file_okay=False),
    default=None,
    metavar="RUN",
    help="Go on with an interrupted run from its last finished round (no other options).",
)
def simulate(
    config_path: str | None,
    options: tuple[str, ...],
    overwrite: bool,
    resume: str | None,
    **flags: Any,
) -> None:
    """Simulate a federation on this machine and write a run folder.

    \b
    Examples:
      medfed simulate --data synthetic-ehr --sites 8 --option alpha=0.3 --rounds 30
      medfed simulate --task examples/breast_mlp.py:task --data breast-cancer --rounds 10
      medfed simulate --config runs/demo/config.toml --out runs/again
      medfed simulate --data breast-cancer --dp client --target-epsilon 8 --rounds 20
      medfed simulate --resume runs/breast-cancer-20261207-101500
    """
    if resume is not None:
        given = [k for k, v in flags.items() if v is not None and v != ()]
        if config_path is not None or options or overwrite or given:
            from medfed.errors import UsageError

            raise UsageError(
                "--resume goes on with the run's own config.toml; drop the other options "
                "(to change settings, start a new run with --config RUN/config.toml)"
            )
        _run(None, overwrite=False, title=f"medfed simulate --resume {resume}", resume=resume)
        return
    config = run_config_from_flags(config_path, flags, options)
    _refuse_unused_data_dir(config.data.name, config.data.dir)
    if config.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        config = config.with_overrides(out=f"runs/{_run_label(config.data.name)}-{stamp}")
    _run(config, overwrite=overwrite, title=f"medfed simulate: {config.data.name}")


_FLAG_KEYS = {
    "task": "task",
    "data_name": "data.name",
    "data_dir": "data.dir",
    "sites": "data.sites",
    "harmonise": "data.harmonise",
    "personalise": "personalise.method",
    "rounds": "rounds",
    "seed": "seed",
    "round_timeout": "round_timeout",
    "strategy": "strategy.name",
    "fraction": "strategy.fraction",
    "min_sites": "strategy.min_sites",
    "local_epochs": "train.local_epochs",
    "batch_size": "train.batch_size",
    "lr": "train.learning_rate",
    "optimizer": "train.optimizer",
    "backend": "backend.kind",
    "workers": "backend.workers",
    "baselines": "evaluation.baselines",
    "out": "out",
    "dp": "privacy.dp",
    "secagg": "privacy.secure_aggregation",
    "clip": "privacy.clip_norm",
    "noise_multiplier": "privacy.noise_multiplier",
    "target_epsilon": "privacy.target_epsilon",
    "delta": "privacy.delta",
    "adaptive_clip": "privacy.adaptive_clip",
    "norm_factor": "bounds.norm_factor",
    "examples_factor": "bounds.examples_factor",
    "max_examples": "bounds.max_examples",
}
"""Each command-line flag of `medfed simulate` and `medfed job submit`: its run-file key."""


def run_config_from_flags(
    config_path: str | None, flags: dict[str, Any], options: tuple[str, ...] = ()
) -> RunConfig:
    """The run file (or the defaults) with the flags given on the command line applied.

    Shared by `medfed simulate` and `medfed job submit`: a flag means the same run-file key
    in both; DP turns secure aggregation on unless told otherwise; a DP setting without DP is
    refused.
    """
    from medfed.config import load_config

    config = load_config(config_path) if config_path else RunConfig()
    data_options = {**config.data.options, **parse_options(options)}
    flags = dict(flags)
    strategy_options = tuple(flags.pop("strategy_options", None) or ())
    if flags.get("dp") not in (None, "none") and flags.get("secagg") is None:
        flags["secagg"] = True  # DP's noise is split across sites under secure aggregation
    changes = {_FLAG_KEYS[k]: v for k, v in flags.items() if v is not None}
    if options:
        changes["data.options"] = data_options
    if strategy_options:
        given = parse_options(strategy_options, flag="--strategy-option")
        changes["strategy.options"] = {**config.strategy.options, **given}
    config = config.with_overrides(**changes)
    refuse_dp_flags_without_dp(config.privacy.dp, {k: flags.get(k) for k in _DP_ONLY})
    return config


def parse_options(
    options: tuple[str, ...], *, flag: str = "--option"
) -> dict[str, bool | int | float | str]:
    """``--option KEY=VALUE`` flags as a dict; values are parsed (true, 3, 0.5, text)."""
    from medfed.errors import ConfigError

    parsed: dict[str, bool | int | float | str] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}")
        parsed[key.strip()] = _parse_scalar(value.strip())
    return parsed


_DP_ONLY = ("noise_multiplier", "target_epsilon", "clip", "delta", "adaptive_clip")
"""Flags that mean something only in a private run."""


def refuse_dp_flags_without_dp(dp: str, given: dict[str, object]) -> None:
    """A DP setting without ``--dp`` would train without privacy: refuse it (exit 2)."""
    from medfed.errors import ConfigError

    named = ["--" + k.replace("_", "-") for k, v in given.items() if v is not None]
    if dp == "none" and named:
        verb = "applies" if len(named) == 1 else "apply"
        raise ConfigError(
            f"{', '.join(named)} {verb} only to a private run, and this one has no DP: add "
            "--dp client (whole sites) or --dp sample (each patient's records)"
        )


def _refuse_unused_data_dir(name: str, data_dir: str | None) -> None:
    """A folder given for a data set that is bundled would be ignored: refuse it (exit 2)."""
    from medfed.data import available_datasets
    from medfed.errors import DataError

    if data_dir is None:
        return
    key = name.strip().lower().replace("_", "-")
    infos = available_datasets()
    info = next((i for i in infos if i.name == key), None)
    if info is not None and not info.needs_data_dir:
        from_folder = ", ".join(i.name for i in infos if i.needs_data_dir)
        raise DataError(
            f"--data-dir (data.dir) {data_dir} would be ignored: {info.name} is bundled with "
            f"medfed and read from no folder; drop --data-dir (only {from_folder} "
            "is read from one)"
        )


def _run_label(data_name: str) -> str:
    """A data set's name for a run folder: a data set file's stem, else the bundled name."""
    from medfed.data.files import is_data_file

    return Path(data_name).stem if is_data_file(data_name) else data_name


def _parse_scalar(text: str) -> bool | int | float | str:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _check_writable(out: Path) -> None:
    """Refuse an ``--out`` that cannot be created or written, before anything trains."""
    import os

    from medfed.errors import UsageError

    folder = out.expanduser().absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(
            f"cannot write the run folder {out}: {existing} is a file, not a folder; "
            "choose another --out"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "the folder" if existing == folder else f"{existing}, where it would be created,"
        raise UsageError(
            f"cannot write the run folder {out}: {what} is not writable by you; "
            "choose another --out"
        )


def _privacy_lines(result: SimulationResult, *, delta: float) -> list[str]:
    """The final ε and δ of a private run, as the terminal shows them (none without DP)."""
    from medfed.reporting.summary import privacy_summary

    privacy = privacy_summary(result)
    lines: list[str] = []
    if "client_level" in privacy:
        p = privacy["client_level"]
        lines.append(
            f"privacy: ε = {p['epsilon']:.3g} at δ = {p['delta']:g} after "
            f"{len(result.history)} rounds (client-level DP, noise multiplier "
            f"{p['noise_multiplier']:.3g}, clip {p['clip_norm']:.3g})"
        )
    per_site: dict[str, float] = privacy.get("sample_level_epsilon", {})
    if per_site:  # each site's own DP-SGD accountant; never averaged
        worst = max(per_site.values())
        lines.append(
            f"privacy: largest site ε = {worst:.3g} at δ = {delta:g} after "
            f"{len(result.history)} rounds (sample-level DP-SGD; per site: "
            + ", ".join(f"{s} {e:.3g}" for s, e in sorted(per_site.items()))
            + ")"
        )
    return lines


def _run(
    config: RunConfig | None, *, overwrite: bool, title: str, resume: str | None = None
) -> None:
    from medfed.cli.console import err
    from medfed.errors import UsageError
    from medfed.orchestration.run_store import RunStore
    from medfed.orchestration.simulation import Simulation

    checkpoint = None
    if resume is not None:
        store, config, checkpoint = RunStore.resume(resume)
        with err.status("preparing data and model…"):
            simulation = Simulation(config, state_dir=store.path / "site-state")
        store.mark("running", f"resumed after round {checkpoint.round}")
    else:
        assert config is not None and config.out is not None
        RunStore.check_free(config.out, overwrite=overwrite)
        _check_writable(Path(config.out))
        with err.status("preparing data and model…"):
            simulation = Simulation(config, state_dir=Path(config.out) / "site-state")
        try:
            store = RunStore(config.out, overwrite=overwrite)
            store.start(simulation.config)  # resolved: repeats this run exactly
        except OSError as exc:  # what _check_writable cannot foresee (a full disk, a race)
            raise UsageError(
                f"cannot write the run folder {config.out}: {exc.strerror or exc}; "
                "choose another --out"
            ) from None
    assert config is not None and config.out is not None
    try:
        _write_quality(store.path, simulation)
        _train_into(store, simulation, config, checkpoint, title)
    finally:
        store.close()


def _write_quality(folder: Path, simulation: Simulation) -> None:
    """The data-quality report across sites into the run folder, before training."""
    import json

    from medfed.cli.console import err
    from medfed.serde import atomic_write

    with err.status("data-quality report across sites…"):
        report = simulation.data_quality()
    if report is not None:
        atomic_write(folder / "quality.json", json.dumps(report.to_json(), indent=2) + "\n")
        if report.flags:
            err.print(
                f"data quality: {len(report.flags)} flag(s) (see quality.json and summary.md)"
            )


def _train_into(
    store: RunStore,
    simulation: Simulation,
    config: RunConfig,
    checkpoint: RoundCheckpoint | None,
    title: str,
) -> None:
    """Run ``simulation`` into the run folder of ``store``, with a live progress display."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medfed.cli.console import err, out, text
    from medfed.errors import MedfedError, RunInterrupted
    from medfed.orchestration.driver import RoundResult
    from medfed.orchestration.simulation import SimulationResult
    from medfed.reporting.summary import comparison_table, summary_dict, summary_markdown

    assert config.out is not None
    done = 0 if checkpoint is None else checkpoint.round
    out.print(f"[bold]{text(title)}[/]  →  run folder [cyan]{text(store.path)}[/]")
    history: list[RoundResult] = []
    started = time.perf_counter()

    class _Live:
        def __init__(self, progress: Progress) -> None:
            self.progress = progress
            self.tasks: dict[str, Any] = {}

        def on_round_end(self, result: RoundResult) -> None:
            history.append(result)
            summary = result.eval_summary
            text = ""
            if summary is not None:
                parts = [
                    f"{k} {getattr(summary, k):.3f}"
                    for k in ("accuracy", "auroc", "c_index", "rmse", "mae", "dice")
                    if getattr(summary, k) is not None
                ]
                text = "  ".join(parts)
            if result.failures:
                text += f"  [yellow]{len(result.failures)} site(s) failed[/]"
            self.progress.update(self.tasks["federated"], description=f"federated  {text}")

        def step(self, label: str, done: int, total: int) -> None:
            key = "federated" if label == "federated" else "baselines"
            if key == "baselines" and key not in self.tasks:
                n_sites = len(history[-1].eval_metrics) if history else 1
                self.tasks[key] = self.progress.add_task("baselines", total=total * (n_sites + 1))
            self.progress.advance(self.tasks[key])
            if key == "baselines":
                self.progress.update(self.tasks[key], description=f"baselines  {text(label)}")

    def partial(status: str) -> SimulationResult:
        return SimulationResult(
            params=history[-1].params if history else None,  # type: ignore[arg-type]
            history=history,
            comparison=[],
            dataset=config.data.name,
            sites=sorted({s for r in history for s in r.eval_metrics}),
            seconds=time.perf_counter() - started,
            resumed_after=done,
        )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err, transient=False) as progress:
            live = _Live(progress)
            live.tasks["federated"] = progress.add_task(
                "federated", total=config.rounds, completed=done
            )
            result = simulation.run(observers=[store, live], progress=live.step, resume=checkpoint)
    except KeyboardInterrupt:
        res = partial("incomplete")
        store.mark(
            "incomplete",
            f"interrupted after {done + len(history)} rounds",
            summary_dict(res, model_sha256=store.model_sha256),
            summary_markdown(res, status="incomplete", model_sha256=store.model_sha256),
        )
        raise RunInterrupted(
            f"interrupted: {done + len(history)} of {config.rounds} rounds are saved in "
            f"{store.path} (marked incomplete; go on with medfed simulate --resume {store.path})"
        ) from None
    except MedfedError as exc:
        res = partial("failed")
        store.mark(
            "failed",
            str(exc),
            summary_dict(res, model_sha256=store.model_sha256),
            summary_markdown(res, status="failed", model_sha256=store.model_sha256),
        )
        raise
    sha = store.model_sha256
    store.finish(summary_dict(result, model_sha256=sha), summary_markdown(result, model_sha256=sha))
    from medfed.orchestration.calibration_run import write_calibration

    write_calibration(store.path, simulation, result.params)  # binary classification only
    if result.comparison:
        out.print(comparison_table(result))
    elif result.history and result.history[-1].eval_summary is not None:
        final = result.history[-1].eval_summary
        out.print(
            "final federated evaluation: "
            + ", ".join(f"{k} {v:.4g}" for k, v in final.as_dict().items() if v is not None)
        )
    for line in _privacy_lines(result, delta=config.privacy.delta):
        out.print(line, soft_wrap=True, markup=False)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {text(warning)}")
    out.print(
        f"done in {result.seconds:.1f} s · model, metrics (JSONL, CSV), config and summary in "
        f"[cyan]{text(Path(config.out))}[/]"
    )
    from medfed.cli.report import write_run_report

    write_run_report(store.path)
