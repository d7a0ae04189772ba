"""A hostile researcher's text reaching a node: it is printed as text and never stops the node.

A researcher names the task of a job; the coordinator passes that name on to every node, whose
steward sees it. Here the name is Rich markup (``[/oops]``, a closing tag with no opening one),
which crashed every node that printed it. The node runs as a real ``medfed node start`` process
against a real coordinator over TLS, and as an in-process agent whose printer raises.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from medfed.data import load_dataset
from medfed.federation.coordinator.jobs import JobConfig
from medfed.federation.node.agent import NodeAgent, NodeSettings
from medfed.federation.transfer.client import client_for_kit
from tests.federation.server import (
    SITES,
    LiveCoordinator,
    breast_mlp,
    cancel,
    live_coordinator,
    submit_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARKUP = "[/oops]"  # a closing tag that matches no opening one: Rich raises MarkupError on it


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCoordinator]:
    with live_coordinator(tmp_path_factory.mktemp("researcher-vs-node")) as running:
        yield running


def _submit(live: LiveCoordinator, *, task_name: str) -> dict[str, Any]:
    """A job of the example task, under a task name of the researcher's choosing."""
    model = breast_mlp()
    client = live.client("bob")
    config = JobConfig.from_json({"rounds": 1, "round_timeout": 60, "data_spec": model.data_spec})
    job: dict[str, Any] = client.post_json(
        "/v1/jobs",
        {
            "name": "markup",
            "task_name": task_name,
            "bundle_sha256": client.upload_blob(model.task_bytes),
            "initial_sha256": client.upload_blob(model.initial_bytes),
            "config": config.to_json(),
        },
    )
    return job


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _approval(live: LiveCoordinator, job_id: str, site: str) -> str | None:
    return live.coordinator.store.approvals(job_id).get(site)


