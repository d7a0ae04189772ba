"""Real updates for the attack tests: the site app's one local SGD step on chosen records."""

from __future__ import annotations

import numpy as np

from medfed.config import TrainSettings
from medfed.data.base import FederatedDataset, SiteData
from medfed.records import Instruction, Operation, Params
from medfed.site.pipeline import compute_delta
from medfed.site.task import Task, default_task


def one_step_update(
    task: Task, ds: FederatedDataset, x: np.ndarray, y: np.ndarray, *, seed: int = 0
) -> tuple[Params, Params]:
    """The global params and one site's update after one SGD step on ``x, y`` (real site app)."""
    params = task.initial_params(ds.spec, seed=seed)
    site = SiteData(name="s", x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])
    settings = TrainSettings(local_epochs=1, batch_size=len(x), learning_rate=0.05)
    app = task.site_app(site, ds.spec, settings, device="cpu")
    fitted = app.fit(params, Instruction(Operation.TRAIN, 1, params, seed))
    return params, compute_delta(fitted.params, params)


def tabular_update(ds: FederatedDataset, rows: list[int]) -> tuple[Params, Params, np.ndarray]:
    pooled = ds.pooled()
    x, y = pooled.x_train[rows], pooled.y_train[rows]
    params, update = one_step_update(default_task(ds.spec), ds, x, y)
    return params, update, x
