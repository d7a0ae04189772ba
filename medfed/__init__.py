"""medfed — federated learning for hospitals: the model travels, patient records stay home.

The public API, re-exported here (a test pins these names). Heavy parts (torch, the data
sets, the simulation) load on first use, so ``import medfed`` stays light.

>>> import medfed
>>> medfed.Params({"w": __import__("numpy").zeros(3)}).num_values
3
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from medfed.config import RunConfig, TrainSettings, load_config
from medfed.errors import (
    ConfigError,
    DataError,
    MedfedError,
    RoundFailed,
    TaskLoadError,
    UsageError,
)
from medfed.records import Instruction, Metrics, Operation, Params, Reply, SiteFailure, Update
from medfed.site.app import FitResult, SiteApp
from medfed.strategies import FedAvg, Strategy

if TYPE_CHECKING:
    from medfed.data import DataSpec, FederatedDataset, SiteData, load_dataset
    from medfed.data.statistics import StatsQuery, StatsResult
    from medfed.orchestration.simulation import SimulationResult, simulate
    from medfed.orchestration.statistics_api import stats
    from medfed.site.task import Task, TrainContext, default_task
    from medfed.site.task_loading import load_task

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "DataSpec",
    "FedAvg",
    "FederatedDataset",
    "FitResult",
    "Instruction",
    "MedfedError",
    "Metrics",
    "Operation",
    "Params",
    "Reply",
    "RoundFailed",
    "RunConfig",
    "SimulationResult",
    "SiteApp",
    "SiteData",
    "SiteFailure",
    "StatsQuery",
    "StatsResult",
    "Strategy",
    "Task",
    "TaskLoadError",
    "TrainContext",
    "TrainSettings",
    "Update",
    "UsageError",
    "__version__",
    "default_task",
    "load_config",
    "load_dataset",
    "load_task",
    "simulate",
    "stats",
]

_LAZY = {
    "DataSpec": "medfed.data",
    "FederatedDataset": "medfed.data",
    "SiteData": "medfed.data",
    "load_dataset": "medfed.data",
    "SimulationResult": "medfed.orchestration.simulation",
    "simulate": "medfed.orchestration.simulation",
    "StatsQuery": "medfed.data.statistics",
    "StatsResult": "medfed.data.statistics",
    "stats": "medfed.orchestration.statistics_api",
    "Task": "medfed.site.task",
    "TrainContext": "medfed.site.task",
    "default_task": "medfed.site.task",
    "load_task": "medfed.site.task_loading",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medfed' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
