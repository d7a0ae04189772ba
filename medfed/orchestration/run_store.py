"""The run folder: everything a finished (or interrupted) run leaves behind.

::

    RUN/
      config.toml          the resolved configuration (``medfed simulate --config`` repeats it)
      status.json          running | complete | incomplete | failed, rounds done, reason
      model.safetensors    the latest global model (replaced atomically after every round)
      metrics.jsonl        one JSON object per site and phase per round, appended as they come
      metrics.csv          the same rows as a table
      checkpoint.safetensors  the model and the strategy's and privacy state after the last
                           round: what ``medfed simulate --resume RUN`` goes on from
      site-state/          each site's state between rounds (medfed.site.state)
      summary.json / summary.md   written at the end (and on interruption, for what was done)

Files are written so that a crash or Ctrl-C at any moment leaves each one whole, and in an
order that makes the checkpoint the commit point of a round: a round's metric rows are
appended before it, so a resumed run drops the rows of a round its checkpoint does not hold.
While a run writes its folder it holds a lock on ``RUN/.lock``: a second medfed cannot
resume (or overwrite) a run that is still going.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medfed.config import RunConfig, load_config, save_config
from medfed.errors import SerializationError, UsageError
from medfed.messages import SiteReport
from medfed.orchestration.checkpoint import (
    RoundCheckpoint,
    checkpoint_from_bytes,
    checkpoint_to_bytes,
)
from medfed.orchestration.driver import RoundResult
from medfed.records import Metrics, Params
from medfed.serde import atomic_write, save_params

__all__ = ["METRIC_COLUMNS", "RunStore", "read_status"]

METRIC_COLUMNS = (
    "round",
    "phase",
    "site",
    "num_examples",
    "loss",
    "accuracy",
    "auroc",
    "c_index",
    "mae",
    "rmse",
    "dice",
    "seconds",
    "error",
    "epsilon",  # ε so far at δ: the run's (client-level DP) or a site's own (DP-SGD)
    "delta",
)


def read_status(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(path) / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


class RunStore:
    """Writes one run folder. Also a round observer of the driver."""

    @staticmethod
    def check_free(path: str | Path, *, overwrite: bool = False) -> None:
        """Refuse a destination that is a file, or that holds a run (unless ``overwrite``)."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise UsageError(f"{p} exists and is not a folder; choose another --out")
        if (p / "status.json").exists() and not overwrite:
            raise UsageError(f"{p} already holds a run; choose another --out or pass --overwrite")

    def __init__(self, path: str | Path, *, overwrite: bool = False, _resume: bool = False) -> None:
        self.path = Path(path)
        if not _resume:
            self.check_free(self.path, overwrite=overwrite)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock: Any = _lock(self.path)
        self.rounds_done = 0
        self.model_sha256: str | None = None
        self._started = time.time()
        if not _resume:
            try:
                self._clear()
            except BaseException:
                self.close()
                raise

    def _clear(self) -> None:
        """Remove what another run left here (an ``--overwrite``)."""
        for name in (
            "metrics.jsonl",
            "metrics.csv",
            "summary.json",
            "summary.md",
            "checkpoint.safetensors",
        ):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / "site-state", ignore_errors=True)  # another run's
        with open(self.path / "metrics.csv", "w", newline="") as fh:
            csv.writer(fh).writerow(METRIC_COLUMNS)

    @classmethod
    def resume(cls, path: str | Path) -> tuple[RunStore, RunConfig, RoundCheckpoint]:
        """Take an interrupted run over: its store, its configuration and its last checkpoint.

        The metric rows of rounds after the checkpoint (a round cut short) are dropped; what
        is refused (a complete run, one still running, one without a finished round) is a
        :class:`UsageError` that says what to do instead.
        """
        folder = Path(path)
        if not (folder / "config.toml").is_file():
            raise UsageError(f"{folder} holds no run (no config.toml); give a run folder")
        status = read_status(folder)
        if status.get("status") == "complete":
            raise UsageError(f"the run in {folder} is complete: there is nothing to resume")
        config = load_config(folder / "config.toml").with_overrides(out=str(folder))
        store = cls(folder, _resume=True)
        try:
            raw = (folder / "checkpoint.safetensors").read_bytes()
        except FileNotFoundError:
            store.close()
            raise UsageError(
                f"the run in {folder} has not finished a round, so there is nothing to go on "
                f"from; start it again: medfed simulate --config {folder}/config.toml "
                f"--out {folder} --overwrite"
            ) from None
        try:
            checkpoint = checkpoint_from_bytes(raw)
        except SerializationError as exc:
            store.close()
            raise UsageError(
                f"cannot resume {folder}: its checkpoint is unreadable ({exc})"
            ) from None
        if checkpoint.model is None:
            store.close()
            raise UsageError(f"cannot resume {folder}: its checkpoint holds no model")
        store.rounds_done = checkpoint.round
        store._started = float(status.get("started", store._started))
        store._keep_rows(checkpoint.round)
        store.save_model(checkpoint.model, round=checkpoint.round)
        return store, config, checkpoint

    def _keep_rows(self, last_round: int) -> None:
        """Drop the metric rows of rounds after ``last_round``, in both metric files."""
        rows = []
        jsonl = self.path / "metrics.jsonl"
        if jsonl.exists():
            for line in jsonl.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the crash
                    continue
                if isinstance(row, dict) and int(row.get("round", 0)) <= last_round:
                    rows.append(row)
        atomic_write(jsonl, "".join(json.dumps(row) + "\n" for row in rows))
        with open(self.path / ".metrics.csv.new", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(METRIC_COLUMNS)
            for row in rows:
                writer.writerow(["" if row.get(c) is None else row.get(c) for c in METRIC_COLUMNS])
        os.replace(self.path / ".metrics.csv.new", self.path / "metrics.csv")

    def close(self) -> None:
        """Let another medfed take the folder (it is also let go when this process ends)."""
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.close()

    def __del__(self) -> None:
        self.close()

    def start(self, config: RunConfig, *, extra: Mapping[str, Any] | None = None) -> None:
        save_config(config, self.path / "config.toml")
        self._status("running", **dict(extra or {}))

    def _status(self, status: str, **fields: Any) -> None:
        data = read_status(self.path)
        data.update(fields)
        data.update(
            status=status,
            rounds_done=self.rounds_done,
            model_sha256=self.model_sha256,
            started=data.get("started", self._started),
            updated=time.time(),
        )
        atomic_write(self.path / "status.json", json.dumps(data, indent=2) + "\n")

    def save_model(self, params: Params, *, round: int) -> None:
        self.model_sha256 = save_params(
            self.path / "model.safetensors", params, {"round": str(round)}
        )

    def append_rows(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path / "metrics.jsonl", "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with open(self.path / "metrics.csv", "a", newline="") as fh:
            writer = csv.writer(fh)
            for row in rows:
                writer.writerow(["" if row.get(c) is None else row.get(c) for c in METRIC_COLUMNS])

    def on_round_end(self, result: RoundResult) -> None:
        self.append_rows(round_rows(result))
        # the commit point: the model, the strategy's and the privacy state after the round
        checkpoint = dataclasses.replace(result.checkpoint, model=result.params)
        atomic_write(self.path / "checkpoint.safetensors", checkpoint_to_bytes(checkpoint))
        self.save_model(result.params, round=result.round)
        self.rounds_done = result.round
        self._status("running")

    def finish(self, summary: Mapping[str, Any], markdown: str) -> None:
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")
        atomic_write(self.path / "summary.md", markdown)
        self._status("complete")

    def mark(
        self,
        status: str,
        reason: str,
        summary: Mapping[str, Any] | None = None,
        markdown: str | None = None,
    ) -> None:
        """Record an unfinished run (``incomplete`` or ``failed``) and why."""
        if summary is not None:
            atomic_write(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")
        if markdown is not None:
            atomic_write(self.path / "summary.md", markdown)
        self._status(status, reason=reason)


def _lock(folder: Path) -> Any:
    """An exclusive lock on ``folder/.lock`` for as long as the returned file stays open."""
    fh = open(folder / ".lock", "a+")  # noqa: SIM115 - held for the store's lifetime
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise UsageError(
            f"{folder} is being written by another medfed right now; wait for it to end "
            "(or stop it) first"
        ) from None
    return fh


def metric_row(
    round: int,
    phase: str,
    site: str,
    metrics: Metrics | None,
    *,
    seconds: float | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"round": round, "phase": phase, "site": site}
    if metrics is not None:
        row.update(metrics.as_dict())
    row["seconds"] = None if seconds is None else round_(seconds)
    row["error"] = error
    return row


def report_fields(report: SiteReport) -> dict[str, float | int | None]:
    """A site's report as metric-row fields (``clip_bit`` stays out: it is noise)."""
    return {"epsilon": report.epsilon, "saturated": report.saturated, "steps": report.local_steps}


def round_(x: float) -> float:
    return float(f"{x:.6g}")


def round_rows(result: RoundResult) -> list[dict[str, Any]]:
    """Long-format rows: one per site and phase, then the weighted mean over sites (``all``)."""
    rows = [metric_row(result.round, "train", s, m) for s, m in result.train_metrics.items()]
    for row in rows:  # what each site reported: DP-SGD's ε, values saturated by secure agg.
        report = result.reports.get(row["site"])
        if report is not None:
            row.update({k: v for k, v in report_fields(report).items() if v is not None})
    rows += [
        metric_row(result.round, "train", s, None, error=str(f)) for s, f in result.failures.items()
    ]
    rows.append(
        metric_row(result.round, "train", "all", result.train_summary, seconds=result.seconds)
    )
    if result.privacy:  # ε so far at δ, noise multiplier and clip of a DP run
        rows[-1].update({k: round_(v) for k, v in result.privacy.items()})
    if result.eval_metrics or result.eval_failures:
        rows += [metric_row(result.round, "evaluate", s, m) for s, m in result.eval_metrics.items()]
        rows += [
            metric_row(result.round, "evaluate", s, None, error=str(f))
            for s, f in result.eval_failures.items()
        ]
        rows.append(metric_row(result.round, "evaluate", "all", result.eval_summary))
    return rows
