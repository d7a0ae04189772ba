"""A task whose training depends on the site's state: the k-th round a site trains in uses
the learning rate divided by k. A site that lost its state would train with the full rate
again, so the global model shows whether each site's state survived."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from torch import nn

from medfed.records import Metrics
from medfed.site.task import Task, TrainContext
from medfed.site.torch_app import default_train


def build_model(spec):
    return nn.Sequential(nn.Linear(spec.input_shape[0], 8), nn.ReLU(), nn.Linear(8, 1))


def train(model: nn.Module, data, ctx: TrainContext) -> Metrics:
    # a test that must cut a run in the middle slows its rounds down (a number of seconds)
    time.sleep(float(os.environ.get("MEDFED_TEST_TRAIN_SLEEP", "0")))
    seen = int(ctx.state.get("rounds_seen", np.zeros(1, np.int64))[0])
    ctx.state["rounds_seen"] = np.array([seen + 1], np.int64)
    ctx.state["last_round"] = np.array([ctx.round], np.int64)
    settings = dataclasses.replace(
        ctx.settings, learning_rate=ctx.settings.learning_rate / (seen + 1)
    )
    return default_train(model, data, dataclasses.replace(ctx, settings=settings))


task = Task(model=build_model, train=train)
