"""Membership inference audit: can an attacker tell whether a patient was in the training set?

The attack is the loss threshold of Yeom et al. (2018): a model fits the records it was
trained on better than others, so the score of a record is its negative loss under the
model, and the attacker says "member" above a threshold. Its AUROC over all thresholds
(members = the training records, non-members = records drawn from the same pool that the
model never saw) measures how well it works: 0.5 is chance, 1.0 tells every patient apart.

Two models are trained on the same records with the same optimizer, epochs and batch size:

- **without DP** — medfed's default training loop, long enough to overfit (an MLP with 256
  hidden units, Adam, 50 epochs), so that a memorising model shows what the attack can do;
- **with DP** — DP-SGD through Opacus (:class:`medfed.site.dp_sgd.DPSGD`: per-record clipping
  to ``max_grad_norm`` and Gaussian noise of std ``noise_multiplier · max_grad_norm`` on each
  step's sum); its ``(ε, δ)`` comes from Opacus's RDP accountant. DP-SGD draws its sampling
  and noise from the OS's entropy, so that run is not bit-reproducible.

A model **leaks** when the attack's AUROC is at least :data:`MEMBERSHIP_AUROC_THRESHOLD`
(0.55: clearly better than chance) and its 95 % interval (Hanley & McNeil 1982) lies above
0.5. Verdict as in :mod:`medfed.audit.report`: inconclusive when the model without DP does
not leak (nothing to protect against on these data), fail when the DP model still leaks.

Measured (``synthetic-ehr``, defaults, seed 0): AUROC 0.567 (95 %: 0.542–0.592) without DP,
0.51 (0.48–0.53) with DP-SGD at ε ≈ 6.0 (δ = 1e-5); the DP model also ranks unseen patients
better (its AUROC as a classifier 0.59 against 0.56), since it cannot overfit. The attack is
weak on these data even against a memorising model: members and non-members that the model
predicts confidently have similar losses. On ``breast-cancer`` it does not beat chance at
all (AUROC ≈ 0.51: the classes are almost separable, so unseen patients fit as well as the
training ones): inconclusive.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from medfed.audit._threads import one_torch_thread
from medfed.audit.report import MembershipReport, MembershipResult
from medfed.errors import ConfigError
from medfed.math.metrics import auroc

if TYPE_CHECKING:
    from torch import nn

    from medfed.data.base import DataSpec, SiteData

__all__ = [
    "MEMBERSHIP_AUROC_THRESHOLD",
    "MEMBERSHIP_DATA",
    "MEMBERSHIP_STEPS",
    "MembershipConfig",
    "auroc_interval",
    "loss_threshold_auroc",
    "per_example_loss",
    "run_membership_audit",
    "split_members",
]

MEMBERSHIP_AUROC_THRESHOLD = 0.55
"""The attack counts as working when its AUROC is ≥ this and its 95 % interval excludes 0.5."""
MEMBERSHIP_DATA = ("synthetic-ehr", "breast-cancer")
MEMBERSHIP_STEPS = 2
"""How many times :func:`run_membership_audit` reports progress (one per model)."""

THRESHOLDS = (
    f"a model leaks membership when the loss-threshold attack's AUROC is >= "
    f"{MEMBERSHIP_AUROC_THRESHOLD} and its 95% interval lies above 0.5 (0.5 = chance)"
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class MembershipConfig:
    """One membership audit: ``members`` training records and as many non-members, drawn at
    random from all the data set's records (:func:`split_members`)."""

    data: str = "synthetic-ehr"
    members: int = 1000
    epochs: int = 50
    batch_size: int = 16
    hidden: int = 256
    learning_rate: float = 0.003
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.data not in MEMBERSHIP_DATA:
            raise ConfigError(
                f"--data must be one of {', '.join(MEMBERSHIP_DATA)} for the membership audit "
                f"(tabular classification), not {self.data!r}"
            )
        checks = [
            (self.members >= 20, f"--members must be at least 20, not {self.members}"),
            (
                1 <= self.epochs <= 10_000,
                f"--epochs must be between 1 and 10000, not {self.epochs}",
            ),
            (self.batch_size >= 1, f"--batch-size must be at least 1, not {self.batch_size}"),
            (1 <= self.hidden <= 4096, f"the hidden width must be 1–4096, not {self.hidden}"),
            (0 < self.learning_rate <= 10, "the learning rate must be in (0, 10]"),
            (
                0 < self.noise_multiplier < math.inf,
                f"--noise-multiplier must be positive for DP-SGD, not {self.noise_multiplier}",
            ),
            (0 < self.max_grad_norm < math.inf, "the clip norm must be positive"),
            (0 < self.delta < 1, f"delta must be in (0, 1), not {self.delta}"),
            (self.seed >= 0, f"--seed must be 0 or more, not {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def per_example_loss(
    model: nn.Module, x: npt.NDArray[Any], y: npt.NDArray[Any], spec: DataSpec
) -> npt.NDArray[np.float64]:
    """The training loss of each record (BCE on one logit, or cross-entropy), in eval mode."""
    import torch
    from torch.nn import functional

    from medfed.data.base import TaskKind

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(np.asarray(x), dtype=torch.float32))
            target = torch.as_tensor(np.asarray(y), dtype=torch.int64)
            if spec.kind is TaskKind.BINARY:
                loss = functional.binary_cross_entropy_with_logits(
                    out.reshape(-1), target.to(out.dtype), reduction="none"
                )
            elif spec.kind is TaskKind.MULTICLASS:
                loss = functional.cross_entropy(out, target, reduction="none")
            else:
                raise ValueError(f"no per-example loss for {spec.kind.value} data")
    finally:
        model.train(was_training)
    return loss.to(torch.float64).numpy()


