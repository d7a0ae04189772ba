"""Issue 9, part 7: CLI mistakes that trained silently, were ignored or ended in a traceback.

Each case runs the real ``medfed`` command (``python -m medfed``) and expects one sentence on
stderr and exit code 2 — or, for what is not a mistake, that the run says what it did.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.federation.server import LiveCoordinator, live_coordinator, submit_job

TASK_FILE = Path(__file__).resolve().parents[2] / "examples" / "breast_mlp.py"


def medfed(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medfed", *args], capture_output=True, text=True, timeout=timeout
    )


def _assert_clean_error(
    proc: subprocess.CompletedProcess[str], *needles: str, code: int = 2
) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert "error:" in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


# -- 1. DP settings without --dp ---------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--target-epsilon", "4"],
        ["--noise-multiplier", "1.1"],
        ["--dp", "none", "--noise-multiplier", "1.1"],
    ],
)
def test_simulate_refuses_dp_settings_without_dp(tmp_path: Path, flags: list[str]) -> None:
    out = tmp_path / "r"
    proc = medfed("simulate", "--rounds", "1", *flags, "--out", str(out))
    _assert_clean_error(proc, "add --dp", flags[-2])
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()  # refused before anything trained


@pytest.mark.parametrize("flag", ["--target-epsilon", "--noise-multiplier"])
def test_job_submit_refuses_dp_settings_without_dp(tmp_path: Path, flag: str) -> None:
    # refused before the kit is read or anything is uploaded
    proc = medfed(
        "job", "submit", str(TASK_FILE), "--kit", str(tmp_path / "kit"), "--data",
        "breast-cancer", flag, "4",
    )  # fmt: skip
    _assert_clean_error(proc, "add --dp", flag)


# -- 2. --data-dir for a bundled data set ------------------------------------------------------


@pytest.mark.parametrize("name", ["breast-cancer", "synthetic-ehr"])
def test_data_dir_for_a_bundled_data_set_is_refused(tmp_path: Path, name: str) -> None:
    out = tmp_path / "r"
    proc = medfed(
        "simulate", "--data", name, "--data-dir", str(tmp_path), "--rounds", "1", "--out", str(out)
    )
    _assert_clean_error(proc, "--data-dir", name, "bundled", "tcga-brca")
    assert not out.exists()


def test_data_dir_in_a_run_file_for_a_bundled_data_set_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'rounds = 1\n[data]\nname = "lung"\ndir = "{tmp_path}"\n')
    proc = medfed("simulate", "--config", str(cfg), "--out", str(tmp_path / "r"))
    _assert_clean_error(proc, "data.dir", "lung")


# -- 3. an --out that cannot be written --------------------------------------------------------


@pytest.mark.parametrize("command", [["simulate"], ["demo"]])
def test_out_under_a_regular_file_is_refused_before_training(
    tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    out = tmp_path / "notes.txt" / "run"
    proc = medfed(*command, "--rounds", "1", "--out", str(out))
    _assert_clean_error(proc, str(out), "is a file, not a folder", "--out")
    assert "medfed" not in proc.stdout  # no run banner: refused before anything trained


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("command", [["simulate"], ["demo"]])
def test_out_in_a_read_only_folder_is_refused(tmp_path: Path, command: list[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        proc = medfed(*command, "--rounds", "1", "--out", str(locked / "run"))
    finally:
        locked.chmod(0o700)
    _assert_clean_error(proc, "not writable", "--out")


def test_a_run_folder_that_fails_to_write_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what no check beforehand can foresee (a full disk): still no traceback
    from medfed.cli.main import cli
    from medfed.orchestration.run_store import RunStore

    def full(self: RunStore, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RunStore, "start", full)
    result = CliRunner().invoke(cli, ["simulate", "--rounds", "1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, OSError)
    assert "No space left on device" in result.output and "--out" in result.output


# -- 4. coordinator start on a busy port -------------------------------------------------------


def _provision(root: Path, port: int) -> Path:
    consortium = root / "consortium.toml"
    consortium.write_text(
        f'name = "mistakes"\n[coordinator]\nhost = "127.0.0.1"\nport = {port}\n'
        '[participants]\nsites = ["north-site", "south-site"]\nadmins = ["alice"]\n'
        'researchers = ["bob"]\n'
    )
    proc = medfed("provision", str(consortium), "--out", str(root / "kits"))
    assert proc.returncode == 0, proc.stderr
    return root / "kits"


def test_coordinator_on_a_busy_port_fails_before_its_banner(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        kits = _provision(tmp_path, port)
        proc = medfed("coordinator", "start", "--kit", str(kits / "coordinator"), timeout=60)
    _assert_clean_error(proc, f"port {port}", "already in use", "--port")
    assert "medfed coordinator for" not in proc.stdout + proc.stderr


# -- 5. admin revoke of a name that never contacted the coordinator ----------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoordinator]:
    with live_coordinator(tmp_path_factory.mktemp("federation")) as running:
        yield running


def _revoke(live: LiveCoordinator, *args: str) -> subprocess.CompletedProcess[str]:
    kit = live.kits / "admins" / "alice"
    return medfed("admin", "revoke", "--kit", str(kit), *args, "--reason", "test", timeout=60)


def test_revoking_a_name_never_seen_is_refused_and_revokes_nothing(live: LiveCoordinator) -> None:
    live.client("community-north").get_json("/v1/work")  # the site has contacted it
    proc = _revoke(live, "comunity-north")
    _assert_clean_error(proc, "'comunity-north' never contacted this coordinator", "--force")
    assert "did you mean 'community-north'" in proc.stderr
    assert not live.coordinator.store.is_revoked("comunity-north")


def test_revoking_a_name_never_seen_with_force_revokes_it_ahead(live: LiveCoordinator) -> None:
    proc = _revoke(live, "rural-hospital", "--force")
    assert proc.returncode == 0, proc.stderr
    assert "never contacted this coordinator" in proc.stderr
    assert "revoked rural-hospital" in proc.stdout
    assert live.coordinator.store.is_revoked("rural-hospital")


def test_revoking_a_known_participant_says_so(live: LiveCoordinator) -> None:
    live.client("oncology-clinic").get_json("/v1/work")
    proc = _revoke(live, "oncology-clinic")
    assert proc.returncode == 0, proc.stderr
    assert "revoked oncology-clinic" in proc.stdout and "never" not in proc.stderr
    assert live.coordinator.store.is_revoked("oncology-clinic")


# -- 6. a DP run says its ε and δ; Opacus's secure-RNG warning does not reach the user --------


@pytest.mark.parametrize(
    ("dp", "needle"),
    [("client", "client-level DP"), ("sample", "sample-level DP-SGD")],
)
def test_a_private_run_prints_its_final_epsilon_and_delta(
    tmp_path: Path, dp: str, needle: str
) -> None:
    proc = medfed(
        "simulate", "--rounds", "2", "--dp", dp, "--delta", "1e-6", "--out", str(tmp_path / "r")
    )
    assert proc.returncode == 0, proc.stderr
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("privacy:")), "")
    assert needle in line and "ε = " in line and "at δ = 1e-06 after 2 rounds" in line, proc.stdout
    assert "Secure RNG" not in proc.stderr and "UserWarning" not in proc.stderr, proc.stderr


def test_a_run_without_dp_prints_no_epsilon(tmp_path: Path) -> None:
    proc = medfed("simulate", "--rounds", "1", "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert "privacy:" not in proc.stdout and "ε" not in proc.stdout


def test_dp_sgd_silences_only_the_secure_rng_warning_and_only_around_opacus() -> None:
    import warnings

    import opacus  # noqa: F401 - imported first: its own import may add filters of its own

    from medfed.site.dp_sgd import DPSGD

    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DPSGD(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
        assert warnings.filters[0][0] == "always"  # the caller's filters are back
    assert not [w for w in caught if "Secure RNG" in str(w.message)], caught
    assert warnings.filters == before


# -- 7. text from a config or another party is never read as Rich markup ----------------------

MARKUP = "[/oops] [bold red]x"


def test_error_and_warn_print_markup_literally(capsys: pytest.CaptureFixture[str]) -> None:
    from medfed.cli.console import error, warn

    error(f"bad {MARKUP}")
    warn(f"odd {MARKUP}")
    assert capsys.readouterr().err.splitlines() == [
        f"error: bad {MARKUP}",
        f"warning: odd {MARKUP}",
    ]


def test_a_mistake_quoting_markup_is_one_sentence(tmp_path: Path) -> None:
    proc = medfed("simulate", "--data", MARKUP, "--out", str(tmp_path / "r"))
    _assert_clean_error(proc, repr(MARKUP))
    cfg = tmp_path / "run.toml"
    cfg.write_text("rounds = 1\ntrain = 3\n")
    _assert_clean_error(medfed("simulate", "--config", str(cfg)), "[train] must be a table")


def test_an_out_folder_named_like_markup_is_printed_as_named(tmp_path: Path) -> None:
    out = tmp_path / "[bold]run"
    proc = medfed("simulate", "--rounds", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout.replace("\n", ""), proc.stdout


def test_another_partys_text_is_printed_as_text(live: LiveCoordinator) -> None:
    job = submit_job(live, name=f"job {MARKUP}")
    bob = str(live.kits / "researchers" / "bob")
    listed = medfed("job", "list", "--kit", bob, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "[/oops]" in listed.stdout, listed.stdout
    status = medfed("job", "status", job["id"], "--kit", bob, timeout=60)
    assert status.returncode == 0, status.stderr
    assert f"job {MARKUP}" in status.stdout, status.stdout
    audit = medfed("admin", "audit", "--kit", str(live.kits / "admins" / "alice"), timeout=60)
    assert audit.returncode == 0, audit.stderr
    assert "[/oops]" in audit.stdout, audit.stdout


def test_job_submit_prints_a_name_with_markup_as_given(live: LiveCoordinator) -> None:
    proc = medfed(
        "job", "submit", str(TASK_FILE), "--kit", str(live.kits / "researchers" / "carol"),
        "--data", "breast-cancer", "--rounds", "1", "--name", MARKUP,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"({MARKUP})" in proc.stdout, proc.stdout


# -- the researcher sets the update bounds of a job ----------------------------------------------


def test_job_submit_sets_the_update_bounds(live: LiveCoordinator) -> None:
    bob = str(live.kits / "researchers" / "bob")
    common = ("job", "submit", str(TASK_FILE), "--kit", bob, "--data", "breast-cancer")
    _assert_clean_error(
        medfed(*common, "--rounds", "1", "--norm-factor", "0.5", timeout=120),
        "bounds.norm_factor",
    )
    proc = medfed(
        *common, "--rounds", "1", "--norm-factor", "50", "--max-examples", "5000", timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "medfed node pending" in proc.stdout, proc.stdout
    [job] = [j for j in live.coordinator.store.jobs() if j.config["bounds"]["max_examples"]]
    # the flags given, the federation's default for the one not given
    assert job.config["bounds"] == {
        "norm_factor": 50.0,
        "examples_factor": 100.0,
        "max_examples": 5000,
    }
