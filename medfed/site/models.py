"""Default models: what a federation trains when the researcher gives no task.

- tabular classification: a small MLP (one hidden layer of 32 ReLU units);
- survival: a Cox model, one linear layer without bias (as FLamby's Fed-TCGA-BRCA baseline;
  a bias would cancel out of the partial likelihood);
- images: a small CNN (two conv blocks and a linear head) that trains in seconds on a CPU.

Each returns logits of width ``spec.n_outputs``.
"""

from __future__ import annotations

import math

from torch import nn

from medfed.data.base import DataSpec, TaskKind
from medfed.errors import TaskLoadError

__all__ = ["cox_linear", "default_model", "mlp", "small_cnn"]


def mlp(n_features: int, n_outputs: int, *, hidden: int = 32) -> nn.Module:
    """One hidden layer of ``hidden`` ReLU units; ``hidden=0`` gives logistic regression."""
    if hidden == 0:
        return nn.Linear(n_features, n_outputs)
    return nn.Sequential(
        nn.Linear(n_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_outputs),
    )


def cox_linear(n_features: int) -> nn.Module:
    """A linear Cox proportional-hazards model: risk = x·β (no bias: it cancels)."""
    return nn.Linear(n_features, 1, bias=False)


def small_cnn(
    in_channels: int, height: int, width: int, n_outputs: int, *, channels: int = 16
) -> nn.Module:
    """Two conv–ReLU–max-pool blocks and a linear head.

    The feature map is average-pooled to at most 7×7 before the head, so the head stays
    small for large images while 28×28 inputs keep their full 7×7 resolution.
    """
    if height < 4 or width < 4:
        raise ValueError(f"small_cnn needs images of at least 4×4 pixels, got {height}×{width}")
    pooled = (min(height // 4, 7), min(width // 4, 7))
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(pooled),
        nn.Flatten(),
        nn.Linear(2 * channels * math.prod(pooled), n_outputs),
    )


def default_model(spec: DataSpec) -> nn.Module:
    """The default model for a data spec, chosen by task kind and input shape."""
    shape = spec.input_shape
    if spec.is_image:
        channels, height, width = shape
        if height < 4 or width < 4:
            raise TaskLoadError(
                f"there is no default model for {height}×{width} images; "
                "write a task module with your own model (see examples/breast_mlp.py)"
            )
        return small_cnn(channels, height, width, spec.n_outputs)
    if len(shape) == 1:
        if spec.kind is TaskKind.SURVIVAL:
            return cox_linear(shape[0])
        return mlp(shape[0], spec.n_outputs)
    raise TaskLoadError(
        f"there is no default model for inputs of shape {shape}; "
        "write a task module with your own model (see examples/breast_mlp.py)"
    )
