"""What a strategy tells a site for one round, and what a site reports back: typed, versioned.

Each setting and each report item has exactly one definition, here. They travel inside an
:class:`~medfed.records.Instruction` (``settings``) and a :class:`~medfed.records.Reply`
(``report``), and over the network as JSON objects that carry :data:`MESSAGE_VERSION`::

    coordinator ── RoundSettings ──► site        site ── SiteReport ──► coordinator
      proximal_mu     FedProx's μ                  clip_bit        adaptive clipping's noised bit
      clip_norm       the round's DP clip          epsilon         DP-SGD: the site's ε so far
      secure          secure aggregation's terms   saturated       values clipped at secagg's bound
      task            the task's own options       local_steps     optimiser steps this round

A peer that speaks another version is refused with :class:`MessageVersionError`, which names
both versions. Pure data: no torch, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from medfed.errors import SerializationError

__all__ = [
    "MESSAGE_VERSION",
    "MessageVersionError",
    "RoundSettings",
    "SecureSettings",
    "SiteReport",
    "report_from_json",
    "report_to_json",
    "settings_from_json",
    "settings_to_json",
]

MESSAGE_VERSION = 1
"""The version of :class:`RoundSettings` and :class:`SiteReport` this medfed speaks."""

TaskValue = bool | int | float | str
Weights = Literal["examples", "uniform"]


class MessageVersionError(SerializationError):
    """A peer sent a round message of a version this medfed does not speak."""


@dataclass(frozen=True, slots=True)
class SecureSettings:
    """How a site takes part in a secure-aggregation round.

    ``weights``: ``"examples"`` (a site's weight is its number of examples) or ``"uniform"``
    (every site counts once: DP-FedAvg). ``bound``: the largest magnitude of one value; larger
    values are saturated (and counted in :attr:`SiteReport.saturated`).
    """

    weights: Weights = "examples"
    bound: float = 1.0

    def __post_init__(self) -> None:
        if self.weights not in ("examples", "uniform"):
            raise ValueError(
                f"secure.weights must be 'examples' or 'uniform', not {self.weights!r}"
            )
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"secure.bound must be a positive number, not {self.bound!r}")


@dataclass(frozen=True, slots=True)
class RoundSettings:
    """What a site is told for one round besides the model and its seed.

    ``task`` holds a task's own options (read by a task's train function as ``ctx.config``);
    everything medfed itself uses is a typed field.
    """

    proximal_mu: float = 0.0
    clip_norm: float | None = None
    secure: SecureSettings | None = None
    task: Mapping[str, TaskValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.proximal_mu) and self.proximal_mu >= 0):
            raise ValueError(f"proximal_mu must be a non-negative number, not {self.proximal_mu}")
        if self.clip_norm is not None and not (
            math.isfinite(self.clip_norm) and self.clip_norm > 0
        ):
            raise ValueError(f"clip_norm must be a positive number, not {self.clip_norm}")


@dataclass(frozen=True, slots=True)
class SiteReport:
    """What a site says about its training besides its metrics (None: not reported)."""

    clip_bit: float | None = None
    epsilon: float | None = None
    saturated: int | None = None
    local_steps: int | None = None


def _version(obj: Mapping[str, Any], what: str) -> None:
    version = obj.get("version")
    if version != MESSAGE_VERSION:
        raise MessageVersionError(
            f"the peer sent {what} version {version!r}; this medfed speaks version "
            f"{MESSAGE_VERSION} (install the same medfed version on both sides)"
        )


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SerializationError(f"{what} must be a number, got {value!r}")
    try:
        out = float(value)
    except OverflowError:
        raise SerializationError(f"{what} is out of range for a number") from None
    if not math.isfinite(out):
        raise SerializationError(f"{what} must be finite")
    return out


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise SerializationError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _object(obj: Any, what: str, known: set[str]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise SerializationError(f"{what} must be an object")
    unknown = set(obj) - known - {"version"}
    if unknown:
        raise SerializationError(f"{what} has unknown fields: {', '.join(sorted(unknown))}")
    return obj


def settings_to_json(settings: RoundSettings) -> dict[str, Any]:
    return {
        "version": MESSAGE_VERSION,
        "proximal_mu": settings.proximal_mu,
        "clip_norm": settings.clip_norm,
        "secure": None
        if settings.secure is None
        else {"weights": settings.secure.weights, "bound": settings.secure.bound},
        "task": dict(settings.task),
    }


def settings_from_json(obj: Any) -> RoundSettings:
    """Round settings from a peer; a wrong version, type or value is a SerializationError."""
    obj = _object(obj, "round settings", {"proximal_mu", "clip_norm", "secure", "task"})
    _version(obj, "round settings")
    task = obj.get("task", {})
    if not isinstance(task, Mapping) or len(task) > 100:
        raise SerializationError("round settings' task must be an object of at most 100 options")
    for key, value in task.items():
        if not isinstance(key, str) or not isinstance(value, bool | int | float | str):
            raise SerializationError("round settings' task options must be numbers, text or bools")
        if isinstance(value, int | float) and not isinstance(value, bool):
            _number(value, f"task option {key!r}")
    secure = obj.get("secure")
    try:
        if secure is not None:
            secure = _object(secure, "secure settings", {"weights", "bound"})
            secure = SecureSettings(
                weights=secure.get("weights", "examples"),
                bound=_number(secure.get("bound", 1.0), "secure.bound"),
            )
        clip = obj.get("clip_norm")
        return RoundSettings(
            proximal_mu=_number(obj.get("proximal_mu", 0.0), "proximal_mu"),
            clip_norm=None if clip is None else _number(clip, "clip_norm"),
            secure=secure,
            task=dict(task),
        )
    except ValueError as exc:
        raise SerializationError(f"invalid round settings: {exc}") from None


def report_to_json(report: SiteReport) -> dict[str, Any]:
    return {
        "version": MESSAGE_VERSION,
        "clip_bit": report.clip_bit,
        "epsilon": report.epsilon,
        "saturated": report.saturated,
        "local_steps": report.local_steps,
    }


def report_from_json(obj: Any) -> SiteReport:
    """A site's report from a peer; a wrong version, type or value is a SerializationError."""
    obj = _object(obj, "site report", {"clip_bit", "epsilon", "saturated", "local_steps"})
    _version(obj, "site report")

    def opt(key: str, read: Any) -> Any:
        value = obj.get(key)
        return None if value is None else read(value, key)

    return SiteReport(
        clip_bit=opt("clip_bit", _number),
        epsilon=opt("epsilon", _number),
        saturated=opt("saturated", _integer),
        local_steps=opt("local_steps", _integer),
    )
