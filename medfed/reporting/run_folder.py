"""A run folder read back for the report: what ``medfed simulate`` left, whole or not.

Reads only (never writes): ``status.json``, ``config.toml``, ``summary.json`` (absent while a
run is going or after a crash), ``metrics.jsonl`` (a line cut short by a crash is skipped)
and ``calibration.json`` (binary classification). Every refusal is a :class:`UsageError`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfed.errors import UsageError
from medfed.orchestration.calibration_run import CALIBRATION_FILE
from medfed.orchestration.run_store import read_status
from medfed.reporting.summary import _LOWER_IS_BETTER, _PRIMARY

__all__ = ["RunFolder", "check_same_data", "primary_metric", "read_run"]


@dataclass(frozen=True)
class RunFolder:
    path: Path
    status: dict[str, Any]
    config: dict[str, Any]
    summary: dict[str, Any] | None
    rows: list[dict[str, Any]]
    calibration: dict[str, Any] | None

    @property
    def complete(self) -> bool:
        return self.summary is not None and self.status.get("status", "complete") == "complete"

    @property
    def seed(self) -> int | None:
        seed = self.config.get("seed")
        return seed if isinstance(seed, int) else None

    @property
    def data(self) -> dict[str, Any]:
        """The run's ``[data]`` table (name, sites, options…): what makes two runs
        comparable. The summary's data set name when there is no config.toml."""
        data = self.config.get("data")
        if isinstance(data, dict):
            return data
        return {"name": (self.summary or {}).get("dataset", "?")}

    @property
    def dataset(self) -> str:
        if self.summary and self.summary.get("dataset"):
            return str(self.summary["dataset"])
        return Path(str(self.data.get("name", "?"))).name

    @property
    def rounds_done(self) -> int:
        if self.summary is not None and "rounds_done" in self.summary:
            return int(self.summary["rounds_done"])
        return max((int(r.get("round", 0)) for r in self.rows), default=0)

    @property
    def sites(self) -> list[str]:
        listed = (self.summary or {}).get("sites") or []
        seen = [str(s) for s in listed]
        for row in self.rows:
            site = str(row.get("site"))
            if site != "all" and site not in seen:
                seen.append(site)
        return seen


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is unreadable ({exc}); the run folder is damaged") from None
    return data if isinstance(data, dict) else None


def _rows(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # the last line of a crashed run, cut short
            continue
        if isinstance(row, dict) and "round" in row and "site" in row:
            rows.append(row)
    return rows


def read_run(path: str | Path) -> RunFolder:
    """Read a run folder; a :class:`UsageError` when ``path`` is not one."""
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; give a run folder (medfed simulate --out)")
    markers = ("status.json", "config.toml", "metrics.jsonl", "summary.json")
    if not any((folder / name).is_file() for name in markers):
        raise UsageError(
            f"{folder} is not a run folder (no status.json, config.toml, metrics.jsonl or "
            "summary.json); give the folder medfed simulate or medfed demo wrote"
        )
    config: dict[str, Any] = {}
    try:
        config = tomllib.loads((folder / "config.toml").read_text())
    except FileNotFoundError:
        pass
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{folder}/config.toml is unreadable ({exc})") from None
    return RunFolder(
        path=folder,
        status=read_status(folder),
        config=config,
        summary=_json(folder / "summary.json"),
        rows=_rows(folder / "metrics.jsonl"),
        calibration=_json(folder / CALIBRATION_FILE),
    )


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    out.pop("dir", None)  # the same files may sit in another folder on another machine
    return out


def check_same_data(runs: Sequence[RunFolder]) -> None:
    """Runs shown together must be of one data set, split the same way (seeds may differ)."""
    first = runs[0]
    for run in runs[1:]:
        a, b = _comparable(first.data), _comparable(run.data)
        if run.dataset != first.dataset:
            what = f"{run.path} is a run of {run.dataset} but {first.path} is of {first.dataset}"
        elif a != b:
            keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            what = (
                f"{run.path} and {first.path} split {run.dataset} differently "
                f"([data] {', '.join(keys)} differ)"
            )
        else:
            continue
        raise UsageError(
            f"{what}; a report across runs compares seeds of one data set: give runs of the "
            "same data set, split the same way"
        )


def primary_metric(runs: Sequence[RunFolder]) -> tuple[str | None, bool]:
    """The headline metric of these runs, chosen as the summary chooses (its ``_PRIMARY``
    order), and whether lower is better (RMSE, MAE)."""
    seen: set[str] = set()
    for run in runs:
        s = run.summary or {}
        for metrics in [s.get("final") or {}, *(s.get("final_per_site") or {}).values()]:
            seen.update(k for k, v in metrics.items() if v is not None)
        for row in run.rows:
            if row.get("phase") == "evaluate":
                seen.update(k for k in _PRIMARY if row.get(k) is not None)
    name = next((n for n in _PRIMARY if n in seen), None)
    return name, name in _LOWER_IS_BETTER
