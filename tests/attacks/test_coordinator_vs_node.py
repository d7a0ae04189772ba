"""A hostile or broken coordinator towards a node: the node stays safe and keeps serving.

What the coordinator sends (job ids, hashes, task ids, reasons) is another party's input: the
node validates it before it builds a path or a URL from it, prints it as text, gives up on a
reply the coordinator refuses for good instead of retrying it forever, and one state folder
serves one node only.

The coordinator is a real one over TLS (``live_coordinator``); a hostile coordinator is played
by changing what its database hands out, and the node is a real agent with a real client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from medfed.cli.main import _Group
from medfed.cli.node import node
from medfed.data import load_dataset
from medfed.errors import IntegrityError, MedfedError
from medfed.federation.coordinator.jobs import JobConfig
from medfed.federation.coordinator.schema import jobs, tasks
from medfed.federation.node.agent import NodeAgent, NodeSettings, ProtocolError
from medfed.federation.transfer.client import ApiError, client_for_kit
from medfed.messages import RoundSettings, settings_to_json
from medfed.site.approval import ApprovalStore
from tests.federation.server import SITES, LiveCoordinator, breast_mlp, live_coordinator

DATA_SITE = SITES[0]  # every agent here holds this share of breast-cancer, whatever its name


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoordinator]:
    with live_coordinator(tmp_path_factory.mktemp("coordinator-vs-node")) as running:
        yield running


# -- helpers ------------------------------------------------------------------------------


def _submit(
    live: LiveCoordinator,
    *,
    task_bytes: bytes | None = None,
    initial_bytes: bytes | None = None,
    rounds: int = 1,
    round_timeout: float = 60,
) -> dict[str, Any]:
    model = breast_mlp()
    client = live.client("bob")
    config = JobConfig.from_json(
        {"rounds": rounds, "round_timeout": round_timeout, "data_spec": model.data_spec}
    )
    job: dict[str, Any] = client.post_json(
        "/v1/jobs",
        {
            "name": "towards-a-node",
            "task_name": "breast_mlp",
            "bundle_sha256": client.upload_blob(task_bytes or model.task_bytes),
            "initial_sha256": client.upload_blob(initial_bytes or model.initial_bytes),
            "config": config.to_json(),
        },
    )
    return job


def _cancel(live: LiveCoordinator, job_id: str) -> None:
    with suppress(ApiError):  # it may have ended already
        live.client("bob").post_json(f"/v1/jobs/{job_id}/cancel", {})


@contextmanager
def _agent(
    live: LiveCoordinator, site: str, state: Path, **settings: Any
) -> Iterator[tuple[NodeAgent, list[str]]]:
    """A real node agent of ``site`` (its own signed client), and the events it says."""
    dataset = load_dataset("breast-cancer")
    client = client_for_kit(live.kit(site), timeout=30)
    events: list[str] = []
    agent = NodeAgent(
        client=client,
        site=site,
        data=dataset.site(DATA_SITE),
        spec=dataset.spec,
        settings=NodeSettings(state_dir=state, poll_wait=1.0, max_backoff=0.5, **settings),
        on_event=events.append,
        dataset="breast-cancer",
        kit=live.kit(site),
    )
    try:
        yield agent, events
    finally:
        client.close()


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _task_rows(live: LiveCoordinator, job_id: str, site: str) -> list[dict[str, Any]]:
    with live.coordinator.store.engine.begin() as c:
        rows = c.execute(
            select(tasks).where(tasks.c.job_id == job_id, tasks.c.site == site).order_by(tasks.c.id)
        ).all()
    return [dict(r._mapping) for r in rows]


def _tamper(live: LiveCoordinator, table: Any, row_id: Any, **values: Any) -> None:
    """The hostile coordinator: what its database hands out next is what the test says."""
    with live.coordinator.store.engine.begin() as c:
        c.execute(update(table).where(table.c.id == row_id).values(**values))


def _approved_task(
    live: LiveCoordinator, agent: NodeAgent, job_id: str, site: str, operation: str = "train"
) -> dict[str, Any]:
    """Let ``agent`` approve the job (one poll), then the task the coordinator made for it."""
    agent.step(wait=0)
    return _wait_for(
        lambda: next(
            (t for t in _task_rows(live, job_id, site) if t["operation"] == operation), None
        ),
        30,
        f"a {operation} task of {job_id} for {site}",
    )


def _reply_of(live: LiveCoordinator, task_id: int) -> dict[str, Any] | None:
    row = live.coordinator.store.task(task_id)
    return None if row is None else row.reply


# -- identifiers from the coordinator are validated ------------------------------------------


def test_a_model_hash_that_is_a_path_is_refused_with_a_failure_reply(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    site = SITES[0]
    # a file the hostile coordinator wants the node to take for the round's model
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(breast_mlp().initial_bytes)
    before = sorted(p.name for p in tmp_path.iterdir())
    job = _submit(live)
    try:
        with _agent(live, site, tmp_path / "state", auto_approve=True) as (agent, events):
            task = _approved_task(live, agent, job["id"], site)
            _tamper(live, tasks, task["id"], params_sha256="../../victim")
            assert agent.step(wait=5)
        reply = _wait_for(lambda: _reply_of(live, task["id"]), 10, "the node's reply")
    finally:
        _cancel(live, job["id"])
    failure = reply["failure"]
    assert failure is not None, reply  # not an update trained on the victim file
    assert "not a sha256" in failure["message"] and "64 lowercase hex" in failure["message"]
    assert reply["num_examples"] is None and reply["metrics"] is None
    assert any("refuses" in e and "not a sha256" in e for e in events), events
    # nothing was created or removed outside the node's state folder, nor under models/
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "state"])
    assert victim.read_bytes() == breast_mlp().initial_bytes
    assert not (tmp_path / "state" / "models").exists() or not any(
        (tmp_path / "state" / "models").iterdir()
    )


def test_a_job_announced_with_a_hash_that_is_a_path_is_ignored_and_the_rest_goes_on(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    site = SITES[1]
    bad, good = _submit(live), _submit(live)
    _tamper(live, jobs, bad["id"], task_sha256="../../../etc/passwd" + "0" * 45)
    try:
        with _agent(live, site, tmp_path / "state", auto_approve=True) as (agent, events):
            agent.step(wait=0)  # must not raise: the bad job is that job's problem only
            agent.step(wait=0)  # said once, not on every poll
            approvals = live.coordinator.store.approvals
            assert approvals(good["id"]).get(site) == "approved"
            assert site not in approvals(bad["id"])
            said = [e for e in events if "not a sha256" in e]
            assert len(said) == 1 and bad["id"] in said[0], events
            stored = ApprovalStore.in_state(tmp_path / "state").all()
            assert [r.job for r in stored] == [good["id"]]
            # the good job's task still runs at this node
            _wait_for(lambda: _task_rows(live, good["id"], site), 30, "the good job's task")
            assert agent.step(wait=5)
    finally:
        _cancel(live, bad["id"])
        _cancel(live, good["id"])


@dataclass
class _Recorder:
    """A coordinator's client that hands out one canned answer and records every request."""

    work: dict[str, Any]
    base_url: str = "https://hostile.test"
    requests: list[str] = field(default_factory=list)

    def get_json(self, path: str, **_: Any) -> Any:
        self.requests.append(f"GET {path}")
        return self.work if path.startswith("/v1/work") else {}

    def post_json(self, path: str, payload: Any) -> Any:
        self.requests.append(f"POST {path}")
        return {}

    def post_bytes(self, path: str, body: bytes) -> Any:
        self.requests.append(f"POST {path}")
        return {"status": "accepted"}

    def get_bytes(self, path: str) -> bytes:
        self.requests.append(f"GET {path}")
        return b""

    def download_blob_to(self, sha256: str, path: Path) -> Path:
        self.requests.append(f"BLOB {sha256}")
        raise AssertionError("no download may start")