def test_a_task_name_that_is_markup_is_printed_as_text_and_the_node_keeps_running(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    site = SITES[0]
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        node = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "medfed",
                "node",
                "start",
                "--kit",
                str(live.kits / "sites" / site),
                "--data",
                "breast-cancer",
                "--state",
                str(tmp_path / "state"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        )
    job = None
    try:
        _wait_for(lambda: "training records" in log_path.read_text(), 60, "the node's banner")
        job = _submit(live, task_name=MARKUP)
        # the steward is told, with the name as the researcher wrote it, and the coordinator
        # hears that this site's decision is pending: the node went on after printing it
        _wait_for(
            lambda: _approval(live, job["id"], site) == "pending" or node.poll() is not None,
            60,
            "the node to report its steward's pending decision",
        )
        text = log_path.read_text()
        assert node.poll() is None, text
        assert f"({MARKUP}) waits for your approval" in text, text
        assert "Traceback" not in text, text
    finally:
        if job is not None:
            cancel(live, job["id"])
        node.terminate()
        node.wait(30)


def test_a_printer_that_raises_does_not_stop_the_node(
    live: LiveCoordinator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever the event handler does (a broken terminal, markup), the agent keeps serving."""
    site = SITES[1]
    printed: list[str] = []

    def printer(message: str) -> None:
        printed.append(message)
        raise RuntimeError("the terminal went away")

    dataset = load_dataset("breast-cancer")
    client = client_for_kit(live.kit(site), timeout=30)
    agent = NodeAgent(
        client=client,
        site=site,
        data=dataset.site(site),
        spec=dataset.spec,
        settings=NodeSettings(state_dir=tmp_path / "state", poll_wait=1.0, max_backoff=1.0),
        on_event=printer,
        dataset="breast-cancer",
        kit=live.kit(site),
    )
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            agent.run()
        except BaseException as exc:  # the test reports it below
            failed.append(exc)

    thread = threading.Thread(target=serve, name="node", daemon=True)
    job = None
    with caplog.at_level(logging.WARNING, logger="medfed.node"):
        thread.start()
        try:
            job = _submit(live, task_name=MARKUP)
            _wait_for(
                lambda: _approval(live, job["id"], site) == "pending" or not thread.is_alive(),
                30,
                "the node to report its steward's pending decision",
            )
            assert thread.is_alive() and not failed, failed
            assert _approval(live, job["id"], site) == "pending"
            assert any(MARKUP in m for m in printed), printed
        finally:
            agent.stop()
            thread.join(15)
            client.close()
            if job is not None:
                cancel(live, job["id"])
    assert not thread.is_alive() and not failed, failed
    assert "the terminal went away" in caplog.text


# -- approval binds what runs ------------------------------------------------------------------


def _submit_config(live: LiveCoordinator, config: JobConfig, name: str) -> dict[str, Any]:
    return submit_config(live, config, name=name)


def test_an_approved_code_hash_does_not_cover_other_settings_or_another_data_set(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    """A job reusing approved code with local_epochs = 1000, or for another data set, waits
    for the steward, who sees its settings, where it came from and what changed."""
    from click.testing import CliRunner

    from medfed.cli.main import cli
    from medfed.site.approval import ApprovalStore

    site = SITES[2]
    dataset = load_dataset("breast-cancer")
    client = client_for_kit(live.kit(site), timeout=30)
    state = tmp_path / "state"
    events: list[str] = []
    agent = NodeAgent(
        client=client,
        site=site,
        data=dataset.site(site),
        spec=dataset.spec,
        settings=NodeSettings(state_dir=state, poll_wait=1.0, max_backoff=1.0),
        on_event=events.append,
        dataset="breast-cancer",
        kit=live.kit(site),
    )
    spec = breast_mlp().data_spec
    jobs: list[dict[str, Any]] = []
    try:
        first = _submit_config(
            live,
            JobConfig.from_json({"rounds": 1, "round_timeout": 60, "data_spec": spec}),
            "first",
        )
        jobs.append(first)
        _wait_for(
            lambda: (
                agent.step(wait=1) is not None and bool(ApprovalStore.in_state(state).pending())
            ),
            30,
            "the first request",
        )
        [request] = ApprovalStore.in_state(state).pending()
        approved = CliRunner().invoke(
            cli, ["node", "approve", request.approval_id[:12], "--state", str(state), "--by", "s"]
        )
        assert approved.exit_code == 0, approved.output
        _wait_for(
            lambda: (
                agent.step(wait=0) is not None and _approval(live, first["id"], site) == "approved"
            ),
            30,
            "the first job approved",
        )
        cancel(live, first["id"])

        # the same code, a thousand local epochs: a new request, pending, not run
        one = {"rounds": 1, "round_timeout": 60}
        more = JobConfig.from_json({**one, "train": {"local_epochs": 1000}, "data_spec": spec})
        elsewhere = JobConfig.from_json({**one, "data_spec": {**spec, "data": "lung"}})
        second = _submit_config(live, more, "more-epochs")
        third = _submit_config(live, elsewhere, "other-data")
        jobs += [second, third]
        for job in (second, third):
            _wait_for(
                lambda job=job: (
                    agent.step(wait=0) is not None and _approval(live, job["id"], site) == "pending"
                ),
                30,
                f"{job['name']} reported pending",
            )
        assert live.coordinator.store.approvals(second["id"]).get(site) == "pending"
        shown = CliRunner().invoke(cli, ["node", "pending", "--state", str(state)])
        assert shown.exit_code == 0, shown.output
        text = shown.output
        assert "train.local_epochs = 1000" in text, text
        assert "train.local_epochs: 1 → 1000" in text, text  # what changed since approved
        assert 'data_spec.data: (unset) → "lung"' in text, text
        assert "researcher bob, job" in text and "'more-epochs'" in text and live.url in text
        assert request.approval_id[:12] in text  # the approval the change is measured from
        # and no task of the unapproved jobs was run here
        assert not any("round 1" in e and second["id"] in e for e in events), events
    finally:
        client.close()
        for job in jobs:
            cancel(live, job["id"])
