"""A task that writes its own training loop: FedProx's proximal term, by hand.

FedProx (Li et al., 2020, "Federated Optimization in Heterogeneous Networks") adds
(μ/2)·‖w − w_global‖² to each site's loss, which keeps sites with very different data from
drifting far from the global model. μ comes from the round's settings
(``ctx.round_settings.proximal_mu``, sent by the strategy), so the coordinator can change it
without touching the sites.

medfed's default loop already honours ``proximal_mu``; this file shows how a loop of your own
fits into a task, reusing medfed's helpers for batching, the optimizer and the loss::

    medfed simulate --task examples/custom_train.py:task
"""

from __future__ import annotations

import torch
from torch import nn

from medfed.data.base import SiteData, TaskKind
from medfed.records import Metrics
from medfed.site.losses import loss_for
from medfed.site.models import default_model
from medfed.site.task import Task, TrainContext
from medfed.site.torch_app import as_tensor, batch_indices, make_optimizer


def train(model: nn.Module, data: SiteData, ctx: TrainContext) -> Metrics:
    mu = ctx.round_settings.proximal_mu
    # The model arrives holding the global weights: remember them for the proximal term.
    global_weights = [p.detach().clone() for p in model.parameters()]
    x = as_tensor(data.x_train, dtype=torch.float32, device=ctx.device)
    label_dtype = torch.float64 if ctx.spec.kind is TaskKind.SURVIVAL else torch.int64
    y = as_tensor(data.y_train, dtype=label_dtype, device=ctx.device)
    loss_fn = loss_for(ctx.spec)
    optimizer = make_optimizer(model, ctx.settings)

    total, seen = 0.0, 0
    for _ in range(ctx.settings.local_epochs):
        for idx in batch_indices(len(x), ctx.settings.batch_size, generator=ctx.generator):
            xb, yb = x[idx.to(ctx.device)], y[idx.to(ctx.device)]
            if ctx.spec.kind is TaskKind.SURVIVAL and not bool(yb[:, 1].any()):
                continue  # a batch without an event has no partial likelihood
            loss = loss_fn(model(xb), yb)
            proximal = sum(
                ((w - w0) ** 2).sum()
                for w, w0 in zip(model.parameters(), global_weights, strict=True)
            )
            optimizer.zero_grad(set_to_none=True)
            (loss + 0.5 * mu * proximal).backward()
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
    return Metrics(
        num_examples=data.num_train,
        loss=total / seen if seen else None,
        extra={"proximal_mu": mu},
    )


task = Task(model=default_model, train=train, name="fedprox-by-hand")
