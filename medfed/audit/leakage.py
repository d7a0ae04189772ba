"""The leakage audit: do the protections stop a coordinator from rebuilding patient records?

The scenario: ``sites`` hospitals each take one local SGD step (the real site app,
:class:`~medfed.site.torch_app.TorchSiteApp`) on ``batch_size`` records from the same global
model (the default model of the task, as medfed trains it). Tabular: Wisconsin breast cancer
(real records) and the default MLP; imaging: the synthetic scans (28×28) and the default
small CNN. The attacker is the coordinator, which knows the global model. It sees, per
scenario:

- ``raw`` — one site's update as trained, unprotected;
- ``secagg-only`` — the sum of all sites' raw updates: secure aggregation without DP (what
  :mod:`medfed.secagg` reveals; computed here directly as the sum);
- ``protected`` — what the configured protection reveals. Client-level DP clips each update
  to L2 norm ``clip`` and adds Gaussian noise so that the released sum carries noise of std
  ``noise_multiplier · clip`` (:mod:`medfed.privacy.mechanisms`). With secure aggregation the
  coordinator sees only that noisy sum (each site adds its share, std σC/√n); without it, it
  sees one site's clipped update carrying the full σC (each site must then add all the
  noise itself). The noise is drawn from a generator seeded with ``seed`` so that an audit
  can be repeated; the attacker is not given it.

Attacks: the analytic first-layer attack on tabular updates, gradient matching on images
(:mod:`medfed.audit.inversion`); similarity and thresholds as in
:mod:`medfed.audit.similarity`. Labels for a batch are given to the attacker (inferred from
the update for a single image): the audit grants the attacker every doubt.

Verdict (:mod:`medfed.audit.report`): **inconclusive** if no record of the raw update is
reconstructed, **fail** if a record is reconstructed from the protected view, else **pass**.

A pass shows that *these* attacks fail, not that the records are private: the guarantee is
the ε of :mod:`medfed.privacy.accounting`. Measured with the defaults (seed 0): noise far
too small for a useful ε (σ = 0.001) already stops the analytic attack on the tabular
update, while clipping alone (σ = 0) stops nothing, since scaling keeps every ratio.
Secure aggregation alone does not stop it either when few records share the sum: with one
record per site, 4 sites → 3 of 4 records rebuilt exactly, 8 sites → 2 of 8, 16 → none
(rows of the first layer that a single record switches on survive the sum). On images, the
bounded gradient-matching attack rebuilds one image from a raw update (22–26 dB, seeds 0–2)
but none from a sum of 2 or 4 (at most 19 dB); stronger attacks (more iterations, restarts)
may do better.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from medfed.audit._threads import one_torch_thread
from medfed.audit.report import LeakageReport, ScenarioResult
from medfed.audit.similarity import (
    IMAGE_PSNR_THRESHOLD_DB,
    TABULAR_COSINE_THRESHOLD,
    TABULAR_RELATIVE_ERROR_THRESHOLD,
    Similarity,
    match_images,
    match_records,
)
from medfed.errors import ConfigError
from medfed.records import Params

__all__ = ["LEAKAGE_STEPS", "TASKS", "THRESHOLDS", "LeakageConfig", "run_leakage_audit"]

TASKS: dict[str, str] = {"tabular": "breast-cancer", "imaging": "synthetic-imaging"}
"""Task name → the data set its scenario draws records from."""

THRESHOLDS = (
    f"tabular: a record is reconstructed when its closest candidate has cosine similarity "
    f">= {TABULAR_COSINE_THRESHOLD} and relative error <= {TABULAR_RELATIVE_ERROR_THRESHOLD} "
    f"(its values to within 10%); images: when its best candidate has PSNR >= "
    f"{IMAGE_PSNR_THRESHOLD_DB:g} dB. A view leaks when at least one record is reconstructed."
)

MAX_SITES = 256
MAX_TABULAR_BATCH = 64
MAX_IMAGE_BATCH = 4
MAX_IMAGES_IN_SUM = 32

IMAGE_BOUNDS = (-0.5, 1.5)
"""The attacker's prior on scan intensities (the synthetic scanner's output is about 0–1)."""

LEAKAGE_STEPS = 4
"""How many times :func:`run_leakage_audit` reports progress (training, then three attacks)."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LeakageConfig:
    """One leakage audit. Defaults: the default protection (DP clip 1.0, noise multiplier 1.0
    on the sum, secure aggregation) over 4 sites with one record each in their local step."""

    task: str = "tabular"
    sites: int = 4
    batch_size: int = 1
    clip: float = 1.0
    noise_multiplier: float = 1.0
    secagg: bool = True
    seed: int = 0
    learning_rate: float = 0.05
    iterations: int = 300

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"--task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if not 1 <= self.sites <= MAX_SITES:
            raise ConfigError(f"--sites must be between 1 and {MAX_SITES}, not {self.sites}")
        top = MAX_IMAGE_BATCH if self.task == "imaging" else MAX_TABULAR_BATCH
        if not 1 <= self.batch_size <= top:
            raise ConfigError(
                f"--batch-size must be between 1 and {top} for the {self.task} task "
                f"(records per site in its local step), not {self.batch_size}"
            )
        if self.task == "imaging" and self.sites * self.batch_size > MAX_IMAGES_IN_SUM:
            raise ConfigError(
                f"the imaging audit inverts at most {MAX_IMAGES_IN_SUM} images at once; "
                f"lower --sites × --batch-size (now {self.sites * self.batch_size})"
            )
        if not (0 < self.clip < float("inf")):
            raise ConfigError(f"--clip must be a positive number, not {self.clip}")
        if not (0 <= self.noise_multiplier < float("inf")):
            raise ConfigError(
                f"--noise-multiplier must be 0 or more (0 turns DP noise off), "
                f"not {self.noise_multiplier}"
            )
        if self.seed < 0:
            raise ConfigError(f"--seed must be 0 or more, not {self.seed}")
        if not 0 < self.learning_rate <= 10:
            raise ConfigError(f"the learning rate must be in (0, 10], not {self.learning_rate}")
        if not 1 <= self.iterations <= 100_000:
            raise ConfigError(f"iterations must be between 1 and 100000, not {self.iterations}")


