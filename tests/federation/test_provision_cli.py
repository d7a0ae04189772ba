"""``medfed provision``: kits on disk, a table on stdout, one warning, one-sentence errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from medfed.cli.provision import provision
from medfed.errors import MedfedError, UsageError
from medfed.federation.identity import kits

CONSORTIUM = """\
name = "cli-consortium"
[coordinator]
host = "127.0.0.1"
port = 9443
alt_names = ["localhost"]
[participants]
sites = ["hospital-a", "hospital-b"]
admins = ["alice"]
researchers = ["bob"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "consortium.toml"
    path.write_text(CONSORTIUM)
    return path


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths under pytest's temporary folder are long: print them on one line.

    The shared console reads COLUMNS once, when it is first imported (maybe by an earlier
    test), so the width is set on the console itself.
    """
    from medfed.cli import console

    monkeypatch.setattr(console.out, "width", 250)
    monkeypatch.setattr(console.err, "width", 250)


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(provision, list(args), env={"COLUMNS": "250"})


def _as_medfed_group() -> click.Group:
    """The command inside a group that turns medfed errors into exit codes, like ``medfed``."""

    class Group(click.Group):
        def invoke(self, ctx: click.Context) -> object:
            try:
                return super().invoke(ctx)
            except MedfedError as exc:
                click.echo(f"error: {exc}", err=True)
                ctx.exit(exc.exit_code)

    group = Group()
    group.add_command(provision)
    return group


def test_provision_writes_kits_and_prints_them(config: Path) -> None:
    result = run(str(config))
    assert result.exit_code == 0, result.output
    out = config.parent / "cli-consortium"
    for name, role, folder in [
        ("coordinator", "coordinator", out / "coordinator"),
        ("hospital-a", "site", out / "sites" / "hospital-a"),
        ("alice", "admin", out / "admins" / "alice"),
        ("bob", "researcher", out / "researchers" / "bob"),
    ]:
        assert name in result.stdout and role in result.stdout and str(folder) in result.stdout
        assert kits.load_kit(folder).role == role
    assert "https://127.0.0.1:9443" in result.stdout
    assert "keep it offline" in result.stderr and "ca.key" in result.stderr
    assert stat.S_IMODE((out / "ca" / "ca.key").stat().st_mode) == 0o600


def test_add_participant_with_default_and_explicit_out(config: Path, tmp_path: Path) -> None:
    assert run(str(config)).exit_code == 0
    result = run(str(config), "--add", "hospital-c", "--role", "site")
    assert result.exit_code == 0, result.output
    assert "hospital-c" in result.stdout and "keep it offline" in result.stderr
    kit = kits.load_kit(config.parent / "cli-consortium" / "sites" / "hospital-c")
    assert (kit.name, kit.consortium) == ("hospital-c", "cli-consortium")
    assert run(str(config), "--out", str(tmp_path / "elsewhere")).exit_code == 0
    result = run(
        str(config), "--out", str(tmp_path / "elsewhere"), "--add", "carol", "--role", "admin"
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "admins" / "carol" / "identity.key").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--add", "hospital-c"], "go together"),
        (["--role", "site"], "go together"),
        (["--add", "Bad_Name", "--role", "site"], "'Bad_Name' is not valid"),
        (["--add", "hospital-a", "--role", "admin"], "already has a kit"),
    ],
)
def test_add_mistakes_are_usage_errors(config: Path, args: list[str], needle: str) -> None:
    assert run(str(config)).exit_code == 0
    result = run(str(config), *args)
    assert isinstance(result.exception, UsageError)
    assert needle in str(result.exception)


def test_errors_become_one_sentence_and_exit_2(config: Path) -> None:
    group = _as_medfed_group()
    runner = CliRunner()
    assert runner.invoke(group, ["provision", str(config)]).exit_code == 0
    again = runner.invoke(group, ["provision", str(config)])
    assert again.exit_code == 2
    assert "already exists" in again.stderr and "Traceback" not in again.output
    missing = runner.invoke(group, ["provision", str(config.parent / "nope.toml")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def _registered() -> bool:
    from medfed.cli.main import cli

    return "provision" in cli.commands


@pytest.mark.skipif(not _registered(), reason="medfed provision is not registered in main.py yet")
def test_real_command_line(config: Path) -> None:
    def medfed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "medfed", "provision", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "250"},
        )

    out = config.parent / "kits"
    proc = medfed(str(config), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "hospital-b" in proc.stdout and "keep it offline" in proc.stderr
    proc = medfed(str(config), "--out", str(out), "--add", "hospital-z", "--role", "site")
    assert proc.returncode == 0, proc.stderr
    assert kits.load_kit(out / "sites" / "hospital-z").role == "site"
    proc = medfed(str(config), "--out", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "already exists" in proc.stderr
    proc = medfed(str(config), "--out", str(out), "--add", "x", "--role", "superuser")
    assert proc.returncode == 2 and "superuser" in proc.stderr