@pytest.mark.parametrize(
    ("job", "task"),
    [
        ({"id": "../../v1/admin/revoke"}, None),
        ({"id": "job-1?x=", "task_sha256": "a" * 64}, None),
        ({"task_sha256": "A" * 64}, None),
        ({"researcher": "../eve"}, None),
        (None, {"id": "../../v1/jobs"}),
        (None, {"id": True}),
        (None, {"id": 2**31}),
        (None, {"job_id": "job-1/../../v1"}),
        (None, {"round": "1/.."}),
        (None, {"operation": "../train"}),
    ],
    ids=str,
)
def test_ids_that_are_not_ids_never_reach_a_url_or_a_path(
    tmp_path: Path, job: dict[str, Any] | None, task: dict[str, Any] | None
) -> None:
    announced = {
        "id": "job-1",
        "task_sha256": "a" * 64,
        "task_name": "mlp",
        "researcher": "bob",
        "approval": "unknown",
        **(job or {}),
    }
    handed = {
        "id": 7,
        "job_id": "job-1",
        "round": 1,
        "operation": "train",
        "instruction": {
            "operation": "train",
            "round": 1,
            "seed": 1,
            "settings": settings_to_json(RoundSettings()),
        },
        "params_sha256": "b" * 64,
        **(task or {}),
    }
    client = _Recorder({"jobs": [announced] if job else [], "task": handed if task else None})
    dataset = load_dataset("breast-cancer")
    state = tmp_path / "state"
    agent = NodeAgent(
        client=client,  # type: ignore[arg-type]
        site=SITES[0],
        data=dataset.site(DATA_SITE),
        spec=dataset.spec,
        settings=NodeSettings(state_dir=state, auto_approve=True),
    )
    if task is None:
        agent.step()  # the job is ignored (and said), the poll goes on
        assert ApprovalStore.in_state(state).all() == []
    else:
        with pytest.raises(ProtocolError, match="the coordinator sent"):
            agent.step()  # no reply can be addressed: refused with a clear message
    assert client.requests == ["GET /v1/work?wait=0"]
    assert not (state / "models").exists() and not any((state / "outbox").iterdir())


