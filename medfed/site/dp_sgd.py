"""Sample-level DP at a site: DP-SGD through Opacus (Abadi et al. 2016).

Every optimizer step draws a Poisson sample of the site's training records (each record
with probability ``q = 1/⌈n/batch_size⌉``), clips each record's gradient to
``max_grad_norm`` and adds Gaussian noise of std ``noise_multiplier × max_grad_norm`` to
their sum: Opacus's ``PrivacyEngine.make_private``. The trained weights — and so the update
that leaves — are then ``(ε, δ)``-DP for each patient, whatever happens to them afterwards.

One :class:`DPSGD` serves one site for a whole job: its Opacus accountant adds up every step
of every round, and :meth:`DPSGD.epsilon` is the site's ε so far (reported after each fit in
``FitResult.report.epsilon``). The accountant is Opacus's RDP accountant (``"rdp"``), or its
PRV accountant when the privacy config asks for ``"pld"`` (both are numerical
privacy-loss-distribution methods).

Randomness. The Poisson sampling and the noise come from generators seeded from the OS's
entropy, not from the round's seed, which the coordinator chose and could replay. Opacus's
``secure_mode`` (a CSPRNG and hardening against floating-point attacks) needs ``torchcsprng``
and is not used; Opacus's warning that says so ("Secure RNG turned off") is silenced
where the engine is made, and only there. DP-SGD runs are not reproducible.

What leaves besides the weights: the number of training records (``num_examples``) and ε.
The training loss and accuracy are computed on the raw records outside the DP mechanism,
so they are not reported under DP-SGD (``None``); divergence is still detected locally.

Limits: the loss must be a mean over examples (BCE, cross-entropy, squared error, and
cross-entropy + Dice computed per image); the Cox partial
likelihood couples the patients of a batch and cannot be clipped per patient, so survival
tasks are refused. Layers must be ones Opacus computes per-example gradients for (no
BatchNorm). FedProx's proximal term does not depend on the data: it is applied as a separate
step after each private step (post-processing).
"""

from __future__ import annotations

import math
import secrets
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from medfed.config import TrainSettings
from medfed.data.base import DataSpec, SiteData, TaskKind
from medfed.errors import ConfigError, TaskLoadError
from medfed.privacy.config import PrivacyConfig
from medfed.records import Metrics
from medfed.site.losses import loss_for
from medfed.site.task import TrainContext

__all__ = [
    "DPSGD",
    "dp_sgd_noise_multiplier",
    "dp_sgd_sample_rate",
    "dp_sgd_steps_per_round",
]

_OPACUS_ACCOUNTANT = {"rdp": "rdp", "pld": "prv"}
_SECURE_RNG_WARNING = r"Secure RNG turned off\."
"""The start of the UserWarning ``PrivacyEngine(secure_mode=False)`` gives (a regex)."""


def dp_sgd_sample_rate(*, num_examples: int, batch_size: int) -> float:
    """Opacus's Poisson sampling rate for a data set: ``1/⌈n/batch_size⌉``."""
    return 1.0 / math.ceil(num_examples / batch_size)


def dp_sgd_steps_per_round(*, num_examples: int, settings: TrainSettings) -> int:
    """Optimizer steps (Gaussian mechanisms) per round: epochs × ⌈n/batch_size⌉."""
    return settings.local_epochs * math.ceil(num_examples / settings.batch_size)


def dp_sgd_noise_multiplier(
    privacy: PrivacyConfig,
    *,
    settings: TrainSettings,
    num_examples: int,
    rounds: int | None = None,
) -> float:
    """The noise multiplier σ of DP-SGD at a site: ``privacy.noise_multiplier``, or the σ
    that spends ``privacy.target_epsilon`` over ``rounds`` rounds of this site's own steps
    (its number of records, batch size and epochs); ``rounds`` is then needed."""
    if privacy.dp != "sample":
        raise ConfigError(f"DP-SGD needs privacy.dp = 'sample', got {privacy.dp!r}")
    if privacy.noise_multiplier is not None:
        return float(privacy.noise_multiplier)
    if rounds is None:
        raise ConfigError(
            "DP-SGD with privacy.target_epsilon needs the number of rounds to "
            "calibrate the noise; set privacy.noise_multiplier instead"
        )
    if num_examples < 1:
        raise ConfigError("DP-SGD needs at least one training record at the site")
    from medfed.privacy.accounting import noise_for_epsilon

    assert privacy.target_epsilon is not None
    return noise_for_epsilon(
        target_epsilon=privacy.target_epsilon,
        delta=privacy.delta,
        rounds=rounds * dp_sgd_steps_per_round(num_examples=num_examples, settings=settings),
        sample_rate=dp_sgd_sample_rate(num_examples=num_examples, batch_size=settings.batch_size),
        accountant=privacy.accountant,
    )


