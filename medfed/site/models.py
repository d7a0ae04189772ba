"""Default models: what a federation trains when the researcher gives no task.

- tabular classification: a small MLP (one hidden layer of 32 ReLU units);
- survival: a Cox model, one linear layer without bias (as FLamby's Fed-TCGA-BRCA baseline;
  a bias would cancel out of the partial likelihood);
- images: a small CNN (two conv blocks and a linear head) that trains in seconds on a CPU;
- regression: the same MLP with one output, rescaled to the target's unit
  (:class:`Rescaled`, from the spec's ``target_center`` and ``target_scale``);
- segmentation: a small U-Net (:mod:`medfed.site.unet`), 2D for images and 3D for volumes.

Each returns ``(batch, *spec.output_shape)``: logits of width ``spec.n_outputs``, a
prediction, or a logit per class and pixel.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from medfed.data.base import DataSpec, TaskKind
from medfed.errors import TaskLoadError
from medfed.site.unet import UNet

__all__ = ["Rescaled", "UNet", "cox_linear", "default_model", "mlp", "small_cnn"]


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


class Rescaled(nn.Module):
    """``center + scale * inner(x)``: a network that works on targets of size about 1,
    predicting in the target's own unit.

    ``center`` and ``scale`` are fixed constants of the consortium's data spec (plain floats,
    not in the ``state_dict``): they are not weights, so they are never averaged, clipped or
    noised.
    """

    def __init__(self, inner: nn.Module, *, center: float, scale: float) -> None:
        super().__init__()
        self.inner = inner
        self.center = float(center)
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x)
        return out * self.scale + self.center

    def extra_repr(self) -> str:
        return f"center={self.center:g}, scale={self.scale:g}"


def _no_default(shape: tuple[int, ...], what: str = "inputs") -> TaskLoadError:
    return TaskLoadError(
        f"there is no default model for {what} of shape {shape}; "
        "write a task module with your own model (see examples/breast_mlp.py)"
    )


def default_model(spec: DataSpec) -> nn.Module:
    """The default model for a data spec, chosen by task kind and input shape."""
    shape = spec.input_shape
    if spec.kind is TaskKind.SEGMENTATION:
        if len(shape) not in (3, 4) or min(shape[1:]) < 4:
            raise _no_default(shape, "segmentation inputs (at least 4 pixels a side)")
        return UNet(dims=len(shape) - 1, in_channels=shape[0], n_classes=spec.n_classes)
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
        if spec.kind is TaskKind.REGRESSION:
            return Rescaled(mlp(shape[0], 1), center=spec.target_center, scale=spec.target_scale)
        return mlp(shape[0], spec.n_outputs)
    raise _no_default(shape)
