"""Differential privacy: mechanisms, accounting (by dp_accounting), and the site's steps.

Pure: no files, no databases (a node's lifetime budget is :mod:`medfed.site.budget`).

::

    mechanisms     l2_norm, clip_l2, add_gaussian_noise, distributed_noise_std   (numpy only)
    adaptive_clip  AdaptiveClip: the clip follows a quantile of update norms (Andrew et al.)
    accounting     epsilon, noise_for_epsilon, PrivacyAccountant                 (dp_accounting)
    config         PrivacyConfig: the [privacy] section of a run
    steps          ClipStep, NoiseStep: client-level DP in the site's update pipeline
    plan           make_plan: what `medfed privacy plan` prints

Sample-level DP (DP-SGD through Opacus) lives with the trainer: :mod:`medfed.site.dp_sgd`.

Names are imported lazily, so ``import medfed.privacy.config`` does not load dp_accounting.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medfed.privacy.accounting import PrivacyAccountant, epsilon, noise_for_epsilon
    from medfed.privacy.adaptive_clip import AdaptiveClip
    from medfed.privacy.config import PrivacyConfig
    from medfed.privacy.mechanisms import (
        add_gaussian_noise,
        clip_l2,
        distributed_noise_std,
        l2_norm,
    )
    from medfed.privacy.steps import ClipStep, NoiseStep

__all__ = [
    "AdaptiveClip",
    "ClipStep",
    "NoiseStep",
    "PrivacyAccountant",
    "PrivacyConfig",
    "add_gaussian_noise",
    "clip_l2",
    "distributed_noise_std",
    "epsilon",
    "l2_norm",
    "noise_for_epsilon",
]

_HOME = {
    "AdaptiveClip": "adaptive_clip",
    "ClipStep": "steps",
    "NoiseStep": "steps",
    "PrivacyAccountant": "accounting",
    "PrivacyConfig": "config",
    "add_gaussian_noise": "mechanisms",
    "clip_l2": "mechanisms",
    "distributed_noise_std": "mechanisms",
    "epsilon": "accounting",
    "l2_norm": "mechanisms",
    "noise_for_epsilon": "accounting",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'medfed.privacy' has no attribute {name!r}")
    return getattr(importlib.import_module(f"medfed.privacy.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