@dataclass(frozen=True)
class _View:
    name: str
    description: str
    update: Params
    sites: tuple[int, ...]
    """The sites whose records are in this view."""


def _sum(updates: list[Params]) -> Params:
    first = updates[0]
    return Params(
        (name, np.asarray(np.sum([u[name] for u in updates], axis=0, dtype=np.float64), arr.dtype))
        for name, arr in first.items()
    )


class _Scenario:
    """The global model, the sites' records and their raw updates."""

    def __init__(self, config: LeakageConfig) -> None:
        import torch

        from medfed.config import TrainSettings
        from medfed.data import load_dataset
        from medfed.data.base import SiteData
        from medfed.records import Instruction, Operation
        from medfed.site.pipeline import compute_delta
        from medfed.site.task import default_task

        dataset = load_dataset(TASKS[config.task], seed=config.seed)
        pooled = dataset.pooled()
        needed = config.sites * config.batch_size
        if needed > pooled.num_train:
            raise ConfigError(
                f"{dataset.name} has {pooled.num_train} training records, fewer than "
                f"--sites × --batch-size = {needed}; lower one of them"
            )
        rng = np.random.default_rng([config.seed, 0xA0D1])
        chosen = rng.choice(pooled.num_train, size=needed, replace=False)
        self.spec = dataset.spec
        self.task = default_task(self.spec)
        self.global_params = self.task.initial_params(self.spec, seed=config.seed)
        self.x = pooled.x_train[chosen].reshape(config.sites, config.batch_size, -1)
        self.y = pooled.y_train[chosen].reshape(config.sites, config.batch_size)
        settings = TrainSettings(
            local_epochs=1, batch_size=config.batch_size, learning_rate=config.learning_rate
        )
        shape = self.spec.input_shape
        self.updates: list[Params] = []
        with torch.random.fork_rng(devices=[]):
            for k in range(config.sites):
                site = SiteData(
                    name=f"site-{k + 1}",
                    x_train=self.x[k].reshape(-1, *shape),
                    y_train=self.y[k],
                    x_test=self.x[k][:0].reshape(0, *shape),
                    y_test=self.y[k][:0],
                )
                app = self.task.site_app(site, self.spec, settings, device="cpu")
                instruction = Instruction(Operation.TRAIN, 1, self.global_params, config.seed)
                fitted = app.fit(self.global_params, instruction)
                self.updates.append(compute_delta(fitted.params, self.global_params))

    def records(self, sites: tuple[int, ...]) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
        shape = self.spec.input_shape
        x = np.concatenate([self.x[k] for k in sites]).reshape(-1, *shape)
        y = np.concatenate([self.y[k] for k in sites]).astype(np.int64)
        return x, y


