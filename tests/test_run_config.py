"""One run specification for a simulation and a job: parsed, checked and resolved in one place."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from medfed.cli.main import cli
from medfed.config import (
    DEFAULT_ROUND_TIMEOUT,
    RunConfig,
    StrategyConfig,
    UpdateBounds,
    check_run,
    config_from_dict,
    load_config,
    save_config,
)
from medfed.errors import ConfigError
from medfed.federation.coordinator.job_config import JobConfig
from medfed.privacy.config import PrivacyConfig


def test_every_bad_key_of_a_run_file_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(
            {
                "rounds": 0,
                "colour": "red",
                "train": {"lr": 0.1, "batch_size": True},
                "privacy": {"dp": "everything"},
                "strategy": {"options": {"server_lr": float("nan")}},
            }
        )
    message = str(caught.value)
    assert message.startswith("the run has 6 problems")
    for part in (
        "rounds must be between 1 and 100000",
        "unknown setting colour",
        "unknown setting train.lr",
        "train.batch_size must be int, got True",
        "privacy.dp must be",
        "strategy.options.server_lr must be a finite number",
    ):
        assert part in message


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"train": {"learning_rate": float("inf")}}, "train.learning_rate must be a finite"),
        ({"seed": 10**400}, "seed must be a finite number"),
        ({"task": "x" * 5000}, "task must be text of at most 4096"),
        ({"data": {"name": "a\x00b"}}, "data.name must be text"),
        ({"strategy": {"options": {f"k{i}": 1 for i in range(101)}}}, "at most 100 settings"),
        ({"strategy": {"options": {"k": [1, 2]}}}, "strategy.options.k must be a number"),
        ({"round_timeout": 0.5}, "round_timeout must be between 1 and 604800"),
        ({"privacy": "on"}, "[privacy] must be a table"),
    ],
)
def test_a_value_from_a_file_or_the_network_cannot_be_unbounded(
    raw: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(raw)


def test_settings_that_depend_on_one_another_are_checked_once_for_both_modes() -> None:
    secure_alone = RunConfig(privacy=PrivacyConfig(secure_aggregation=True))
    check_run(secure_alone, "simulation")  # a simulation plays its sites itself
    with pytest.raises(ConfigError, match=r"strategy\.min_sites of at least 2"):
        check_run(secure_alone, "federation")
    bad_option = RunConfig(strategy=StrategyConfig(name="fedadam", options={"beta": 2.0}))
    for mode in ("simulation", "federation"):
        with pytest.raises(ConfigError, match="beta"):
            check_run(bad_option, mode)  # type: ignore[arg-type]


def test_each_mode_resolves_its_own_defaults_and_keeps_what_was_set() -> None:
    run = RunConfig()
    simulation = run.resolved("simulation")
    federation = run.resolved("federation")
    assert simulation.bounds == UpdateBounds.none() and simulation.round_timeout is None
    assert federation.bounds == UpdateBounds() and federation.round_timeout == DEFAULT_ROUND_TIMEOUT
    chosen = RunConfig(round_timeout=30.0, bounds=UpdateBounds(norm_factor=5.0))
    assert chosen.resolved("federation") == chosen.resolved("simulation") == chosen


def test_a_run_file_is_a_job_and_a_job_reads_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        "rounds = 3\nseed = 7\n[strategy]\nname = 'fedadam'\nmin_sites = 2\n"
        "[strategy.options]\nserver_lr = 0.05\n[privacy]\ndp = 'client'\ntarget_epsilon = 8.0\n"
    )
    run = load_config(path)
    job = JobConfig(run=run, data_spec={"kind": "binary", "input_shape": [30], "data": "x"})
    wire = job.to_json()
    assert "out" not in wire and "backend" not in wire  # a simulation's own settings
    assert wire["strategy"]["options"] == {"server_lr": 0.05}
    assert wire["privacy"]["secure_aggregation"] is True  # a [privacy] table turns it on
    assert wire["round_timeout"] == DEFAULT_ROUND_TIMEOUT and wire["bounds"]["norm_factor"] == 100
    again = JobConfig.from_json(wire)
    assert again == job and again.run == run.resolved("federation")
    # a run file saved from a job's settings is the same run again
    save_config(again.run, tmp_path / "again.toml")
    assert load_config(tmp_path / "again.toml") == again.run


def test_a_job_stored_in_the_old_flat_shape_is_read_in_the_new_one() -> None:
    old = {
        "rounds": 4,
        "seed": 1,
        "strategy": "fedavg",
        "fraction": 0.5,
        "min_sites": 2,
        "round_timeout": 60.0,
        "evaluate_every": 2,
        "train": {"local_epochs": 2, "batch_size": 16, "learning_rate": 0.1},
        "data_spec": {"kind": "binary", "input_shape": [30]},
        "strategy_options": {},
        "privacy": {"dp": "client"},  # then: no secure aggregation unless it said so
        "bounds": {},
    }
    job = JobConfig.from_json(old)
    run = job.run
    assert (run.strategy.fraction, run.strategy.min_sites, run.evaluation.every) == (0.5, 2, 2)
    assert run.privacy.dp == "client" and not run.privacy.secure_aggregation
    assert run.bounds == UpdateBounds() and run.train.local_epochs == 2
    assert JobConfig.from_json({**old, "privacy": {}}).run.privacy.enabled is False


def test_a_bad_job_is_refused_with_every_problem_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        JobConfig.from_json({"rounds": -1, "data_spec": {"kind": "poetry"}, "surprise": 1})
    message = str(caught.value)
    assert message.startswith("the job configuration is refused")
    for part in ("rounds must be", "data_spec.kind must be one of", "unknown setting surprise"):
        assert part in message
    # medfed job submit reads the run file before it looks for a coordinator
    bad = tmp_path / "run.toml"
    bad.write_text("rounds = 3\n[train]\nepochs = 2\n")
    kit = tmp_path / "kit"
    kit.mkdir()
    result = CliRunner().invoke(cli, ["job", "submit", "--config", str(bad), "--kit", str(kit)])
    assert result.exit_code == 2, result.output
    assert "unknown setting train.epochs" in result.output and "Traceback" not in result.output
    good = tmp_path / "good.toml"
    good.write_text("rounds = 3\n")
    result = CliRunner().invoke(cli, ["job", "submit", "--config", str(good), "--kit", str(kit)])
    assert result.exit_code == 2 and "a job needs its task file" in result.output, result.output


def test_a_job_on_contracted_data_names_the_contract_by_sha256() -> None:
    spec = {"kind": "binary", "input_shape": [4], "data": "readmission"}
    ok = JobConfig.from_json(
        {"data_spec": {**spec, "contract": "contract readmission v2", "contract_sha256": "a" * 64}}
    )
    assert ok.data_spec["contract_sha256"] == "a" * 64
    with pytest.raises(ConfigError, match="contract_sha256 must be a sha256"):
        JobConfig.from_json({"data_spec": {**spec, "contract_sha256": "A" * 64}})
