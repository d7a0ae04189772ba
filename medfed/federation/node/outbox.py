"""The node's outbox: a reply waiting to leave, on disk until the coordinator accepted it.

::

    STATE/outbox/task-<id>.safetensors   the update, streamed from the trained params
    STATE/outbox/task-<id>.json          the reply's header, the update's sha256 and size

The update is written window by window (never built as bytes), recorded in the egress ledger,
and only then is the ``.json`` marker written: a marker means "recorded, may be sent". The
upload reads the file chunk by chunk. If the connection stalls or the node restarts, the
coordinator hands the same task out again and the node sends the waiting reply instead of
training again; the coordinator already holds the chunks that arrived, so the upload resumes.
An entry is removed once the reply is accepted or refused for good (a 4xx: the node then
reports a failure for the task instead, which waits here in its place); a refusal that may
pass (a 5xx, 429) leaves it waiting. Any entry of another task (a round that closed meanwhile)
or temporary file is removed when the next task starts, so at most one reply waits here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from medfed.records import Params
from medfed.serde import atomic_write
from medfed.tensor_file import write_params

__all__ = ["Outbox", "Waiting"]


class Record(Protocol):
    def __call__(self, sha256: str, nbytes: int) -> None: ...


@dataclass(frozen=True)
class Waiting:
    """A reply that may be sent: its header, and its update's file when it carries one."""

    task_id: int
    header: dict[str, Any]
    update: Path | None
    sha256: str | None


class Outbox:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _paths(self, task_id: int) -> tuple[Path, Path]:
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            raise ValueError("a task id is an integer")
        return self.folder / f"task-{task_id}.json", self.folder / f"task-{task_id}.safetensors"

    def waiting(self, task_id: int) -> Waiting | None:
        """The reply to ``task_id`` recorded by an earlier attempt, if it is still complete."""
        marker, update = self._paths(task_id)
        try:
            saved = json.loads(marker.read_text())
            header, sha = saved["header"], saved["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(header, dict) or (sha is not None and not update.is_file()):
            return None
        return Waiting(task_id, header, update if sha is not None else None, sha)

    def put(
        self, task_id: int, header: dict[str, Any], delta: Params | None, record: Record
    ) -> Waiting:
        """Write a reply's update, ``record`` it (the egress ledger), then mark it sendable."""
        marker, update = self._paths(task_id)
        self.keep_only(None)
        sha = None
        if delta is not None:
            sha, size = write_params(update, delta)
            record(sha, size)
        atomic_write(marker, json.dumps({"header": header, "sha256": sha}))
        return Waiting(task_id, header, update if sha is not None else None, sha)

    def keep_only(self, task_id: int | None) -> None:
        """Remove every entry but ``task_id``'s, and temporary files of interrupted writes."""
        keep = set() if task_id is None else {p.name for p in self._paths(task_id)}
        for path in self.folder.iterdir():
            if path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)

    def remove(self, task_id: int) -> None:
        for path in self._paths(task_id):
            path.unlink(missing_ok=True)
