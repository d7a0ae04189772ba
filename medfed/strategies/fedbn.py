"""FedBN (Li et al., ICLR 2021): normalisation layers stay at each site.

"FedBN: Federated Learning on Non-IID Features via Local Batch Normalization". When sites
differ in their features (scanners, lab assays, units), a shared batch norm mixes
incompatible statistics. FedBN aggregates everything as FedAvg does except the normalisation
layers, which each site keeps, trains and evaluates with as its own (the site's side is
:mod:`medfed.site.personal`, layers ``"norm"``). Every run with FedBN therefore has a
personalised evaluation after its last round (``personalised_per_site``): each site with its
own normalisation. The global model's norm layers are the average of the sites', for a
hospital that joins later. A model without normalisation layers trains exactly as FedAvg.
"""

from __future__ import annotations

from typing import ClassVar

from medfed.messages import PersonalSettings, RoundSettings
from medfed.strategies.fedavg import FedAvg

__all__ = ["FedBN"]


class FedBN(FedAvg):
    """FedAvg whose sites keep their own normalisation layers."""

    name = "fedbn"
    parameters: ClassVar[dict[str, str]] = {"server_lr": "server step size [1.0]"}

    def round_settings(self, *, round: int) -> RoundSettings:
        return RoundSettings(personal=PersonalSettings(layers=("norm",)))
