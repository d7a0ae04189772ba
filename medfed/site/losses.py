"""Training losses, one per task kind, all taking ``(model output, labels)``.

Labels follow :mod:`medfed.data.base`: class indices for classification, an ``(n, 2)``
``[time, event]`` matrix for survival. The model's output is always ``(n, spec.n_outputs)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medfed.data.base import DataSpec, TaskKind

__all__ = ["BinaryLogitLoss", "CoxPHLoss", "cox_ph_loss", "loss_for"]


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


def loss_for(spec: DataSpec) -> nn.Module:
    """The default loss of a task kind: BCE on one logit, cross-entropy, or Cox."""
    if spec.kind is TaskKind.BINARY:
        return BinaryLogitLoss()
    if spec.kind is TaskKind.MULTICLASS:
        return nn.CrossEntropyLoss()
    if spec.kind is TaskKind.SURVIVAL:
        return CoxPHLoss()
    raise ValueError(f"no default loss for task kind {spec.kind!r}")
