"""The node's outbox: an update waits on disk until its reply is accepted, and is resumed,
not trained again, after a stalled upload or a restart; nothing piles up."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from medfed.data.base import DataSpec, SiteData, TaskKind
from medfed.errors import IntegrityError
from medfed.federation.node.agent import NodeAgent, NodeSettings
from medfed.federation.node.job_context import JobContext
from medfed.federation.node.outbox import Outbox
from medfed.federation.node.privacy import JobProtection, job_privacy
from medfed.federation.transfer.client import ApiError, TransportError
from medfed.messages import RoundSettings, settings_to_json
from medfed.records import Operation, Params, Reply, Update
from medfed.serde import params_to_bytes, sha256_hex
from medfed.site.ledger import EgressLedger


def delta() -> Params:
    return Params({"w": np.full((3, 2), 0.5, np.float32), "b": np.ones(2, np.float32)})


def test_a_reply_is_recorded_before_it_is_marked_sendable(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    recorded: list[tuple[str, int]] = []
    waiting = box.put(7, {"site": "h"}, delta(), lambda sha, n: recorded.append((sha, n)))
    blob = params_to_bytes(delta())
    assert recorded == [(sha256_hex(blob), len(blob))]
    assert waiting.update is not None and waiting.update.read_bytes() == blob
    assert box.waiting(7) == waiting
    assert box.waiting(8) is None

    def broken_ledger(sha: str, n: int) -> None:
        raise OSError("ledger disk full")

    with pytest.raises(OSError, match="ledger"):
        box.put(9, {"site": "h"}, delta(), broken_ledger)
    assert box.waiting(9) is None  # not recorded: never marked sendable, so never sent


def test_only_the_current_tasks_reply_is_kept(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    box.put(1, {"site": "h"}, delta(), lambda sha, n: None)
    box.put(2, {"site": "h"}, None, lambda sha, n: None)  # a failure reply: header only
    (box.folder / ".task-3.safetensors.tmp123").write_bytes(b"an interrupted write")
    assert box.waiting(1) is None  # put() cleared the older entry
    waiting = box.waiting(2)
    assert waiting is not None and waiting.update is None and waiting.sha256 is None
    box.keep_only(2)
    assert sorted(p.name for p in box.folder.iterdir()) == ["task-2.json"]
    box.remove(2)
    assert list(box.folder.iterdir()) == []


# -- the node -----------------------------------------------------------------------------------


@dataclass
class StubClient:
    """Records what the node sends; the first ``stall`` uploads fail as a stalled transfer."""

    stall: int = 0
    refuse: bool = False
    base_url: str = "https://coordinator.test"
    uploads: list[tuple[str, bytes]] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)

    def upload_file(self, path: Path, *, sha256: str | None = None) -> str:
        if self.stall:
            self.stall -= 1
            raise TransportError("the upload made no progress for 120 s")
        assert sha256 == sha256_hex(path.read_bytes())
        self.uploads.append((sha256, path.read_bytes()))
        return sha256

    def post_bytes(self, path: str, body: bytes) -> Any:
        if self.refuse:
            raise ApiError(409, "this round is closed for your site")
        self.replies.append(json.loads(body))
        return {"status": "accepted"}


def node(tmp_path: Path, client: StubClient) -> tuple[NodeAgent, list[int]]:
    data = SiteData(
        "h", np.zeros((2, 2), np.float32), np.zeros(2), np.zeros((1, 2), np.float32), np.zeros(1)
    )
    agent = NodeAgent(
        client=client,  # type: ignore[arg-type]
        site="h",
        data=data,
        spec=DataSpec(TaskKind.BINARY, (2,)),
        settings=NodeSettings(state_dir=tmp_path / "state"),
    )
    trained: list[int] = []

    def handle(instruction: Any) -> Reply:
        trained.append(instruction.round)
        return Reply("h", instruction.round, Operation.TRAIN, update=Update(delta(), 5))

    runtime = SimpleNamespace(handle=handle)
    protection = JobProtection("job-1", job_privacy({}))  # no DP, no secure aggregation
    context = JobContext("sha", runtime, protection)  # type: ignore[arg-type]  # its handle
    agent._context = lambda job_id, announced: context  # type: ignore[method-assign]
    agent._global_model = lambda sha: delta()  # type: ignore[method-assign]
    return agent, trained


def task(task_id: int = 11) -> dict[str, Any]:
    instruction = {
        "operation": "train",
        "round": 3,
        "seed": 1,
        "settings": settings_to_json(RoundSettings()),
    }
    return {
        "id": task_id,
        "job_id": "job-1",
        "round": 3,
        "operation": "train",
        "instruction": instruction,
        "params_sha256": "a" * 64,
    }


def test_a_stalled_upload_is_resumed_without_training_again(tmp_path: Path) -> None:
    client = StubClient(stall=1)
    agent, trained = node(tmp_path, client)
    with pytest.raises(TransportError):
        agent._run_task(task())
    assert trained == [3] and agent.outbox.waiting(11) is not None
    agent._run_task(task())  # the coordinator hands the same task out again
    assert trained == [3]  # not trained again
    blob = params_to_bytes(delta())
    assert client.uploads == [(sha256_hex(blob), blob)]
    assert client.replies[0]["blob_sha256"] == sha256_hex(blob)
    assert list((tmp_path / "state" / "outbox").iterdir()) == []
    kinds = [e.kind for e in EgressLedger.in_state(tmp_path / "state").entries()]
    assert kinds == ["update", "metrics"]  # the update recorded once, before it first left


def test_a_restarted_node_sends_the_waiting_reply(tmp_path: Path) -> None:
    agent, _ = node(tmp_path, StubClient(stall=1))
    with pytest.raises(TransportError):
        agent._run_task(task())
    client = StubClient()
    again, trained_again = node(tmp_path, client)  # the same state folder, a new process
    again._run_task(task())
    assert trained_again == [] and len(client.replies) == 1
    assert list((tmp_path / "state" / "outbox").iterdir()) == []


def test_a_refused_reply_is_not_kept(tmp_path: Path) -> None:
    agent, _ = node(tmp_path, StubClient(refuse=True))
    with pytest.raises(ApiError):
        agent._run_task(task())
    assert list((tmp_path / "state" / "outbox").iterdir()) == []
    client = StubClient()

    def broken(path: Path, *, sha256: str | None = None) -> str:
        raise IntegrityError("the file being uploaded became shorter; upload it again")

    client.upload_file = broken  # type: ignore[method-assign]
    agent.client = client  # type: ignore[assignment]
    with pytest.raises(IntegrityError):
        agent._run_task(task(12))
    assert list((tmp_path / "state" / "outbox").iterdir()) == []


def test_a_reply_for_a_closed_round_does_not_pile_up(tmp_path: Path) -> None:
    agent, trained = node(tmp_path, StubClient(stall=1))
    with pytest.raises(TransportError):
        agent._run_task(task(11))
    agent.client = StubClient()
    agent._run_task(task(12))  # task 11's round closed meanwhile: the next task comes
    assert trained == [3, 3]
    assert list((tmp_path / "state" / "outbox").iterdir()) == []
