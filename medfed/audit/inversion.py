"""Gradient inversion: rebuilding a site's training records from the update it sends.

Two attacks, both by an honest-but-curious coordinator that knows the global model it sent.

**Analytic, first fully connected layer** (:func:`analytic_first_layer`). For a first layer
``z = W x + b``, one example's gradient is ``dL/dW_i = (dL/dz_i) x`` and ``dL/db_i = dL/dz_i``,
so ``x = (dL/dW_i) / (dL/db_i)`` for any row ``i`` with ``dL/db_i ≠ 0``. One local SGD step
sends ``−lr · gradient``, and the ratio is unchanged (as it is by clipping: scaling an update
hides nothing). For a batch, row ``i``'s gradient sums the examples that activate it; a row
that only one example activates (ReLU units switched off for the others) still gives that
example exactly. The attack returns the ratio of every row whose bias change is not
negligible; the audit matches each true record to its best candidate
(:func:`medfed.audit.similarity.match_records`).

**Optimisation-based** (:func:`invert_gradients`), in the style of "inverting gradients"
(Geiping et al. 2020) with label inference as in iDLG (Zhao et al. 2020): dummy inputs are
optimised so that the gradient they produce points the same way as the update (cosine
distance over all parameters), plus a total-variation prior that favours smooth images;
Adam on the sign of the gradient with a step-decayed learning rate, for a bounded number of
iterations. Labels are inferred from the last layer's bias for a single example
(:func:`infer_single_label`) or given.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from medfed.records import Params

__all__ = [
    "analytic_first_layer",
    "first_linear_layer",
    "infer_single_label",
    "invert_gradients",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


def first_linear_layer(update: Params) -> tuple[str, str]:
    """Names of the first weight matrix and the bias that follows it (``(out, in)``, ``(out,)``).

    Raises ``ValueError`` when the update does not start with a biased linear layer.
    """
    names = list(update)
    for name, following in itertools.pairwise(names):
        w, b = update[name], update[following]
        if w.ndim == 2 and b.ndim == 1 and b.shape[0] == w.shape[0]:
            return name, following
    raise ValueError(
        "the update has no linear layer with a bias (a (out, in) weight followed by an (out,) "
        "bias): the analytic attack needs one"
    )


def analytic_first_layer(
    update: Params,
    *,
    weight: str | None = None,
    bias: str | None = None,
    relative_tolerance: float = 1e-4,
) -> npt.NDArray[np.float64]:
    """Candidate inputs ``(k, n_features)``: ``ΔW_i / Δb_i`` for each row whose bias change
    ``|Δb_i|`` exceeds ``relative_tolerance`` times the largest one.

    ``weight`` and ``bias`` default to :func:`first_linear_layer`. Rows with no bias change at
    all (no example activated them) give no candidate; an all-zero update gives none.
    """
    if weight is None or bias is None:
        weight, bias = first_linear_layer(update)
    w = np.asarray(update[weight], dtype=np.float64)
    b = np.asarray(update[bias], dtype=np.float64)
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise ValueError(f"{weight!r} {w.shape} and {bias!r} {b.shape} are not a linear layer")
    magnitude = np.abs(b)
    top = float(magnitude.max(initial=0.0))
    if not np.isfinite(top) or top == 0.0:
        return np.zeros((0, w.shape[1]))
    rows = magnitude > relative_tolerance * top
    return np.asarray(w[rows] / b[rows, None], dtype=np.float64)


def infer_single_label(update: Params, *, bias: str | None = None) -> int:
    """The label of a one-example update, from the sign of the last layer's bias change.

    One logit (binary cross-entropy): the bias gradient is ``σ(z) − y``, so a bias that went
    up (a negative gradient) means ``y = 1``. Several logits (cross-entropy): the gradient is
    ``softmax(z) − onehot(y)``, negative only at the label, so the label is the bias that went
    up most. ``bias`` defaults to the update's last 1-D tensor.
    """
    if bias is None:
        vectors = [name for name, value in update.items() if value.ndim == 1]
        if not vectors:
            raise ValueError("the update has no bias vector to infer a label from")
        bias = vectors[-1]
    delta = np.asarray(update[bias], dtype=np.float64)
    if delta.size == 1:
        return int(delta[0] > 0)
    return int(np.argmax(delta))


def _gradient_direction(model: nn.Module, update: Params) -> list[Tensor]:
    """The update as a gradient (``−update``) in the order of ``model.named_parameters()``."""
    out = []
    for name, param in model.named_parameters():
        if name not in update:
            raise ValueError(f"the update has no tensor for the model's parameter {name!r}")
        delta = torch.as_tensor(np.asarray(update[name]), dtype=param.dtype)
        if delta.shape != param.shape:
            raise ValueError(f"{name!r}: update {tuple(delta.shape)} vs model {param.shape}")
        out.append(-delta)
    return out


def _cosine_distance(grads: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
    dot = torch.stack([(g * t).sum() for g, t in zip(grads, target, strict=True)]).sum()
    g_norm = torch.stack([(g * g).sum() for g in grads]).sum().sqrt()
    t_norm = torch.stack([(t * t).sum() for t in target]).sum().sqrt()
    return 1.0 - dot / (g_norm * t_norm + 1e-12)


def _total_variation(images: Tensor) -> Tensor:
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    return dy + dx


def invert_gradients(
    model: nn.Module,
    update: Params,
    *,
    labels: npt.ArrayLike,
    loss_fn: LossFn,
    input_shape: tuple[int, ...],
    iterations: int = 300,
    learning_rate: float = 0.1,
    tv_weight: float = 3e-2,
    init_range: tuple[float, float] = (0.0, 1.0),
    bounds: tuple[float, float] | None = None,
    seed: int = 0,
) -> npt.NDArray[np.float32]:
    """Images whose gradient matches ``update``: ``(len(labels), *input_shape)``.

    ``model`` must hold the global params the update was computed from (the coordinator
    knows them); it runs in training mode, as the site's did, and its state (batch-norm
    statistics included) is restored afterwards. One dummy per label, initialised uniformly in
    ``init_range`` (the intensity range of the modality, not of the true images) and, with
    ``bounds``, kept inside them after every step. The objective is
    ``1 − cos(∇θ L(dummies, labels), −update) + tv_weight · TV(dummies)``, TV being the mean
    absolute difference of neighbouring pixels; the learning rate drops tenfold at 60 % and
    85 % of ``iterations``. The defaults were tuned on the synthetic 28×28 scans and the
    default small CNN: one image from a raw update comes back at 21–32 dB PSNR (seeds 0–7).
    Cost: one double-backward pass per iteration (about 2 ms for one 28×28 image).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    target = [t.detach() for t in _gradient_direction(model, update)]
    params = [p for _, p in model.named_parameters()]
    y = torch.as_tensor(np.asarray(labels))
    generator = torch.Generator().manual_seed(seed)
    low, high = init_range
    dummy = torch.rand((len(y), *input_shape), generator=generator)
    dummy = (low + (high - low) * dummy).requires_grad_(True)
    optimizer = torch.optim.Adam([dummy], lr=learning_rate)
    milestones = [int(iterations * 0.6), int(iterations * 0.85)]
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.train()
    try:
        for _ in range(iterations):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(dummy), y)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            objective = _cosine_distance(grads, target) + tv_weight * _total_variation(dummy)
            (dummy_grad,) = torch.autograd.grad(objective, [dummy])
            dummy.grad = dummy_grad.sign()
            optimizer.step()
            schedule.step()
            if bounds is not None:
                with torch.no_grad():
                    dummy.clamp_(*bounds)
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    return dummy.detach().numpy().astype(np.float32)
