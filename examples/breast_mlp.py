"""A task with its own model: a two-layer MLP with dropout for tabular binary data.

Run it with::

    medfed simulate --task examples/breast_mlp.py:task

Training and evaluation are medfed's defaults (binary cross-entropy on one logit; accuracy and
AUROC on each site's held-out patients). The model must output one logit per patient.
"""

from __future__ import annotations

from torch import nn

from medfed.data.base import DataSpec, TaskKind
from medfed.site.task import Task


def build_model(spec: DataSpec) -> nn.Module:
    if spec.kind is not TaskKind.BINARY or len(spec.input_shape) != 1:
        raise ValueError(f"this task is for tabular binary data, not {spec.kind.value} data")
    n_features = spec.input_shape[0]
    return nn.Sequential(
        nn.Linear(n_features, 64),
        nn.ReLU(),
        nn.Dropout(p=0.1),
        nn.Linear(64, 16),
        nn.ReLU(),
        nn.Linear(16, spec.n_outputs),
    )


task = Task(model=build_model, name="breast-mlp")
