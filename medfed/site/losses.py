"""Training losses, one per task kind, all taking ``(model output, labels)``.

Labels follow :mod:`medfed.data.base`: class indices for classification, an ``(n, 2)``
``[time, event]`` matrix for survival, float targets for regression, integer masks for
segmentation. The model's output is ``(n, *spec.output_shape)``: ``(n, spec.n_outputs)``, or
``(n, n_classes, *spatial)`` logits for segmentation.

Every loss except Cox is a mean over examples of a per-example loss, which is what DP-SGD's
per-example clipping needs (:mod:`medfed.site.dp_sgd`); that is why the Dice term below is
computed per image and averaged, not over the batch as one big image.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medfed.data.base import DataSpec, TaskKind

__all__ = [
    "BinaryLogitLoss",
    "CoxPHLoss",
    "DiceCELoss",
    "ScaledMSELoss",
    "cox_ph_loss",
    "loss_for",
    "soft_dice_loss",
]


def cox_ph_loss(risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    r"""Negative Cox partial log-likelihood, averaged over the observed events.

    With risk scores :math:`\eta_i` (the model's output, a log hazard ratio), times
    :math:`t_i` and event indicators :math:`\delta_i` (Cox 1972; Breslow 1974 for ties):

    .. math::

        L = -\frac{1}{\sum_i \delta_i} \sum_{i:\,\delta_i = 1}
            \Big( \eta_i - \log \sum_{j:\, t_j \ge t_i} e^{\eta_j} \Big)

    Breslow's handling of tied times: every patient whose time equals :math:`t_i` is in the
    risk set of :math:`t_i`, and tied events each contribute a term with that same risk set.
    The log-sum over the risk set is a reverse cumulative ``logcumsumexp``, so large scores
    do not overflow. ``risk`` may be ``(n,)`` or ``(n, 1)``.

    With no event there is nothing to fit: the result is a zero that still depends on
    ``risk`` (so ``backward()`` works and gives zero gradients). Training loops should skip
    such batches instead of taking a step (:func:`medfed.site.torch_app.default_train` does).

    >>> float(cox_ph_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0]),
    ...                   torch.tensor([1, 0])))  # log 2: one event, two at risk
    0.6931471824645996
    """
    risk = risk.reshape(-1)
    time = time.reshape(-1)
    event = event.reshape(-1).to(torch.bool)
    if not risk.shape == time.shape == event.shape:
        raise ValueError(
            f"risk {tuple(risk.shape)}, time {tuple(time.shape)} and event "
            f"{tuple(event.shape)} must have the same length"
        )
    n_events = int(event.sum())
    if n_events == 0:
        return (risk * 0.0).sum()
    order = torch.argsort(time, descending=True, stable=True)
    r, t, e = risk[order], time[order], event[order]
    log_cumulative = torch.logcumsumexp(r, dim=0)
    # For each position, the last position with the same time: with times in descending
    # order, the risk set {j: t_j >= t_i} is the prefix ending there (Breslow).
    neg_t = -t.contiguous()
    last_tied = torch.searchsorted(neg_t, neg_t, right=True) - 1
    log_risk_set = log_cumulative[last_tied]
    return -(r - log_risk_set)[e].sum() / n_events


class CoxPHLoss(nn.Module):
    """:func:`cox_ph_loss` for a model output ``(n, 1)`` and survival labels ``(n, 2)``."""

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return cox_ph_loss(output, target[:, 0], target[:, 1])


class BinaryLogitLoss(nn.Module):
    """Binary cross-entropy on one logit per example, with integer 0/1 labels."""

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return nn.functional.binary_cross_entropy_with_logits(
            output.reshape(-1), target.reshape(-1).to(output.dtype)
        )


class ScaledMSELoss(nn.Module):
    """Squared error in units of ``scale`` (a regression target's spread, see
    :class:`~medfed.data.base.DataSpec`): ``mean(((output - target) / scale)²)``.

    Dividing by the spread keeps gradients of the same size for a target in days and one in
    hundreds of points, so one learning rate serves both; the minimiser is the same.

    >>> float(ScaledMSELoss(2.0)(torch.tensor([[3.0], [1.0]]), torch.tensor([1.0, 1.0])))
    0.5
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.scale = float(scale)

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        error = (output.reshape(-1) - target.reshape(-1).to(output.dtype)) / self.scale
        return (error**2).mean()


def soft_dice_loss(logits: Tensor, target: Tensor, *, smooth: float = 1.0) -> Tensor:
    r"""``1 − soft Dice`` per image, averaged over the foreground classes and the images.

    With softmax probabilities :math:`p_{ck}` and one-hot truth :math:`g_{ck}` of image
    :math:`i`, class :math:`c ≥ 1` and pixel :math:`k` (Milletari et al. 2016):

    .. math:: 1 - \frac{2 \sum_k p_{ck} g_{ck} + s}{\sum_k p_{ck} + \sum_k g_{ck} + s}

    The smoothing :math:`s` makes an image without the class score 1 when the model predicts
    none of it, and keeps the gradient finite. ``logits`` is ``(n, classes, *spatial)``,
    ``target`` ``(n, *spatial)`` class indices.
    """
    n, classes = logits.shape[0], logits.shape[1]
    probs = torch.softmax(logits, dim=1).reshape(n, classes, -1)[:, 1:]
    onehot = nn.functional.one_hot(target.reshape(n, -1), classes).to(probs.dtype)
    truth = onehot.permute(0, 2, 1)[:, 1:]
    overlap = (probs * truth).sum(dim=2)
    total = probs.sum(dim=2) + truth.sum(dim=2)
    return (1.0 - (2.0 * overlap + smooth) / (total + smooth)).mean()


class DiceCELoss(nn.Module):
    """Cross-entropy per pixel plus :func:`soft_dice_loss`, the usual pair for segmentation.

    Cross-entropy alone is dominated by the background when the tumour is a few per cent of
    the pixels (a model predicting all background already has a low loss); the Dice term
    scores the overlap with the tumour itself. Both are means over images.
    """

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        target = target.to(torch.int64)
        return nn.functional.cross_entropy(output, target) + soft_dice_loss(output, target)


def loss_for(spec: DataSpec) -> nn.Module:
    """The default loss of a task kind: BCE on one logit, cross-entropy, Cox, squared error
    in units of the target's spread (regression), or cross-entropy + Dice (segmentation)."""
    if spec.kind is TaskKind.BINARY:
        return BinaryLogitLoss()
    if spec.kind is TaskKind.MULTICLASS:
        return nn.CrossEntropyLoss()
    if spec.kind is TaskKind.SURVIVAL:
        return CoxPHLoss()
    if spec.kind is TaskKind.REGRESSION:
        return ScaledMSELoss(spec.target_scale)
    if spec.kind is TaskKind.SEGMENTATION:
        return DiceCELoss()
    raise ValueError(f"no default loss for task kind {spec.kind!r}")