def _os_generator(device: torch.device | None = None) -> torch.Generator:
    return torch.Generator(device=device or "cpu").manual_seed(secrets.randbits(63))


class DPSGD:
    """DP-SGD training for one site, across all the rounds of one job.

    Use :meth:`train` as the task's train function (``TorchSiteApp`` does when the run's
    privacy config says ``dp = "sample"``).
    """

    def __init__(
        self,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        delta: float,
        accountant: str = "rdp",
    ) -> None:
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise ConfigError(f"DP-SGD needs a positive noise multiplier, got {noise_multiplier}")
        if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise ConfigError(f"DP-SGD needs a positive clip norm, got {max_grad_norm}")
        if not 0 < delta < 1:
            raise ConfigError(f"DP-SGD needs delta in (0, 1), got {delta}")
        if accountant not in _OPACUS_ACCOUNTANT:
            raise ConfigError(f"the accountant must be 'rdp' or 'pld', got {accountant!r}")
        from opacus import PrivacyEngine

        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)
        self.delta = float(delta)
        with warnings.catch_warnings():  # said in the module's docs, not to every user
            warnings.filterwarnings("ignore", message=_SECURE_RNG_WARNING, category=UserWarning)
            self.engine = PrivacyEngine(accountant=_OPACUS_ACCOUNTANT[accountant])
        self._data: SiteData | None = None
        self._dataset: TensorDataset | None = None

    def __repr__(self) -> str:
        return (
            f"DPSGD(noise_multiplier={self.noise_multiplier:g}, "
            f"max_grad_norm={self.max_grad_norm:g}, steps={self.steps}, "
            f"epsilon={self.epsilon():.3g} at delta={self.delta:g})"
        )

    @classmethod
    def from_config(
        cls,
        privacy: PrivacyConfig,
        *,
        settings: TrainSettings,
        num_examples: int,
        rounds: int | None = None,
    ) -> DPSGD:
        """The DP-SGD of a run's privacy config at a site with ``num_examples`` records.

        With ``target_epsilon`` the noise is calibrated for ``rounds`` rounds of this site's
        steps (so each site spends the target over the whole run); ``rounds`` is then needed.
        """
        sigma = dp_sgd_noise_multiplier(
            privacy, settings=settings, num_examples=num_examples, rounds=rounds
        )
        return cls(
            noise_multiplier=sigma,
            max_grad_norm=privacy.clip_norm,
            delta=privacy.delta,
            accountant=privacy.accountant,
        )

    @property
    def steps(self) -> int:
        """Private optimizer steps taken so far (all rounds)."""
        return sum(int(h[2]) for h in self.engine.accountant.history)

    def history(self) -> npt.NDArray[np.float64]:
        """The accountant's history, one ``(noise multiplier, sample rate, steps)`` row per
        stretch of identical steps: what a site keeps to go on accounting after a restart."""
        rows = [[float(s), float(q), float(n)] for s, q, n in self.engine.accountant.history]
        return np.array(rows, dtype=np.float64).reshape(-1, 3)

    def restore(self, history: npt.NDArray[Any]) -> None:
        """Go on from a :meth:`history` saved earlier (a restarted site spends on from there)."""
        rows = np.asarray(history, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != 3 or not np.isfinite(rows).all():
            raise ValueError("a DP-SGD history is a finite array of (sigma, rate, steps) rows")
        if (rows[:, 2] < 0).any() or (rows[:, 2] != np.round(rows[:, 2])).any():
            raise ValueError("a DP-SGD history counts whole, non-negative steps")
        self.engine.accountant.history = [(float(s), float(q), int(n)) for s, q, n in rows]

    def epsilon(self) -> float:
        """The site's ε at :attr:`delta` after every step so far (0.0 before the first)."""
        if not self.engine.accountant.history:
            return 0.0
        return float(self.engine.get_epsilon(self.delta))

    def check_model(self, model: nn.Module, *, spec: DataSpec | None = None) -> None:
        """Raise when DP-SGD cannot train ``model`` (on data of ``spec``) privately:
        :class:`TaskLoadError` for layers Opacus cannot handle, :class:`ConfigError` for
        survival data."""
        from opacus.validators import ModuleValidator

        if spec is not None:
            _check_kind(spec)

        was_training = model.training
        model.train()
        try:
            problems = ModuleValidator.validate(model, strict=False)
        finally:
            model.train(was_training)
        if problems:
            raise TaskLoadError(
                f"DP-SGD cannot train this model: {problems[0]}; replace the layer "
                "(for example BatchNorm by GroupNorm) or use privacy.dp = 'client'"
            )

    def _dataset_for(self, data: SiteData, dtype: torch.dtype, kind: TaskKind) -> TensorDataset:
        from medfed.site.torch_app import label_dtype

        if self._data is None:
            x = torch.as_tensor(np.array(data.x_train), dtype=dtype)
            y = torch.as_tensor(np.array(data.y_train), dtype=label_dtype(kind))
            self._data, self._dataset = data, TensorDataset(x, y)
        elif self._data is not data:
            raise ValueError(
                "a DPSGD accounts for one site's data; build one DPSGD per site and job"
            )
        assert self._dataset is not None
        return self._dataset

    def train(self, model: nn.Module, data: SiteData, ctx: TrainContext) -> Metrics:
        """Train ``model`` in place for ``ctx.settings.local_epochs`` epochs with DP-SGD.

        A :data:`~medfed.site.task.TrainFn`; the site's ε so far is :meth:`epsilon`.
        """
        from medfed.site.torch_app import make_optimizer

        spec, settings = ctx.spec, ctx.settings
        _check_kind(spec)
        n = data.num_train
        if n == 0:
            return Metrics(num_examples=0)
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        dataset = self._dataset_for(data, dtype, spec.kind)
        loader = DataLoader(dataset, batch_size=settings.batch_size, generator=_os_generator())
        optimizer = make_optimizer(model, settings)
        mu = ctx.round_settings.proximal_mu
        anchor = [p.detach().clone() for p in model.parameters()] if mu > 0 else []
        hooks, dp_optimizer, dp_loader = self.engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            poisson_sampling=True,
            noise_generator=_os_generator(ctx.device),
            wrap_model=False,
        )
        loss_fn = loss_for(spec)
        try:
            model.train()
            for _ in range(settings.local_epochs):
                for xb, yb in dp_loader:
                    self._step(model, dp_optimizer, loss_fn, xb.to(ctx.device), yb.to(ctx.device))
                    if mu > 0:  # FedProx: (μ/2)·‖w − w_received‖², no data involved
                        with torch.no_grad():
                            for p, a in zip(model.parameters(), anchor, strict=True):
                                p.sub_(p - a, alpha=settings.learning_rate * mu)
        finally:
            hooks.cleanup()
        _check_finite(model, ctx.round)
        return Metrics(num_examples=n)

    @staticmethod
    def _step(model: nn.Module, optimizer: Any, loss_fn: nn.Module, xb: Tensor, yb: Tensor) -> None:
        """One private step; an empty Poisson sample still takes it (noise only), as the
        accounting assumes.

        The input is marked as requiring a gradient so that Opacus's full backward hooks fire
        at the first layer's input, as designed (torch warns otherwise).
        """
        optimizer.zero_grad(set_to_none=True)
        if xb.is_floating_point():
            xb = xb.detach().requires_grad_(True)
        out = model(xb)
        loss = loss_fn(out, yb) if len(xb) else (out * 0.0).sum()
        loss.backward()
        optimizer.step()


def _check_kind(spec: DataSpec) -> None:
    if spec.kind is TaskKind.SURVIVAL:
        raise ConfigError(
            "DP-SGD (privacy.dp = 'sample') cannot train survival models: the Cox "
            "likelihood couples the patients of a batch; use privacy.dp = 'client'"
        )


def _check_finite(model: nn.Module, round_: int) -> None:
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise FloatingPointError(
            f"DP-SGD diverged in round {round_} (the weights became non-finite); "
            "lower train.learning_rate or privacy.clip_norm"
        )
