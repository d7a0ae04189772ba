"""The run folder: everything a finished (or interrupted) run leaves behind.

::

    RUN/
      config.toml          the resolved configuration (``medfed simulate --config`` repeats it)
      status.json          running | complete | incomplete | failed, rounds done, reason
      model.safetensors    the latest global model (replaced atomically after every round)
      metrics.jsonl        one JSON object per site and phase per round, appended as they come
      metrics.csv          the same rows as a table
      summary.json / summary.md   written at the end (and on interruption, for what was done)

Files are written so that a crash or Ctrl-C at any moment leaves each one whole.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medfed.config import RunConfig, save_config
from medfed.errors import UsageError
from medfed.messages import SiteReport
from medfed.orchestration.checkpoint import checkpoint_to_bytes
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

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.check_free(self.path, overwrite=overwrite)
        self.path.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "metrics.csv", "summary.json", "summary.md"):
            (self.path / name).unlink(missing_ok=True)
        self.rounds_done = 0
        self.model_sha256: str | None = None
        self._started = time.time()
        with open(self.path / "metrics.csv", "w", newline="") as fh:
            csv.writer(fh).writerow(METRIC_COLUMNS)

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
        self.save_model(result.params, round=result.round)
        # the strategy's and the privacy state after the round (orchestration.checkpoint)
        atomic_write(self.path / "checkpoint.safetensors", checkpoint_to_bytes(result.checkpoint))
        self.append_rows(round_rows(result))
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
