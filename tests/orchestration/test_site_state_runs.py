"""Each site's state lives where the site runs and survives what a run survives.

The task (tests/site/state_task.py) divides its learning rate by the number of rounds the
site has trained in, a number it keeps in its site state; a site that lost it would train
with the full rate again and the global model would differ. So "the same model bit for bit"
below means every site's state came through.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medfed.config import RunConfig, StrategyConfig
from medfed.orchestration.driver import RoundResult
from medfed.orchestration.simulation import Simulation
from medfed.serde import load_params, sha256_hex
from medfed.site.state import DirectoryStateStore, MemoryStateStore, SiteState

TASK = str(Path(__file__).parents[1] / "site" / "state_task.py") + ":task"
ROOT = Path(__file__).parents[2]


def _config(**overrides: object) -> RunConfig:
    config = RunConfig(
        rounds=4, seed=3, task=TASK, strategy=StrategyConfig(name="fedadam", min_sites=3)
    )
    base = {"data.name": "breast-cancer", "data.sites": 3, "evaluation.baselines": False}
    return config.with_overrides(**{**base, **overrides})


def _sha(result_params: object) -> str:
    from medfed.serde import params_to_bytes

    return sha256_hex(params_to_bytes(result_params))  # type: ignore[arg-type]


def test_sites_keep_their_state_across_rounds_and_runs_keep_theirs_apart(tmp_path: Path) -> None:
    config = _config(**{"evaluation.baselines": True})
    sim = Simulation(config, state_dir=tmp_path / "site-state")
    result = sim.run()
    store = DirectoryStateStore(tmp_path / "site-state")
    for site in result.sites:
        federated = store.latest("federated", site)
        assert federated["rounds_seen"][0] == 4 and federated.round == 4
        # the local-only baseline trained the same sites as another run: its own count
        assert store.latest("local-only", site)["rounds_seen"][0] == 4
    # without the state (a fresh count every round) the model is another one
    again = Simulation(_config()).run()
    forgetful = Simulation(_config())
    forgetful.factory._memory = Forgetful()
    assert _sha(again.params) == _sha(Simulation(_config()).run().params)
    assert _sha(again.params) != _sha(forgetful.run().params)


class Forgetful(MemoryStateStore):
    """A store that keeps nothing: every round starts from an empty state."""

    def save(self, run: str, site: str, round: int, state: SiteState) -> None:
        pass


@pytest.mark.integration
def test_a_killed_pool_worker_comes_back_with_its_sites_state(tmp_path: Path) -> None:
    backend = {"backend.kind": "process", "backend.workers": 2}
    reference = Simulation(_config(**backend)).run()  # state in a temporary folder

    class KillWorkers:
        def on_round_end(self, result: RoundResult) -> None:
            if result.round == 2:
                for child in mp.active_children():
                    child.kill()
                    child.join(5)

    killed = Simulation(_config(**backend), state_dir=tmp_path / "state").run(
        observers=[KillWorkers()]
    )
    assert not any(r.failures for r in killed.history)  # killed between rounds: none lost
    assert _sha(killed.params) == _sha(reference.params)


def _medfed(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "medfed", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **{"env": {**os.environ, "COLUMNS": "200"}, **kwargs},  # type: ignore[arg-type]
    )


@pytest.mark.integration
def test_simulate_resume_after_sigkill_gives_the_uninterrupted_model(tmp_path: Path) -> None:
    args = ["simulate", "--task", TASK, "--data", "breast-cancer", "--sites", "3"]
    args += ["--rounds", "30", "--strategy", "fedadam", "--seed", "5", "--no-baselines"]
    full = _medfed(*args, "--out", str(tmp_path / "full"))
    out, _ = full.communicate(timeout=300)
    assert full.returncode == 0, out

    run = tmp_path / "cut"
    slow = {**os.environ, "COLUMNS": "200", "MEDFED_TEST_TRAIN_SLEEP": "0.2"}
    proc = _medfed(*args, "--out", str(run), env=slow)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        status = _status(run)
        if status.get("rounds_done", 0) >= 3:
            break
        time.sleep(0.02)
    # a second medfed cannot take the folder over while the run still writes it
    second = _medfed("simulate", "--resume", str(run))
    said, _ = second.communicate(timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    cut_at = _status(run)["rounds_done"]
    assert 3 <= cut_at < 30, "the run ended before it could be cut; make its rounds longer"
    assert second.returncode == 2 and "being written by another medfed" in said, said

    resumed = _medfed("simulate", "--resume", str(run))
    said, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, said
    assert _status(run)["status"] == "complete"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds_done"] == 30 and summary["resumed_after"] >= cut_at
    # every round's rows once, in order, whatever the cut left half-written
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [r["round"] for r in rows if r["phase"] == "train" and r["site"] == "all"]
    assert trained == list(range(1, 31))
    a, _ = load_params(tmp_path / "full" / "model.safetensors")
    b, _ = load_params(run / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)  # bit for bit

    again = _medfed("simulate", "--resume", str(run))
    said, _ = again.communicate(timeout=120)
    assert again.returncode == 2 and "complete: there is nothing to resume" in said, said


def _status(run: Path) -> dict:
    try:
        return json.loads((run / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