def test_site_names_and_hashes_are_checked_before_a_request(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    client = _Recorder({})
    dataset = load_dataset("breast-cancer")
    agent = NodeAgent(
        client=client,  # type: ignore[arg-type]
        site=SITES[0],
        data=dataset.site(DATA_SITE),
        spec=dataset.spec,
        settings=NodeSettings(state_dir=tmp_path / "state"),
    )
    with pytest.raises(ProtocolError, match="site name"):
        agent._certificates("job-1", ["community-north", "x&sites=../admin"])
    with pytest.raises(ProtocolError, match="not a sha256"):
        agent._global_model("../" * 3 + "x")
    assert client.requests == []
    # the client itself names a blob by its sha256 only, before any file or request
    folder = tmp_path / "models"
    folder.mkdir()
    for bad in ("../../x", "F" * 64, "a" * 63):
        with pytest.raises(IntegrityError, match="not a blob's sha256"):
            live.client(SITES[0]).download_blob_to(bad, folder / f"{bad}.safetensors")
    assert list(folder.iterdir()) == [] and not (tmp_path / "x.safetensors.part").exists()


# -- a reply the coordinator refuses for good is not retried forever --------------------------

_BROKEN_TASK = """
import torch
from torch import nn

from medfed.records import Metrics
from medfed.site.task import Task


def build_model(spec):
    return nn.Sequential(nn.Linear(spec.input_shape[0], spec.n_outputs))


def nan_evaluation(model, x, y, spec):
    return Metrics(num_examples=len(y), loss=float("nan"), accuracy=0.5)


def nan_update(model, data, ctx):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    return Metrics(num_examples=len(data.y_train), loss=0.5, accuracy=0.5)


task = Task(model=build_model, {role}={fn}, name="broken")
"""


def _broken_job(live: LiveCoordinator, tmp_path: Path, role: str, fn: str) -> dict[str, Any]:
    """A job whose task trains or evaluates into numbers the coordinator cannot take."""
    from medfed.serde import params_to_bytes
    from medfed.site.task_loading import load_task

    path = tmp_path / f"broken_{role}.py"
    path.write_text(_BROKEN_TASK.replace("{role}", role).replace("{fn}", fn))
    spec = load_dataset("breast-cancer").spec
    initial = load_task(f"{path}:task").initial_params(spec, seed=0)
    return _submit(live, task_bytes=path.read_bytes(), initial_bytes=params_to_bytes(initial))


def _ledger_kinds(state: Path) -> list[str]:
    from medfed.site.ledger import EgressLedger

    return [e.kind for e in EgressLedger.in_state(state).entries()]


def test_a_non_finite_evaluation_is_sent_as_a_failure_once(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    site = SITES[2]
    job = _broken_job(live, tmp_path, "evaluate", "nan_evaluation")
    state = tmp_path / "state"
    try:
        with _agent(live, site, state, auto_approve=True) as (agent, events):
            _approved_task(live, agent, job["id"], site)
            assert agent.step(wait=5)  # the training is fine
            evaluation = _wait_for(
                lambda: next(
                    (t for t in _task_rows(live, job["id"], site) if t["operation"] == "evaluate"),
                    None,
                ),
                30,
                "the evaluate task",
            )
            assert agent.step(wait=5)  # sent as a failure, not refused as metrics
            reply = _reply_of(live, evaluation["id"])
            assert reply is not None and reply["metrics"] is None, reply
            assert reply["failure"]["kind"] == "NotFinite"
            assert "evaluation was not finite" in reply["failure"]["message"]
            assert "loss = nan" in reply["failure"]["message"]
            assert not agent.step(wait=1)  # nothing is handed out again
            assert sum(e.endswith("evaluate…") for e in events) == 1, events
            assert not any((state / "outbox").iterdir())
            assert _ledger_kinds(state)[-1] == "failure"
    finally:
        _cancel(live, job["id"])


def test_an_update_the_coordinator_refuses_becomes_a_failure_instead_of_a_retry(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    site = SITES[3]
    job = _broken_job(live, tmp_path, "train", "nan_update")
    state = tmp_path / "state"
    try:
        with _agent(live, site, state, auto_approve=True) as (agent, events):
            train = _approved_task(live, agent, job["id"], site)
            assert agent.step(wait=5)  # refused with a 4xx: dropped, a failure reported instead
            reply = _reply_of(live, train["id"])
            assert reply is not None and reply["failure"] is not None, reply
            assert reply["failure"]["kind"] == "ReplyRefused"
            message = reply["failure"]["message"]
            assert "refused this site's reply (4" in message and "NaN" in message, message
            assert not agent.step(wait=1)  # the round is over for this site: no second training
            assert sum(e.endswith("train…") for e in events) == 1, events
            assert any("reporting a failure instead" in e for e in events), events
            assert not any((state / "outbox").iterdir())
            # the update and its refused reply left (and were recorded) once, then the failure
            assert _ledger_kinds(state) == ["update", "metrics", "failure"]
    finally:
        _cancel(live, job["id"])


@dataclass
class _Refusing:
    """The outbox tests' stub coordinator, refusing each reply with the next status given."""

    statuses: list[int]
    base_url: str = "https://coordinator.test"
    replies: list[dict[str, Any]] = field(default_factory=list)

    def upload_file(self, path: Path, *, sha256: str | None = None) -> str:
        assert sha256 is not None
        return sha256

    def post_bytes(self, path: str, body: bytes) -> Any:
        import json

        if self.statuses:
            raise ApiError(self.statuses.pop(0), "no")
        self.replies.append(json.loads(body))
        return {"status": "accepted"}


def test_a_refusal_that_may_pass_keeps_the_reply_and_one_for_good_replaces_it(
    tmp_path: Path,
) -> None:
    from tests.federation.test_outbox import node, task

    client = _Refusing([503, 429])
    agent, trained = node(tmp_path / "a", client)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(ApiError):
            agent._run_task(task())
        assert agent.outbox.waiting(11) is not None  # kept: the next attempt sends it
    agent._run_task(task())
    assert trained == [3] and client.replies[0]["blob_sha256"] is not None

    for status in (400, 413, 422):
        client = _Refusing([status])
        agent, trained = node(tmp_path / str(status), client)  # type: ignore[arg-type]
        agent._run_task(task())  # refused for good: the failure goes instead, at once
        (sent,) = client.replies
        assert sent["blob_sha256"] is None and sent["header"]["failure"]["kind"] == "ReplyRefused"
        assert f"({status})" in sent["header"]["failure"]["message"]
        assert agent.outbox.waiting(11) is None and trained == [3]

    client = _Refusing([422, 400])  # the failure itself refused: given up, not answered again
    agent, trained = node(tmp_path / "both", client)  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        agent._run_task(task())
    with pytest.raises(MedfedError, match="gives up"):
        agent._run_task(task())  # the same task handed out again
    assert trained == [3] and client.replies == [] and agent.outbox.waiting(11) is None


# -- one state folder, one node ----------------------------------------------------------------


def test_a_second_agent_on_the_same_state_folder_is_refused(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    import threading

    from medfed.errors import UsageError

    state = tmp_path / "state"
    with _agent(live, SITES[0], state) as (first, _), _agent(live, SITES[0], state) as (second, _):
        serving = threading.Thread(target=first.run, name="first-node", daemon=True)
        serving.start()
        try:
            lock = state / "node.lock"  # the pid is written just after the lock is taken
            _wait_for(lambda: lock.is_file() and lock.read_text().strip(), 10, "the first lock")
            with pytest.raises(UsageError, match="another node is already running") as refused:
                second.run()  # refused at once, before it polls
            assert str(state) in str(refused.value) and f"pid {os.getpid()}" in str(refused.value)
        finally:
            first.stop()
            serving.join(15)
        assert not serving.is_alive()
        second.lock()  # the first one stopped and gave the folder up
        second.unlock()


@pytest.mark.integration
def test_a_second_node_start_with_the_same_kit_and_state_is_refused(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    site = SITES[1]
    args = [
        sys.executable,
        "-m",
        "medfed",
        "node",
        "start",
        "--kit",
        str(live.kits / "sites" / site),
        "--data",
        "breast-cancer",
        "--site",
        DATA_SITE,
        "--state",
        str(tmp_path / "state"),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for(lambda: "training records" in log_path.read_text(), 60, "the first banner")
        second = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "another node is already running" in second.stderr, second.stderr
        assert f"pid {first.pid}" in second.stderr and "--state" in second.stderr
        assert "training records" not in second.stderr  # refused before it serves
        assert "Traceback" not in second.stderr
        assert first.poll() is None, log_path.read_text()
    finally:
        first.terminate()
        first.wait(30)


# -- what the coordinator names is printed as text -------------------------------------------


@click.group(cls=_Group)
def _cli() -> None:
    """The real error handling of `medfed`, with only the node group registered."""


_cli.add_command(node)


def test_job_ids_in_the_privacy_budget_are_printed_as_text(tmp_path: Path) -> None:
    from medfed.site.budget import SiteBudget

    state = tmp_path / "state"
    state.mkdir()
    book = SiteBudget.in_state(state)
    book.set_budget("breast-cancer", epsilon=10.0, delta=1e-5)
    book.reserve("breast-cancer", job="[/oops]", noise_multiplier=4.0, sample_rate=1.0, rounds=2)
    shown = CliRunner().invoke(_cli, ["node", "budget", "show", "--state", str(state)])
    assert shown.exit_code == 0, shown.output
    assert "[/oops]" in shown.output
