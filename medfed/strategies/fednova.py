"""FedNova (Wang et al., NeurIPS 2020): normalised averaging for sites that take different
numbers of local steps.

"Tackling the Objective Inconsistency Problem in Heterogeneous Federated Optimization": when
site ``i`` runs ``τ_i`` local SGD steps, FedAvg's mean of the updates weights each site by
``p_i τ_i`` in effect, so the federation converges to the optimum of a *different* objective
than ``Σ p_i F_i`` — the sites that take more steps pull it their way. FedNova divides each
update by its number of steps (its normalised gradient ``d_i = Δ_i / τ_i``, plain SGD's
``‖a_i‖₁ = τ_i``) and steps by the effective count ``τ_eff = Σ p_i τ_i``::

    x ← x + τ_eff · Σ_i p_i d_i,      p_i = n_i / Σ n_j

With every ``τ_i`` equal it is FedAvg. It needs each site's update with its reported steps
(:attr:`medfed.messages.SiteReport.local_steps`, counted by the site's trainer; withheld under
DP), so it is refused together with secure aggregation.
"""

from __future__ import annotations

from typing import ClassVar

from medfed.errors import RoundFailed
from medfed.math.aggregate import weighted_mean
from medfed.records import Params, Update
from medfed.strategies.base import Aggregate, Aggregator, Needs, Strategy, StrategyState
from medfed.strategies.fedavg import apply_delta

__all__ = ["FedNova"]


class _Normalised(Aggregator):
    def __init__(self, params: Params, state: StrategyState) -> None:
        self._params, self._state = params, state
        self._held: list[tuple[str, Update, int]] = []

    def add(self, site: str, update: Update, *, steps: int | None = None) -> None:
        if steps is None or steps < 1:
            raise RoundFailed(
                f"FedNova needs each site's local steps; {site} reported "
                f"{'none' if steps is None else steps} (its train function takes no optimiser "
                "step, or DP withholds the count): choose another strategy"
            )
        self._held.append((site, update, steps))

    def finish(self) -> Aggregate:
        if not self._held:
            return Aggregate(self._params, self._state)
        total = sum(u.num_examples for _, u, _ in self._held)
        weights = [
            (u.num_examples / total if total else 1 / len(self._held)) for _, u, _ in self._held
        ]
        tau_eff = sum(p * tau for p, (_, _, tau) in zip(weights, self._held, strict=True))
        normalised = weighted_mean(
            (u.delta, p / tau) for p, (_, u, tau) in zip(weights, self._held, strict=True)
        )
        assert normalised is not None  # Σ p/τ > 0
        scale = tau_eff * sum(p / tau for p, (_, _, tau) in zip(weights, self._held, strict=True))
        return Aggregate(apply_delta(self._params, normalised, scale=scale), self._state)


class FedNova(Strategy):
    """FedAvg with each update divided by its local steps, stepped by the effective count."""

    name = "fednova"
    needs: ClassVar[Needs] = "updates"

    def aggregator(self, *, round: int, params: Params, state: StrategyState) -> Aggregator:
        return _Normalised(params, state)
