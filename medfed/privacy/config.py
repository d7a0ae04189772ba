"""The ``[privacy]`` section of a run: which DP, how much noise, which clip.

::

    [privacy]
    dp = "client"              # "none", "client" (whole sites) or "sample" (patients, DP-SGD)
    clip_norm = 1.0            # L2 bound of an update (client) or of a per-example gradient
    target_epsilon = 3.0       # or noise_multiplier = 1.1 — one of the two
    delta = 1e-5
    adaptive_clip = false      # client only: the clip follows a quantile of the update norms
    target_quantile = 0.5
    clip_learning_rate = 0.2
    secure_aggregation = true  # sites split the noise between them (distributed DP)

``noise_multiplier`` defaults to 1.0 unless ``target_epsilon`` is set; then it is ``None``
and the noise is calibrated for the run (:meth:`PrivacyConfig.resolve_noise`). Setting a
target on a default config (also with :func:`dataclasses.replace`) drops the default noise;
an explicit noise multiplier with a target is an error. The fields are plain ``str``,
``float`` and ``bool``, so :mod:`medfed.config`'s generic TOML reader can build this section.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from medfed.errors import ConfigError

__all__ = ["ACCOUNTANTS", "AccountantKind", "DPMode", "PrivacyConfig"]

DPMode = Literal["none", "client", "sample"]
AccountantKind = Literal["rdp", "pld"]
ACCOUNTANTS: tuple[str, ...] = get_args(AccountantKind)
"""dp_accounting's RDP (default) or PLD accountant; this module stays light to import."""


class _DefaultNoise(float):
    """The default noise multiplier, marked so that setting ``target_epsilon`` replaces it
    (also through :func:`dataclasses.replace`) while an explicit value conflicts with it."""


_DEFAULT_NOISE = _DefaultNoise(1.0)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy of a run; ``dp="none"`` (the default) turns it off."""

    dp: str = "none"
    clip_norm: float = 1.0
    noise_multiplier: float | None = _DEFAULT_NOISE
    target_epsilon: float | None = None
    delta: float = 1e-5
    adaptive_clip: bool = False
    target_quantile: float = 0.5
    clip_learning_rate: float = 0.2
    clip_count_stddev: float | None = None
    secure_aggregation: bool = True
    accountant: str = "rdp"
    # secure aggregation: the largest magnitude of one update value when DP does not bound it
    # (larger values are saturated at the site, which reports how many), and the fraction of
    # each site's share group needed to unmask
    secagg_bound: float = 1.0
    secagg_threshold: float = 0.5

    def __post_init__(self) -> None:
        _check(
            self.dp in get_args(DPMode),
            f"privacy.dp must be 'none', 'client' or 'sample', got {self.dp!r}",
        )
        if self.target_epsilon is not None and isinstance(self.noise_multiplier, _DefaultNoise):
            object.__setattr__(self, "noise_multiplier", None)
        _check(
            self.noise_multiplier is None or self.target_epsilon is None,
            "set privacy.noise_multiplier or privacy.target_epsilon, not both "
            "(the noise follows from the target)",
        )
        if self.noise_multiplier is None and self.target_epsilon is None:
            object.__setattr__(self, "noise_multiplier", _DEFAULT_NOISE)
        _check(_positive(self.clip_norm), "privacy.clip_norm must be a positive number")
        _check(
            self.noise_multiplier is None or _positive(self.noise_multiplier),
            "privacy.noise_multiplier must be a positive number",
        )
        _check(
            self.target_epsilon is None or _positive(self.target_epsilon),
            "privacy.target_epsilon must be a positive number",
        )
        _check(
            0 < self.delta < 1,
            "privacy.delta must be in (0, 1), and well below 1/(number of records)",
        )
        _check(0 < self.target_quantile < 1, "privacy.target_quantile must be in (0, 1)")
        _check(_positive(self.clip_learning_rate), "privacy.clip_learning_rate must be positive")
        _check(
            self.clip_count_stddev is None or _positive(self.clip_count_stddev),
            "privacy.clip_count_stddev must be a positive number",
        )
        _check(_positive(self.secagg_bound), "privacy.secagg_bound must be a positive number")
        _check(
            0.5 <= self.secagg_threshold < 1,
            "privacy.secagg_threshold must be in [0.5, 1) (a majority of each share group)",
        )
        _check(
            self.accountant in ACCOUNTANTS,
            f"privacy.accountant must be 'rdp' or 'pld', got {self.accountant!r}",
        )
        _check(
            not (self.adaptive_clip and self.dp != "client"),
            "privacy.adaptive_clip works with dp = 'client' only; turn it off or set "
            "privacy.dp = 'client'",
        )

    @property
    def enabled(self) -> bool:
        return self.dp != "none"

    def resolve_noise(self, *, rounds: int, sample_rate: float) -> float:
        """The noise multiplier: as set, or calibrated so ``rounds`` rounds at ``sample_rate``
        spend ``target_epsilon`` at ``delta``.

        A client-level run calls this through :func:`medfed.privacy.server.client_accountant`,
        with ``sample_rate = 1`` (sites are drawn as a fixed number per round: no
        amplification by sampling); a rate below 1 is right only for Poisson sampling.
        """
        if self.noise_multiplier is not None:
            return self.noise_multiplier
        from medfed.privacy.accounting import noise_for_epsilon

        assert self.target_epsilon is not None
        return noise_for_epsilon(
            target_epsilon=self.target_epsilon,
            delta=self.delta,
            rounds=rounds,
            sample_rate=sample_rate,
            accountant=self.accountant,
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str = "privacy") -> PrivacyConfig:
        """Validate a parsed TOML table; every problem is a one-sentence :class:`ConfigError`."""
        known = {f.name: str(f.type) for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                hint = difflib.get_close_matches(key, list(known), n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"unknown setting {where}.{key}{suggestion}")
            kwargs[key] = _coerce(value, known[key], f"{where}.{key}")
        return cls(**kwargs)

    def to_mapping(self) -> dict[str, Any]:
        """The TOML table (``None`` values left out); ``from_mapping`` reads it back equal."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: float(v) if isinstance(v, float) else v for k, v in out.items() if v is not None}


def _coerce(value: Any, annotation: str, where: str) -> Any:
    allowed = annotation.replace(" ", "").split("|")
    if "float" in allowed and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if "bool" in allowed and isinstance(value, bool):
        return value
    if "str" in allowed and isinstance(value, str):
        return value
    expected = {"float": "a number", "bool": "true or false", "str": "a string"}
    kinds = " or ".join(expected.get(a, "a string") for a in allowed if a != "None")
    raise ConfigError(f"{where} must be {kinds}, got {value!r}")
