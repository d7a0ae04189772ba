"""Strategies: which sites train each round, and how their updates become the next model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medfed.errors import ConfigError
from medfed.strategies.base import (
    Aggregate,
    Aggregator,
    SecureSum,
    SitePlan,
    Strategy,
    StrategyState,
    expected_sites,
    sample_sites,
)
from medfed.strategies.fedavg import FedAvg
from medfed.strategies.fedbn import FedBN
from medfed.strategies.fednova import FedNova
from medfed.strategies.fedopt import FedAdagrad, FedAdam, FedYogi
from medfed.strategies.fedprox import FedAvgM, FedProx
from medfed.strategies.robust import Krum, Median, NormBounded, TrimmedMean
from medfed.strategies.scaffold import Scaffold

__all__ = [
    "STRATEGIES",
    "Aggregate",
    "Aggregator",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedBN",
    "FedNova",
    "FedProx",
    "FedYogi",
    "Krum",
    "Median",
    "NormBounded",
    "Scaffold",
    "SecureSum",
    "SitePlan",
    "Strategy",
    "StrategyState",
    "TrimmedMean",
    "check_privacy",
    "check_secure_aggregation",
    "expected_sites",
    "make_strategy",
    "sample_sites",
]

_ALL: tuple[type[Strategy], ...] = (
    FedAvg, FedProx, FedAvgM, FedNova, Scaffold, FedBN, FedAdam, FedYogi, FedAdagrad,
)  # fmt: skip
_ROBUST: tuple[type[Strategy], ...] = (NormBounded, Median, TrimmedMean, Krum)
STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (*_ALL, *_ROBUST)}


def make_strategy(
    name: str, *, fraction: float, min_sites: int, options: Mapping[str, Any] | None = None
) -> Strategy:
    """Build a strategy by its name; unknown names and options are one-sentence ConfigErrors."""
    cls = STRATEGIES.get(name.lower())
    if cls is None:
        raise ConfigError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    try:
        return cls(fraction=fraction, min_sites=min_sites, **dict(options or {}))
    except TypeError as exc:
        raise ConfigError(f"strategy {name!r} does not accept these options: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"strategy {name!r}: {exc}") from None


def check_privacy(strategy: Strategy) -> None:
    """Refuse a strategy whose sites send more than DP accounts for (SCAFFOLD's variates)."""
    if not strategy.dp_covered:
        ok = ", ".join(n for n, c in STRATEGIES.items() if c.dp_covered)
        raise ConfigError(
            f"strategy {strategy.name!r} has each site send more than its model update (its "
            f"control-variate change), which the run's DP does not cover; with privacy.dp "
            f"choose one of {ok}, or set privacy.dp = 'none'"
        )


def check_secure_aggregation(strategy: Strategy) -> None:
    """Refuse a strategy that needs individual updates in a run with secure aggregation."""
    if strategy.needs == "updates":
        sums = ", ".join(n for n, c in STRATEGIES.items() if c.needs == "sum")
        raise ConfigError(
            f"strategy {strategy.name!r} needs each site's update, but privacy."
            "secure_aggregation = true gives the coordinator only their sum; choose a "
            f"strategy that aggregates a sum ({sums}) "
            "or turn secure aggregation off"
        )
