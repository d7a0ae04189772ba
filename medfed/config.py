"""Run configuration: typed, validated, read from and written to TOML.

A run folder keeps the fully resolved file (``config.toml``), so
``medfed simulate --config runs/x/config.toml`` repeats that run exactly.

Example file::

    seed = 0
    rounds = 20
    task = "examples/breast_mlp.py:task"   # optional: a default model fits the data's kind

    [data]
    name = "breast-cancer"
    sites = 4

    [train]
    local_epochs = 1
    learning_rate = 0.05

    [strategy]
    name = "fedavg"
    fraction = 1.0
    min_sites = 2
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import tomli_w

from medfed.errors import ConfigError
from medfed.privacy.config import PrivacyConfig

__all__ = [
    "BackendConfig",
    "DataConfig",
    "EvaluationConfig",
    "RunConfig",
    "StrategyConfig",
    "TrainSettings",
    "UpdateBounds",
    "load_config",
    "save_config",
]

Scalar = bool | int | float | str
Optimizer = Literal["sgd", "adam"]
BackendKind = Literal["inprocess", "process"]


MAX_LOCAL_EPOCHS = 1000
MAX_BATCH_SIZE = 1 << 20
MAX_EXAMPLES = 10**12  # the most examples a site may claim in one update


@dataclass(frozen=True)
class TrainSettings:
    """How each site trains locally in one round."""

    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.05
    optimizer: Optimizer = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check(
            1 <= self.local_epochs <= MAX_LOCAL_EPOCHS,
            f"train.local_epochs must be between 1 and {MAX_LOCAL_EPOCHS}",
        )
        _check(
            1 <= self.batch_size <= MAX_BATCH_SIZE,
            f"train.batch_size must be between 1 and {MAX_BATCH_SIZE}",
        )
        _check(0 < self.learning_rate <= 10, "train.learning_rate must be in (0, 10]")
        _check(self.optimizer in get_args(Optimizer), "train.optimizer must be 'sgd' or 'adam'")
        _check(0 <= self.momentum < 1, "train.momentum must be in [0, 1)")
        _check(0 <= self.weight_decay <= 1, "train.weight_decay must be in [0, 1]")


@dataclass(frozen=True)
class UpdateBounds:
    """How far one site's update may stand out from its round's (0: no such bound).

    An update whose L2 norm is above ``norm_factor`` times the round's lower-median norm is
    scaled down to that bound; a claim of more examples than ``examples_factor`` times the
    round's lower-median claim, or than ``max_examples``, is counted at that cap. The defaults
    (100 and 100: no site stands for more than a hundred typical sites, in norm or in weight)
    leave honest sites alone, also when sites differ tenfold in size and so in local steps
    (``benchmarks/update_norms.py``: the largest honest norm ratio measured is 16.8); see
    :mod:`medfed.orchestration.validate`.
    """

    norm_factor: float = 100.0
    examples_factor: float = 100.0
    max_examples: int = 0

    @classmethod
    def none(cls) -> UpdateBounds:
        """No bound at all (each update is aggregated as it arrives)."""
        return cls(norm_factor=0.0, examples_factor=0.0, max_examples=0)

    def __post_init__(self) -> None:
        for name in ("norm_factor", "examples_factor"):
            value = getattr(self, name)
            _check(
                value == 0 or (math.isfinite(value) and 1 <= value <= 1e6),
                f"bounds.{name} must be between 1 and 1e6, or 0 for no bound",
            )
        n = self.max_examples
        _check(
            not isinstance(n, bool) and 0 <= n <= MAX_EXAMPLES,
            f"bounds.max_examples must be between 1 and {MAX_EXAMPLES}, or 0 for no cap",
        )


@dataclass(frozen=True)
class DataConfig:
    """Which data each simulated site holds."""

    name: str = "breast-cancer"
    sites: int | None = None
    dir: str | None = None
    options: dict[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(bool(self.name), "data.name must name a data set (see `medfed data list`)")
        _check(
            self.sites is None or 1 <= self.sites <= 10_000,
            "data.sites must be between 1 and 10000",
        )


@dataclass(frozen=True)
class StrategyConfig:
    """How the coordinator picks sites and combines their updates."""

    name: str = "fedavg"
    fraction: float = 1.0
    min_sites: int = 1
    options: dict[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(0 < self.fraction <= 1, "strategy.fraction must be in (0, 1]")
        _check(self.min_sites >= 1, "strategy.min_sites must be at least 1")


@dataclass(frozen=True)
class BackendConfig:
    """Where simulated sites run: in this process, or in a pool of worker processes."""

    kind: BackendKind = "inprocess"
    workers: int = 2

    def __post_init__(self) -> None:
        _check(self.kind in get_args(BackendKind), "backend.kind must be 'inprocess' or 'process'")
        _check(1 <= self.workers <= 512, "backend.workers must be between 1 and 512")


@dataclass(frozen=True)
class EvaluationConfig:
    """Federated evaluation every ``every`` rounds; optional local-only and pooled baselines."""

    every: int = 1
    baselines: bool = False

    def __post_init__(self) -> None:
        _check(self.every >= 0, "evaluation.every must be 0 (final round only) or more")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a simulation run."""

    rounds: int = 10
    seed: int = 0
    task: str | None = None
    out: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    # a simulation's sites are the user's own: no bounds unless a [bounds] table asks (an empty
    # table gives a federation's defaults, which hold a round's updates in memory to bound them)
    bounds: UpdateBounds = field(default_factory=UpdateBounds.none)
    # no protection unless asked; a [privacy] table in a run file turns secure aggregation on
    privacy: PrivacyConfig = field(default_factory=lambda: PrivacyConfig(secure_aggregation=False))

    def __post_init__(self) -> None:
        _check(1 <= self.rounds <= 100_000, "rounds must be between 1 and 100000")
        _check(0 <= self.seed < 2**63, "seed must be a non-negative integer below 2**63")

    def with_overrides(self, **changes: Any) -> RunConfig:
        """A copy with top-level fields or dotted section fields (``"train.batch_size"``) set."""
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if value is None:
                continue
            section, _, name = key.rpartition(".")
            if section:
                sections.setdefault(section, {})[name] = value
            else:
                top[name] = value
        for section, values in sections.items():
            top[section] = _build(
                type(getattr(self, section)), values, section, getattr(self, section)
            )
        return replace(self, **top)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _drop_none(asdict(self))
        return out


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    return obj


