"""The README's own-data tour, as real processes: CSV files per hospital → a simulated
federation → a contract → a real federation over TLS, with nothing but the CLI.

The researcher submits the job from an empty folder: the model's input comes from the
contract, so no patient data is needed on their machine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.federation.conftest import SITES, Federation, medfed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_csv_files_per_hospital_go_from_a_simulation_to_a_real_federation(
    federation: Federation, tmp_path: Path
) -> None:
    fed = federation
    data = tmp_path / "my-data"
    _ok(medfed("data", "export", "breast-cancer", "--out", str(data)))

    # 1. a simulated federation on the files, baselines included
    run = tmp_path / "runs" / "own"
    _ok(
        medfed(
            "simulate",
            "--data",
            str(data / "data.toml"),
            "--rounds",
            "2",
            "--baselines",
            "--out",
            str(run),
        )
    )
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["sites"]) >= set(SITES)

    # 2. the contract the federation will version with its jobs, drafted from the files
    contract = data / "bc.contract.toml"
    _ok(medfed("data", "contract", str(data / "data.toml"), "--out", str(contract)))

    # 3. each data steward registers the hospital's table under the contract, checks it,
    #    and starts the node on it
    fed.start_coordinator()
    for site in SITES:
        kit = str(fed.kit("sites", site))
        table = str(data / f"{site}_train.csv")
        _ok(
            medfed("node", "dataset", "add", "bc", table, "--contract", str(contract), "--kit", kit)
        )
        assert "passes" in _ok(medfed("node", "dataset", "check", "bc", "--kit", kit))
        fed.spawn(site, "node", "start", "--kit", kit, "--data", "bc", "--auto-approve")

    # 4. the researcher, in a folder without any data, submits with the contract alone
    researcher = tmp_path / "researcher"
    researcher.mkdir()
    task = researcher / "task.py"
    task.write_text((REPO / "examples" / "breast_mlp.py").read_text())
    bob = str(fed.kit("researchers", "bob"))
    out = _ok(
        medfed(
            "job",
            "submit",
            str(task),
            "--kit",
            bob,
            "--data",
            "bc",
            "--contract",
            str(contract),
            "--rounds",
            "2",
            "--min-sites",
            "3",
            "--round-timeout",
            "120",
            cwd=researcher,
        )
    )
    job_id = re.search(r"(job-[0-9a-f]+)", out).group(1)
    status = medfed("job", "status", job_id, "--watch", "--kit", bob, timeout=300, cwd=researcher)
    assert status.returncode == 0, status.stderr + fed.log("coordinator")
    assert "complete" in status.stdout, status.stdout + fed.log(SITES[0])
    assert list(researcher.iterdir()) == [task]  # no data came to the researcher
