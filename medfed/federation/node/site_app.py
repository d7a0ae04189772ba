"""The site app a job trains with at this node; for a sample-level DP job, with DP-SGD."""

from __future__ import annotations

import warnings
from typing import Any

from medfed.config import TrainSettings
from medfed.data.base import DataSpec, SiteData
from medfed.privacy.config import PrivacyConfig
from medfed.site.state import SiteStateStore

__all__ = ["job_site_app"]


def job_site_app(
    task: Any,
    data: SiteData,
    spec: DataSpec,
    settings: TrainSettings,
    privacy: PrivacyConfig,
    *,
    rounds: int,
    state: SiteStateStore,
) -> Any:
    """The job's site app over this site's ``data``; DP-SGD for a sample-level DP job.

    ``state`` keeps the site's state between rounds on this node's disk.
    """
    if privacy.dp != "sample":
        return task.site_app(data, spec, settings, state=state)
    with warnings.catch_warnings():
        # Opacus asks for its secure_mode (torchcsprng); medfed.site.dp_sgd draws the
        # sampling and the noise from OS-seeded generators and documents why it does not
        # use secure_mode, so the node says it once, as an event, not as a warning
        warnings.filterwarnings("ignore", "Secure RNG turned off", UserWarning)
        return task.site_app(data, spec, settings, privacy=privacy, rounds=rounds, state=state)
