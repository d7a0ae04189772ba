"""What a strategy tells a site for one round, and what a site reports back: typed, versioned.

Each setting and each report item has exactly one definition, here. They travel inside an
:class:`~medfed.records.Instruction` (``settings``) and a :class:`~medfed.records.Reply`
(``report``), and over the network as JSON objects that carry :data:`MESSAGE_VERSION`::

    coordinator ── RoundSettings ──► site        site ── SiteReport ──► coordinator
      proximal_mu     FedProx's μ                  clip_bit        adaptive clipping's noised bit
      clip_norm       the round's DP clip          epsilon         DP-SGD: the site's ε so far
      secure          secure aggregation's terms   saturated       values clipped at secagg's bound
      harmonise       the federation's feature     local_steps     optimiser steps this round
                      standardisation ([data]
                      harmonise; sent only when set)
      personal        layers the site keeps (FedBN,
                      FedPer) and, to evaluate, its
                      fine-tuning (sent only when set)
      task            the task's own options

Besides settings, a strategy may send tensors with the model: SCAFFOLD's server control
variate travels as extra entries of the round's params named ``CONTROL_PREFIX + name`` (one
per float entry of the model), and a site's change of its own variate comes back under the
same names in its update, so masking, bounds and the wire treat them like any other tensor.

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
    "CONTROL_PREFIX",
    "MESSAGE_VERSION",
    "HarmoniseSettings",
    "MessageVersionError",
    "PersonalLayers",
    "PersonalSettings",
    "RoundSettings",
    "SecureSettings",
    "SiteReport",
    "harmonise_from_json",
    "harmonise_to_json",
    "personal_from_json",
    "personal_to_json",
    "report_from_json",
    "report_to_json",
    "settings_from_json",
    "settings_to_json",
]

MESSAGE_VERSION = 1
"""The version of :class:`RoundSettings` and :class:`SiteReport` this medfed speaks."""

CONTROL_PREFIX = "medfed.control/"
"""Name prefix of a control variate's tensors in a round's params (SCAFFOLD)."""

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


MAX_HARMONISED_FEATURES = 100_000


@dataclass(frozen=True, slots=True)
class HarmoniseSettings:
    """The federation's location and scale of each feature, learnt before training: a site
    standardises with them (``"standardise"``), then removes its own site effects
    (``"combat"``); :class:`medfed.orchestration.harmonise.Harmonisation` applies them."""

    method: Literal["standardise", "combat"]
    mean: tuple[float, ...]
    sd: tuple[float, ...]
    min_count: int = 10

    def __post_init__(self) -> None:
        if self.method not in ("standardise", "combat"):
            raise ValueError(f"harmonise.method must be standardise or combat, not {self.method!r}")
        if len(self.mean) != len(self.sd) or not 1 <= len(self.mean) <= MAX_HARMONISED_FEATURES:
            raise ValueError("harmonise.mean and harmonise.sd must give each feature once")
        if not all(math.isfinite(m) for m in self.mean):
            raise ValueError("harmonise.mean must be finite")
        if not all(math.isfinite(v) and v > 0 for v in self.sd):
            raise ValueError("harmonise.sd must be positive and finite")
        if not 1 <= self.min_count <= 1_000_000:
            raise ValueError(f"harmonise.min_count must be at least 1, not {self.min_count}")


PersonalLayers = Literal["norm", "head"]
MAX_FINETUNE_EPOCHS = 100


@dataclass(frozen=True, slots=True)
class PersonalSettings:
    """What a site keeps for itself (:mod:`medfed.site.personal`).

    ``layers``: the site trains these layers every round but evaluates and goes on with its
    own, never the federation's — ``"norm"`` the normalisation layers (FedBN), ``"head"`` the
    model's last layer (FedPer). ``finetune_epochs``: in a personalised evaluation, the most
    epochs of local fine-tuning; the site picks how many (0 included) on a validation split
    of ``validation_fraction`` of its own training records, never its test records.
    """

    layers: tuple[PersonalLayers, ...] = ()
    finetune_epochs: int = 0
    validation_fraction: float = 0.2

    def __post_init__(self) -> None:
        if any(layer not in ("norm", "head") for layer in self.layers):
            raise ValueError(f"personal.layers must be 'norm' or 'head', not {self.layers!r}")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError("personal.layers names a kind of layer twice")
        if not 0 <= self.finetune_epochs <= MAX_FINETUNE_EPOCHS:
            raise ValueError(f"personal.finetune_epochs must be in [0, {MAX_FINETUNE_EPOCHS}]")
        if not 0.05 <= self.validation_fraction <= 0.5:
            raise ValueError("personal.validation_fraction must be in [0.05, 0.5]")

    def merged(self, other: PersonalSettings | None) -> PersonalSettings:
        """Both sets of layers; the larger fine-tuning."""
        if other is None:
            return self
        layers = self.layers + tuple(x for x in other.layers if x not in self.layers)
        return PersonalSettings(
            layers=layers,
            finetune_epochs=max(self.finetune_epochs, other.finetune_epochs),
            validation_fraction=self.validation_fraction,
        )


def personal_to_json(p: PersonalSettings) -> dict[str, Any]:
    return {
        "layers": list(p.layers),
        "finetune_epochs": p.finetune_epochs,
        "validation_fraction": p.validation_fraction,
    }


def personal_from_json(obj: Any) -> PersonalSettings:
    """Personal settings from a peer (a round's settings)."""
    obj = _object(obj, "personal settings", {"layers", "finetune_epochs", "validation_fraction"})
    layers = obj.get("layers", [])
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise SerializationError("personal settings' layers must be a list of names")
    try:
        return PersonalSettings(
            layers=tuple(layers),  # checked by the class
            finetune_epochs=_integer(obj.get("finetune_epochs", 0), "personal.finetune_epochs"),
            validation_fraction=_number(
                obj.get("validation_fraction", 0.2), "personal.validation_fraction"
            ),
        )
    except ValueError as exc:
        raise SerializationError(f"invalid personal settings: {exc}") from None


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
    harmonise: HarmoniseSettings | None = None
    personal: PersonalSettings | None = None

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


def harmonise_to_json(h: HarmoniseSettings) -> dict[str, Any]:
    return {"method": h.method, "mean": list(h.mean), "sd": list(h.sd), "min_count": h.min_count}


def harmonise_from_json(obj: Any) -> HarmoniseSettings:
    """Harmonisation settings from a peer (a round's settings, a checkpoint)."""
    obj = _object(obj, "harmonise settings", {"method", "mean", "sd", "min_count"})
    mean, sd = obj.get("mean"), obj.get("sd")
    if not isinstance(mean, list) or not isinstance(sd, list):
        raise SerializationError("harmonise settings' mean and sd must be lists of numbers")
    if len(mean) > MAX_HARMONISED_FEATURES or len(sd) > MAX_HARMONISED_FEATURES:
        raise SerializationError(f"harmonise settings hold more than {MAX_HARMONISED_FEATURES}")
    try:
        return HarmoniseSettings(
            method=obj.get("method"),  # checked by the class
            mean=tuple(_number(v, "harmonise.mean") for v in mean),
            sd=tuple(_number(v, "harmonise.sd") for v in sd),
            min_count=_integer(obj.get("min_count", 10), "harmonise.min_count"),
        )
    except ValueError as exc:
        raise SerializationError(f"invalid harmonise settings: {exc}") from None


def settings_to_json(settings: RoundSettings) -> dict[str, Any]:
    out = {
        "version": MESSAGE_VERSION,
        "proximal_mu": settings.proximal_mu,
        "clip_norm": settings.clip_norm,
        "secure": None
        if settings.secure is None
        else {"weights": settings.secure.weights, "bound": settings.secure.bound},
        "task": dict(settings.task),
    }
    if settings.harmonise is not None:  # only then: a peer of before speaks the rest
        out["harmonise"] = harmonise_to_json(settings.harmonise)
    if settings.personal is not None:  # ditto
        out["personal"] = personal_to_json(settings.personal)
    return out


def settings_from_json(obj: Any) -> RoundSettings:
    """Round settings from a peer; a wrong version, type or value is a SerializationError."""
    obj = _object(
        obj,
        "round settings",
        {"proximal_mu", "clip_norm", "secure", "task", "harmonise", "personal"},
    )
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
        harmonise = obj.get("harmonise")
        personal = obj.get("personal")
        return RoundSettings(
            proximal_mu=_number(obj.get("proximal_mu", 0.0), "proximal_mu"),
            clip_norm=None if clip is None else _number(clip, "clip_norm"),
            secure=secure,
            task=dict(task),
            harmonise=None if harmonise is None else harmonise_from_json(harmonise),
            personal=None if personal is None else personal_from_json(personal),
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
