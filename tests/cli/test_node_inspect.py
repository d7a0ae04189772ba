"""`medfed node inspect`: the data steward sees what a statistics query would send, before
anything leaves: counts and sums over the registered data set's records, never a record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from medfed.cli.main import cli
from tests.data.test_contract import CONTRACT, _table


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _registered(tmp_path: Path) -> str:
    (tmp_path / "c.toml").write_text(CONTRACT)
    _table(3, n=50).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "state").mkdir()
    code, said = run(
        "node", "dataset", "add", "readmission", str(tmp_path / "t.csv"),
        "--contract", str(tmp_path / "c.toml"), "--state", str(tmp_path / "state"), "--by", "dana",
    )  # fmt: skip
    assert code == 0, said
    return str(tmp_path / "state")


def test_inspect_shows_the_counts_and_sums_that_would_leave_and_no_record(tmp_path: Path) -> None:
    state = _registered(tmp_path)
    code, said = run("node", "inspect", "readmission", "--state", state)
    assert code == 0, said
    assert "records: 50" in said and "present" in said and "sumsq" in said, said
    for feature in ("age", "visits", "sex=F", "sex=M"):
        assert feature in said
    # no patient id (3000..3049) and no record's values are printed: only aggregates
    assert not re.search(r"\b30[0-4]\d\b", said), said
    table = _table(3, n=50)
    assert not any(f"{age:.1f}" in said for age in table["age"])

    code, raw_text = run(
        "node", "inspect", "readmission", "--state", state, "--feature", "age", "--json"
    )
    assert code == 0, raw_text
    raw = json.loads(raw_text)
    assert raw["message"]["min_records"] == 10
    assert raw["message"]["query"]["features"] == ["age"]
    blocks = raw["reply"]["blocks"]
    assert blocks["rows"] == [50.0] and blocks["present"] == [50.0] and blocks["missing"] == [0.0]
    assert all(len(v) <= 1 for v in blocks.values())  # one number per block and feature

    from medfed.data.statistics import site_table
    from medfed.site.datasets import DatasetRegistry

    served = DatasetRegistry.in_state(state).load("readmission")
    values = site_table(served.data, served.spec, split="all")
    age = np.asarray(values.features[:, list(values.names).index("age")], np.float64)
    assert np.isclose(blocks["sum"][0], age.sum()) and np.isclose(
        blocks["sumsq"][0], (age**2).sum()
    )


def test_a_site_under_the_minimum_count_would_send_only_its_refusal(tmp_path: Path) -> None:
    state = _registered(tmp_path)
    code, said = run("node", "inspect", "readmission", "--state", state, "--min-count", "60")
    assert code == 0, said
    assert "would send no statistics" in said and "fewer than the minimum count 60" in said
    assert "sum" not in said.replace("summ", "")


def test_inspect_says_what_to_do_for_an_unknown_data_set_or_job(tmp_path: Path) -> None:
    state = _registered(tmp_path)
    code, said = run("node", "inspect", "other", "--state", state)
    assert code != 0 and "not registered on this node" in said and "Traceback" not in said
    code, said = run("node", "inspect", "readmission", "--state", state, "--job", "job-00ff")
    assert code != 0 and "when the first job arrives" in said and "Traceback" not in said
    code, said = run("node", "inspect", "readmission", "--state", state, "--feature", "weight")
    assert code != 0 and "no feature 'weight'" in said and "Traceback" not in said
