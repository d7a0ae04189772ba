"""A segmentation task with MONAI's U-Net and MONAI's Dice metric.

MONAI is the optional extra ``monai`` (``pip install 'medfed[monai]'``). Run it with::

    medfed simulate --data synthetic-segmentation --task examples/monai_unet.py:task
    medfed simulate --data synthetic-segmentation --option volume=true \\
        --task examples/monai_unet.py:task

The model is built for the data's spatial dimensions (2D slices or 3D volumes) from the spec.
Training is medfed's default loop (cross-entropy + soft Dice per image, see
:func:`medfed.site.losses.loss_for`); evaluation wraps medfed's default and adds MONAI's own
mean Dice (``extra["monai_dice"]``), so the two implementations can be compared per site.

Normalisation is MONAI's instance norm, which needs no batch statistics: the model also
trains under DP-SGD (Opacus has per-example gradients for it) and federated averaging does
not mix hospitals' batch statistics. Strides of 2 need sides divisible by 4 here (two
down-sampling steps).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.metrics import DiceMetric
from monai.networks.nets import UNet
from torch import nn

from medfed.data.base import DataSpec, TaskKind
from medfed.records import Metrics
from medfed.site.task import Task
from medfed.site.torch_app import default_evaluate


def build_model(spec: DataSpec) -> nn.Module:
    if spec.kind is not TaskKind.SEGMENTATION:
        raise ValueError(f"this task is for segmentation, not {spec.kind.value} data")
    channels, *spatial = spec.input_shape
    if any(side % 4 for side in spatial):
        raise ValueError(f"this U-Net needs sides divisible by 4, got {spatial}")
    return UNet(
        spatial_dims=len(spatial),
        in_channels=channels,
        out_channels=spec.n_classes,
        channels=(8, 16, 32),
        strides=(2, 2),
        num_res_units=1,
        norm="instance",
    )


def evaluate(model: nn.Module, x: npt.NDArray[Any], y: npt.NDArray[Any], spec: DataSpec) -> Metrics:
    metrics = default_evaluate(model, x, y, spec)
    # MONAI's mean Dice over the foreground classes; images without the class in the truth
    # are left out (ignore_empty), medfed's also leaves out images empty in both
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=True)
    for start in range(0, len(x), 32):
        logits = model(torch.as_tensor(np.asarray(x[start : start + 32])))
        predicted = nn.functional.one_hot(logits.argmax(dim=1), spec.n_classes).movedim(-1, 1)
        truth = nn.functional.one_hot(
            torch.as_tensor(np.asarray(y[start : start + 32])), spec.n_classes
        ).movedim(-1, 1)
        metric(y_pred=predicted, y=truth)
    value = metric.aggregate()
    extra = dict(metrics.extra)
    if torch.isfinite(value).all():
        extra["monai_dice"] = float(value)
    return Metrics(
        num_examples=metrics.num_examples, loss=metrics.loss, dice=metrics.dice, extra=extra
    )


task = Task(model=build_model, evaluate=evaluate, name="monai-unet")
