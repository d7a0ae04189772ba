"""kill -9 the coordinator, kill a node: nothing accepted is lost, rounds go on."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest

from tests.federation.conftest import SITES, Federation, medfed

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _submit(fed: Federation, *extra: str) -> str:
    proc = medfed(
        "job",
        "submit",
        "examples/breast_mlp.py",
        "--kit",
        str(fed.kit("researchers", "bob")),
        "--data",
        "breast-cancer",
        "--seed",
        "7",
        *extra,
    )
    assert proc.returncode == 0, proc.stderr
    return re.search(r"(job-[0-9a-f]+)", proc.stdout).group(1)


def _view(fed: Federation, job_id: str) -> dict:
    from medfed.federation.identity.kits import load_kit
    from medfed.federation.transfer.client import client_for_kit

    with client_for_kit(load_kit(fed.kit("researchers", "bob"))) as c:
        return c.get_json(f"/v1/jobs/{job_id}")


def _wait(fed: Federation, job_id: str, predicate, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        try:
            last = _view(fed, job_id)
        except Exception:  # the coordinator may be restarting
            time.sleep(0.3)
            continue
        if predicate(last):
            return last
        time.sleep(0.3)
    raise AssertionError(
        f"timed out; last view {json.dumps(last)[:400]}\n" + fed.log("coordinator")
    )


def test_kill_9_coordinator_resumes_and_gives_the_uninterrupted_model(
    federation: Federation,
) -> None:
    fed = federation
    fed.start_coordinator()
    for site in SITES:
        fed.start_node(site, "--auto-approve")
    # FedAdam: the server optimiser's moments are state that must survive the restart
    # (checkpointed with every round); with FedAvg only the model would need to
    args = ("--rounds", "6", "--min-sites", "3", "--round-timeout", "120", "--strategy", "fedadam")

    reference = _submit(fed, *args)
    ref = _wait(fed, reference, lambda v: v["status"] != "running", 240)
    assert ref["status"] == "complete", ref

    job_id = _submit(fed, *args)
    _wait(fed, job_id, lambda v: v["rounds_done"] >= 2, 240)
    fed.procs["coordinator"].send_signal(signal.SIGKILL)
    fed.procs["coordinator"].wait(10)
    fed.procs.pop("coordinator")
    fed.logs.pop("coordinator").close()
    fed.start_coordinator()  # same kit, same state folder: the job resumes

    done = _wait(fed, job_id, lambda v: v["status"] != "running", 240)
    assert done["status"] == "complete", done
    assert [r["round"] for r in done["rounds_detail"]] == list(range(1, 7))
    # the same sites reported in every round, so the model is the uninterrupted one, bit for bit
    assert done["params_sha256"] == ref["params_sha256"]
    assert all(r["checkpoint_sha256"] for r in done["rounds_detail"])


def test_a_killed_node_is_left_out_and_rejoins_after_restart(federation: Federation) -> None:
    fed = federation
    fed.start_coordinator()
    for site in SITES:
        fed.start_node(site, "--auto-approve")
    # the killed site's round waits out the timeout twice (its training, then its evaluation):
    # 10 s is still ten times what a live site's round takes on a busy 2-core machine
    job_id = _submit(fed, "--rounds", "5", "--min-sites", "2", "--round-timeout", "10")
    _wait(fed, job_id, lambda v: v["rounds_done"] >= 1 and len(v["sites"]) == 3, 180)
    fed.stop(SITES[2], kill=True)  # kill -9 one hospital's node
    view = _wait(
        fed, job_id, lambda v: any(SITES[2] in r["failures"] for r in v["rounds_detail"]), 120
    )
    failed_round = next(r for r in view["rounds_detail"] if SITES[2] in r["failures"])
    assert sorted(failed_round["trained"]) == sorted(SITES[:2])
    assert "Timeout" in failed_round["failures"][SITES[2]]

    fed.start_node(SITES[2], "--auto-approve")
    done = _wait(fed, job_id, lambda v: v["status"] != "running", 180)
    assert done["status"] == "complete", done
    later = [r for r in done["rounds_detail"] if r["round"] > failed_round["round"]]
    assert any(SITES[2] in r["trained"] for r in later), done["rounds_detail"]
