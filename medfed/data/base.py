"""What a site's data looks like to the rest of medfed.

Labels follow one convention per task kind:

- ``binary`` / ``multiclass``: ``y`` is an int64 vector of class indices ``0..k-1``;
- ``survival``: ``y`` is a float64 ``(n, 2)`` matrix whose columns are ``time`` and ``event``
  (1 = event observed, 0 = censored);
- ``regression``: ``y`` is a float32 vector of targets (e.g. length of stay in days);
- ``segmentation``: ``y`` is an int64 mask of class indices ``0..k-1`` per pixel (voxel),
  ``(n, height, width)`` or ``(n, depth, height, width)``; 0 is background.

Features are float32: ``(n, n_features)`` for tabular data, ``(n, channels, height, width)``
for images and ``(n, channels, depth, height, width)`` for volumes.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["DataSpec", "FederatedDataset", "SiteData", "TaskKind"]


class TaskKind(enum.StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    SURVIVAL = "survival"
    REGRESSION = "regression"
    SEGMENTATION = "segmentation"


@dataclass(frozen=True)
class DataSpec:
    """The shape of a federation's data: every site shares it (the common protocol).

    ``n_classes`` counts the classes of classification and segmentation (background
    included). ``target_center`` and ``target_scale`` are a regression target's typical value
    and spread, fixed for the consortium like a feature's standardisation: the default
    regression model predicts ``target_center + target_scale * net(x)`` and the default loss
    is the squared error in units of ``target_scale``, so training sees targets of size about
    1 whatever their unit, while predictions, MAE and RMSE stay in the target's own unit
    (days, points). They are ignored by the other kinds.
    """

    kind: TaskKind
    input_shape: tuple[int, ...]
    n_classes: int = 2
    feature_names: tuple[str, ...] = ()
    target_center: float = 0.0
    target_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_center) and math.isfinite(self.target_scale)):
            raise ValueError("target_center and target_scale must be finite")
        if self.target_scale <= 0:
            raise ValueError(f"target_scale must be positive, got {self.target_scale}")
        if self.kind is TaskKind.SEGMENTATION and len(self.input_shape) not in (3, 4):
            raise ValueError(
                "segmentation inputs are (channels, height, width) or (channels, depth, "
                f"height, width), got {self.input_shape}"
            )

    @property
    def n_outputs(self) -> int:
        """Channels of the model's output: 1 logit (binary), k logits (multiclass), 1 risk
        score (survival), 1 prediction (regression), k class logits per pixel (segmentation).
        """
        if self.kind in (TaskKind.MULTICLASS, TaskKind.SEGMENTATION):
            return self.n_classes
        return 1

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The model's output for one example: ``(n_outputs,)``, or ``(n_classes, *spatial)``
        for segmentation (a logit per class and pixel)."""
        if self.kind is TaskKind.SEGMENTATION:
            return (self.n_classes, *self.input_shape[1:])
        return (self.n_outputs,)

    @property
    def is_image(self) -> bool:
        """A 2D image input ``(channels, height, width)`` (volumes: :attr:`is_volume`)."""
        return len(self.input_shape) == 3

    @property
    def is_volume(self) -> bool:
        """A 3D volume input ``(channels, depth, height, width)``."""
        return len(self.input_shape) == 4


@dataclass(frozen=True)
class SiteData:
    """One hospital's records, split into training and held-out test patients."""

    name: str
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.generic]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.generic]
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError(f"site {self.name}: features and labels differ in length")

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    @property
    def num_test(self) -> int:
        return len(self.x_test)


@dataclass(frozen=True)
class FederatedDataset:
    """A consortium: the shared spec and each site's data."""

    name: str
    spec: DataSpec
    sites: tuple[SiteData, ...]
    description: str = ""
    source: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: site names must be unique, got {names}")

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]

    def site(self, name: str) -> SiteData:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def pooled(self) -> SiteData:
        """All sites' training records in one place (the centralised baseline's data).

        The test set is the union of the sites' test sets; baselines are still evaluated on
        each site's own test set.
        """
        return SiteData(
            name="pooled",
            x_train=np.concatenate([s.x_train for s in self.sites]),
            y_train=np.concatenate([s.y_train for s in self.sites]),
            x_test=np.concatenate([s.x_test for s in self.sites]),
            y_test=np.concatenate([s.y_test for s in self.sites]),
            description="all sites' training data pooled (centralised baseline)",
        )