def auroc_interval(*, area: float, positives: int, negatives: int) -> tuple[float, float]:
    """95 % interval of an AUROC from its Hanley & McNeil (1982) standard error."""
    q1 = area / (2 - area)
    q2 = 2 * area**2 / (1 + area)
    var = (
        area * (1 - area) + (positives - 1) * (q1 - area**2) + (negatives - 1) * (q2 - area**2)
    ) / (positives * negatives)
    half = 1.96 * math.sqrt(max(var, 0.0))
    return max(0.0, area - half), min(1.0, area + half)


def loss_threshold_auroc(*, member_loss: npt.ArrayLike, nonmember_loss: npt.ArrayLike) -> float:
    """AUROC of the score −loss for members (positives) against non-members."""
    m = np.asarray(member_loss, dtype=np.float64).reshape(-1)
    n = np.asarray(nonmember_loss, dtype=np.float64).reshape(-1)
    labels = np.concatenate([np.ones(m.size, np.int64), np.zeros(n.size, np.int64)])
    value = auroc(labels=labels, scores=-np.concatenate([m, n]))
    if value is None:
        raise ValueError("the membership attack needs at least one member and one non-member")
    return value


def _train(
    config: MembershipConfig, spec: DataSpec, members: SiteData, *, private: bool
) -> tuple[nn.Module, float | None]:
    import torch

    from medfed.config import TrainSettings
    from medfed.site.models import mlp
    from medfed.site.task import TrainContext
    from medfed.site.torch_app import default_train

    settings = TrainSettings(
        local_epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        optimizer="adam",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = mlp(spec.input_shape[0], spec.n_outputs, hidden=config.hidden)
        ctx = TrainContext(
            settings=settings,
            spec=spec,
            seed=config.seed,
            round=1,
            config={},
            device=torch.device("cpu"),
            generator=torch.Generator().manual_seed(config.seed),
        )
        model.train()
        if not private:
            default_train(model, members, ctx)
            return model, None
        from medfed.site.dp_sgd import DPSGD

        with warnings.catch_warnings():
            # Opacus asks for its secure_mode before *production* training; an audit only
            # measures, and medfed.site.dp_sgd documents why it does not use secure_mode.
            warnings.filterwarnings("ignore", "Secure RNG turned off", UserWarning)
            dp = DPSGD(
                noise_multiplier=config.noise_multiplier,
                max_grad_norm=config.max_grad_norm,
                delta=config.delta,
            )
            dp.train(model, members, ctx)
    return model, dp.epsilon()


def _result(
    name: str,
    description: str,
    model: nn.Module,
    members: SiteData,
    nonmembers: SiteData,
    spec: DataSpec,
    *,
    epsilon: float | None,
    delta: float | None,
    seconds: float,
) -> MembershipResult:
    import torch

    member_loss = per_example_loss(model, members.x_train, members.y_train, spec)
    nonmember_loss = per_example_loss(model, nonmembers.x_test, nonmembers.y_test, spec)
    area = loss_threshold_auroc(member_loss=member_loss, nonmember_loss=nonmember_loss)
    low, high = auroc_interval(area=area, positives=member_loss.size, negatives=nonmember_loss.size)
    with torch.no_grad():
        model.eval()
        out = model(torch.as_tensor(nonmembers.x_test, dtype=torch.float32))
    scores = out.reshape(-1) if spec.n_outputs == 1 else torch.softmax(out, dim=1)
    return MembershipResult(
        name=name,
        description=description,
        auroc=area,
        auroc_low=low,
        auroc_high=high,
        threshold=MEMBERSHIP_AUROC_THRESHOLD,
        member_loss=float(member_loss.mean()),
        nonmember_loss=float(nonmember_loss.mean()),
        test_auroc=auroc(labels=nonmembers.y_test, scores=scores.to(torch.float64).numpy()),
        epsilon=epsilon,
        delta=delta,
        seconds=seconds,
    )


def split_members(pooled: SiteData, *, size: int, seed: int) -> tuple[SiteData, SiteData]:
    """Members (``x_train``) and as many non-members (``x_test``), drawn at random from all of
    a data set's records (its training and held-out splits together), so that both come from
    the same distribution; at most half the records each."""
    from medfed.data.base import SiteData

    x = np.concatenate([pooled.x_train, pooled.x_test])
    y = np.concatenate([pooled.y_train, pooled.y_test])
    m = min(size, len(x) // 2)
    order = np.random.default_rng([seed, 0x3E3]).permutation(len(x))
    inside, outside = np.sort(order[:m]), np.sort(order[m : 2 * m])
    members = SiteData("members", x[inside], y[inside], x[:0], y[:0])
    nonmembers = SiteData("non-members", x[:0], y[:0], x[outside], y[outside])
    return members, nonmembers


def run_membership_audit(
    config: MembershipConfig, *, progress: Progress | None = None
) -> MembershipReport:
    """Train both models, attack both, and report (see the module docstring)."""
    from medfed.data import load_dataset

    dataset = load_dataset(config.data, seed=config.seed)
    members, nonmembers = split_members(dataset.pooled(), size=config.members, seed=config.seed)
    spec = dataset.spec
    what = (
        f"{members.num_train} members, {nonmembers.num_test} non-members, "
        f"MLP({config.hidden}), Adam, {config.epochs} epochs of batches of {config.batch_size}"
    )
    results = []
    for private in (False, True):
        if progress is not None:
            progress("training with DP-SGD" if private else "training without DP")
        start = time.perf_counter()
        with one_torch_thread():
            model, epsilon = _train(config, spec, members, private=private)
        seconds = time.perf_counter() - start
        description = (
            f"DP-SGD (noise multiplier {config.noise_multiplier:g}, clip "
            f"{config.max_grad_norm:g}): {what}"
            if private
            else f"no DP: {what}"
        )
        results.append(
            _result(
                "with-dp" if private else "without-dp",
                description,
                model,
                members,
                nonmembers,
                spec,
                epsilon=epsilon,
                delta=config.delta if private else None,
                seconds=seconds,
            )
        )
    return MembershipReport(
        config=asdict(config), without_dp=results[0], with_dp=results[1], thresholds=THRESHOLDS
    )
