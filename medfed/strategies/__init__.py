"""Strategies: which sites train each round, and how their updates become the next model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medfed.errors import ConfigError
from medfed.strategies.base import Aggregator, SitePlan, Strategy, sample_sites
from medfed.strategies.fedavg import FedAvg

__all__ = [
    "STRATEGIES",
    "Aggregator",
    "FedAvg",
    "SitePlan",
    "Strategy",
    "make_strategy",
    "sample_sites",
]

STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg}


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