def _views(scenario: _Scenario, config: LeakageConfig) -> list[_View]:
    from medfed.privacy.mechanisms import add_gaussian_noise, clip_l2, distributed_noise_std

    n = config.sites
    everyone = tuple(range(n))
    views = [
        _View("raw", "one site's update, unprotected", scenario.updates[0], (0,)),
        _View(
            "secagg-only",
            f"sum of {n} sites' raw updates (secure aggregation alone, no DP)",
            _sum(scenario.updates),
            everyone,
        ),
    ]
    rng = np.random.default_rng([config.seed, 0xD9])
    c, sigma = config.clip, config.noise_multiplier
    std = distributed_noise_std(noise_multiplier=sigma, clip=c, min_sites=n if config.secagg else 1)

    def protect(update: Params) -> Params:
        clipped, _ = clip_l2(update, max_norm=c)
        return add_gaussian_noise(clipped, std=std, rng=rng)

    if config.secagg:
        noise = f", noise std {std:.3g} each ({sigma * c:g} on the sum)" if std else ""
        protected = _sum([protect(u) for u in scenario.updates])
        description = f"sum of {n} sites' updates clipped to {c:g}{noise}, secure aggregation"
        views.append(_View("protected", description, protected, everyone))
    else:
        noise = f", noise std {std:.3g} (each site adds all of it)" if std else ""
        description = f"one site's update clipped to {c:g}{noise}, no secure aggregation"
        views.append(_View("protected", description, protect(scenario.updates[0]), (0,)))
    return views


def _attack_tabular(scenario: _Scenario, view: _View) -> tuple[str, Similarity]:
    from medfed.audit.inversion import analytic_first_layer

    x, _ = scenario.records(view.sites)
    candidates = analytic_first_layer(view.update)
    return "analytic, first linear layer", match_records(references=x, candidates=candidates)


def _attack_imaging(
    scenario: _Scenario, view: _View, config: LeakageConfig
) -> tuple[str, Similarity]:
    import torch

    from medfed.audit.inversion import infer_single_label, invert_gradients
    from medfed.site.losses import loss_for
    from medfed.site.torch_app import load_params

    x, y = scenario.records(view.sites)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = scenario.task.build_model(scenario.spec)
    load_params(model, scenario.global_params)
    if len(y) == 1:
        labels, how = np.array([infer_single_label(view.update)]), "label inferred"
    else:
        labels, how = y, "labels given"
    images = invert_gradients(
        model,
        view.update,
        labels=labels,
        loss_fn=loss_for(scenario.spec),
        input_shape=scenario.spec.input_shape,
        iterations=config.iterations,
        bounds=IMAGE_BOUNDS,
        seed=config.seed,
    )
    attack = f"gradient matching, {config.iterations} iterations, {how}"
    return attack, match_images(references=x, candidates=images)


def run_leakage_audit(config: LeakageConfig, *, progress: Progress | None = None) -> LeakageReport:
    """Build the scenario, attack each view, and report (see the module docstring).

    ``progress`` is called with a short description before each of the
    :data:`LEAKAGE_STEPS` steps.
    """

    def step(message: str) -> None:
        if progress is not None:
            progress(message)

    step(f"training {config.sites} sites (one local step each)")
    with one_torch_thread():
        scenario = _Scenario(config)
        results = []
        for view in _views(scenario, config):
            step(f"attacking: {view.name}")
            start = time.perf_counter()
            if config.task == "tabular":
                attack, similarity = _attack_tabular(scenario, view)
            else:
                attack, similarity = _attack_imaging(scenario, view, config)
            seconds = time.perf_counter() - start
            results.append(ScenarioResult(view.name, view.description, attack, similarity, seconds))
    return LeakageReport(config=asdict(config), scenarios=tuple(results), thresholds=THRESHOLDS)
