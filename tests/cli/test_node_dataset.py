"""`medfed node dataset`: the data steward registers, lists and checks a node's data sets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from medfed.cli.main import cli
from tests.data.test_contract import CONTRACT, _table


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_add_list_check_remove(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(CONTRACT)
    _table(0, n=50).to_csv(tmp_path / "t.csv", index=False)
    state = str(tmp_path / "state")
    (tmp_path / "state").mkdir()
    code, said = run(
        "node", "dataset", "add", "readmission", str(tmp_path / "t.csv"),
        "--contract", str(tmp_path / "c.toml"), "--state", state, "--by", "dana",
    )  # fmt: skip
    assert code == 0, said
    assert "registered readmission: 40 training and 10 test records, 4 features" in said
    code, said = run("node", "dataset", "list", "--state", state)
    assert code == 0 and "readmission" in said and "dana" in said, said
    code, said = run("node", "dataset", "check", "readmission", "--state", state)
    assert code == 0 and "passes contract readmission v2 (50 rows)" in said, said

    broken = pd.read_csv(tmp_path / "t.csv")
    broken.loc[[4, 5], "visits"] = -1
    broken.to_csv(tmp_path / "t.csv", index=False)  # the export changed after registration
    code, said = run("node", "dataset", "check", "readmission", "--state", state)
    assert code == 1, said
    assert "column 'visits': must be at least 0, 2 row(s) (data rows 5, 6" in said, said

    code, said = run("node", "dataset", "remove", "readmission", "--state", state)
    assert code == 0, said
    code, said = run("node", "dataset", "check", "readmission", "--state", state)
    assert code == 2 and "no data set 'readmission' is registered" in said, said
    assert "Traceback" not in said


def test_a_table_without_a_contract_is_refused_with_what_to_do(tmp_path: Path) -> None:
    _table(0).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "state").mkdir()
    code, said = run(
        "node", "dataset", "add", "x", str(tmp_path / "t.csv"), "--state", str(tmp_path / "state")
    )
    assert code == 2 and "add --contract FILE" in said, said


def test_an_image_data_set_file_is_registered_from_the_command_line(tmp_path: Path) -> None:
    from tests.site.test_datasets import _xray

    path = _xray(tmp_path)
    state = str(tmp_path / "state")
    (tmp_path / "state").mkdir()
    code, said = run("node", "dataset", "add", "xray", str(path), "--state", state, "--by", "dana")
    assert code == 0, said
    assert "images of 8×8 with 1 channel(s), contract xray v3" in " ".join(said.split()), said
    code, said = run("node", "dataset", "check", "xray", "--state", state)
    assert code == 0 and "passes contract xray v3 (8 images)" in said, said
    (path.parent / "a" / "images" / "p3.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    code, said = run("node", "dataset", "check", "xray", "--state", state)
    said = " ".join(said.split())
    assert code == 2 and "changed since they were registered (1 file(s) of another size" in said
    assert "Traceback" not in said
