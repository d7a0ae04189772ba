"""Harmonisation learnt federatedly: global standardisation, imputation, ComBat (issue 11 item 5).

Each site standardising alone centres every hospital's features on its own mean, which
erases real differences between hospitals' populations as well as measurement offsets.
Instead, one ``STATS`` exchange over the training records (under secure aggregation when
on) gives the federation's mean and standard deviation of each feature; every site then
standardises with those, and fills a missing value with the federation's mean.

``combat`` additionally removes each site's location and scale per feature, estimated by the
site itself on its own training records (never sent), with empirical-Bayes shrinkage across
features as in Johnson, Li & Rabinovic (2007), "Adjusting batch effects in microarray
expression data using empirical Bayes methods", *Biostatistics* 8(1):118–127 (the
parametric prior, no covariates): the data are standardised with the grand mean and the
pooled within-site variance (both federated), the site's per-feature shifts γ̂ and scales
δ̂² get a normal and an inverse-gamma prior whose hyperparameters are the site's moments of
those estimates across features, and the posterior means γ*, δ*² are iterated to convergence.
A site with fewer training records than the minimum count is only standardised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from medfed.data.base import SiteData
from medfed.data.statistics import SiteQuery
from medfed.messages import HarmoniseSettings
from medfed.orchestration.backends.base import Backend
from medfed.orchestration.secure_round import SecureAggregation
from medfed.orchestration.statistics import StatsExchange

__all__ = ["Harmonisation", "HarmoniseMethod", "combat_site", "learn_harmonisation"]

HarmoniseMethod = Literal["none", "standardise", "combat"]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Harmonisation:
    """The federation's per-feature location and scale, and how sites use them (picklable)."""

    method: HarmoniseMethod
    mean: tuple[float, ...]
    sd: tuple[float, ...]
    min_count: int = 10
    features: tuple[str, ...] = ()  # the names of the features, in order

    def to_json(self) -> dict[str, object]:
        """What the run folder's summary keeps: the method and each feature's figures."""
        names = self.features or tuple(f"x{i}" for i in range(len(self.mean)))
        return {
            "method": self.method,
            "min_count": self.min_count,
            "features": {
                n: {"mean": m, "sd": s} for n, m, s in zip(names, self.mean, self.sd, strict=True)
            },
        }

    def settings(self) -> HarmoniseSettings:
        """What a federation's sites are sent with every round (RoundSettings.harmonise)."""
        if self.method == "none":
            raise ValueError("no harmonisation to send")
        return HarmoniseSettings(self.method, self.mean, self.sd, self.min_count)

    @staticmethod
    def from_settings(settings: HarmoniseSettings, features: tuple[str, ...] = ()) -> Harmonisation:
        """A site's harmonisation from what its round's settings carry."""
        return Harmonisation(
            settings.method, settings.mean, settings.sd, settings.min_count, features
        )

    def apply(self, data: SiteData) -> SiteData:
        """The site's data harmonised (its training and test records alike)."""
        if self.method == "none":
            return data
        mean, sd = np.asarray(self.mean), np.asarray(self.sd)
        train = (np.asarray(data.x_train, np.float64) - mean) / sd
        test = (np.asarray(data.x_test, np.float64) - mean) / sd
        if self.method == "combat" and len(train) >= self.min_count and train.shape[1] >= 2:
            gamma, delta2 = combat_site(train)
            train, test = (train - gamma) / np.sqrt(delta2), (test - gamma) / np.sqrt(delta2)
        train, test = np.nan_to_num(train, nan=0.0), np.nan_to_num(test, nan=0.0)  # the mean
        return replace(data, x_train=train.astype(np.float32), x_test=test.astype(np.float32))


def combat_site(
    z: FloatArray, *, tol: float = 1e-4, max_iter: int = 1000
) -> tuple[FloatArray, FloatArray]:
    """The empirical-Bayes location γ* and scale δ*² per feature of one site's standardised
    records ``z`` (n × G; NaN: missing), Johnson et al. (2007), parametric prior."""
    n = np.sum(~np.isnan(z), axis=0).astype(np.float64)
    g_hat = np.nanmean(z, axis=0)
    d_hat = np.nanvar(z, axis=0, ddof=1)
    g_bar, t2 = float(np.mean(g_hat)), float(np.var(g_hat, ddof=1))
    v, s2 = float(np.mean(d_hat)), float(np.var(d_hat, ddof=1))
    if not (t2 > 0 and s2 > 0):  # no spread across features to learn a prior from
        return g_hat, np.maximum(d_hat, 1e-12)
    lam, theta = (v * v + 2 * s2) / s2, (v**3 + v * s2) / s2
    g_new, d_new = g_hat.copy(), d_hat.copy()
    for _ in range(max_iter):
        g_old, d_old = g_new, d_new
        g_new = (n * t2 * g_hat + d_old * g_bar) / (n * t2 + d_old)
        ss = np.nansum((z - g_new) ** 2, axis=0)
        d_new = (theta + 0.5 * ss) / (n / 2 + lam - 1)
        change = max(
            float(np.max(np.abs(g_new - g_old) / np.maximum(np.abs(g_old), 1e-12))),
            float(np.max(np.abs(d_new - d_old) / np.maximum(d_old, 1e-12))),
        )
        if change < tol:
            break
    return g_new, np.maximum(d_new, 1e-12)


def learn_harmonisation(
    backend: Backend,
    method: HarmoniseMethod,
    *,
    features: tuple[str, ...],
    secure: SecureAggregation | None = None,
    min_count: int = 10,
    timeout: float | None = None,
) -> Harmonisation:
    """One STATS exchange over the sites' training records: the federation's mean and sd
    (``standardise``: the pooled sd; ``combat``: the pooled within-site sd). A feature over
    fewer than ``min_count`` values, or constant, is left as it is (mean 0, sd 1)."""
    # a site with fewer training records than the minimum count declines (and is then only
    # harmonised with the others' figures); the exchange is round 0, before training's first
    # (a site's secure-aggregation keys are per round)
    exchange = StatsExchange(
        backend, secure, min_records=min_count, timeout=timeout, run="harmonise", round=-1
    )
    query = SiteQuery(stage="moments", features=features, split="train", within=True)
    total = exchange(query).total
    mean, sd = [], []
    for i in range(len(features)):
        n = float(total["present"][i])
        if n < max(min_count, 2):
            mean.append(0.0)
            sd.append(1.0)
            continue
        m = float(total["sum"][i]) / n
        if method == "combat":
            var = float(total["sumsq_w"][i]) / n  # ComBat's σ²: within-site, over N
        else:
            var = max(float(total["sumsq"][i]) - n * m * m, 0.0) / (n - 1)
        mean.append(m)
        sd.append(math.sqrt(var) if var > 0 else 1.0)
    return Harmonisation(method, tuple(mean), tuple(sd), min_count, tuple(features))