T = TypeVar("T")

_SECTIONS: dict[str, type[Any]] = {
    "data": DataConfig,
    "train": TrainSettings,
    "strategy": StrategyConfig,
    "backend": BackendConfig,
    "evaluation": EvaluationConfig,
    "bounds": UpdateBounds,
    "privacy": PrivacyConfig,
}


def _coerce(value: Any, annotation: str, where: str) -> Any:
    """Check a TOML value against a dataclass field's annotation (given as a string)."""
    allowed = annotation.replace(" ", "").split("|")
    if value is None and "None" in allowed:
        return None
    if "int" in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if "float" in allowed and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if "bool" in allowed and isinstance(value, bool):
        return value
    if ("str" in allowed or annotation in ("Optimizer", "BackendKind")) and isinstance(value, str):
        return value
    if annotation.startswith("dict[") and isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(v, bool | int | float | str):
                raise ConfigError(f"{where}.{k} must be a number, a string or true/false")
        return dict(value)
    expected = " or ".join(a for a in allowed if a != "None")
    raise ConfigError(f"{where} must be {expected}, got {value!r}")


def _build(cls: type[T], values: Mapping[str, Any], where: str, base: T | None = None) -> T:
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            hint = difflib.get_close_matches(key, list(known), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"unknown setting {where}.{key}{suggestion}".replace("..", "."))
        kwargs[key] = _coerce(value, str(known[key].type), f"{where}.{key}".lstrip("."))
    if base is not None:
        return replace(base, **kwargs)  # type: ignore[type-var]
    return cls(**kwargs)


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a parsed TOML document into a :class:`RunConfig`."""
    top: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            top[key] = _build(_SECTIONS[key], value, key)
        else:
            top[key] = value
    sections_removed = {k: v for k, v in top.items() if k not in _SECTIONS}
    checked = _build(RunConfig, sections_removed, "")
    return replace(checked, **{k: v for k, v in top.items() if k in _SECTIONS})


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run file; every problem is a one-sentence :class:`ConfigError`."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    return config_from_dict(raw)


def save_config(config: RunConfig, path: str | Path) -> None:
    from medfed.serde import atomic_write

    atomic_write(path, tomli_w.dumps(config.to_dict()))
