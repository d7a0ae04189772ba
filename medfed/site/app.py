"""The site-side contract: what any site application must do.

A :class:`SiteApp` is what runs next to a hospital's data. medfed ships one for PyTorch tasks
(:mod:`medfed.site.torch_app`); anything that can train on numpy params can be one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from medfed.messages import SiteReport
from medfed.records import Instruction, Metrics, Params

__all__ = ["FitResult", "SiteApp"]


@dataclass(frozen=True, slots=True)
class FitResult:
    """The outcome of local training.

    ``params`` are the trained weights, in the same layout as the params received. Ownership
    passes to medfed: it may overwrite these arrays in place (to turn them into the update), so
    return fresh arrays, never ones the app keeps using.
    """

    params: Params
    num_examples: int
    metrics: Metrics
    report: SiteReport | None = None  # what medfed reports for the site (e.g. DP-SGD's ε)


@runtime_checkable
class SiteApp(Protocol):
    """Trains and evaluates a model on one site's data."""

    def fit(self, params: Params, instruction: Instruction) -> FitResult:
        """Train from ``params`` (read-only arrays) and return the trained params."""
        ...

    def evaluate(self, params: Params, instruction: Instruction) -> Metrics:
        """Evaluate ``params`` on the site's held-out data."""
        ...
