"""A job's configuration: what a researcher asks the sites to run, checked whole at submission.

The coordinator refuses a job before anything starts when any value is of the wrong type or
out of range, with one error that lists every bad key (``JobConfig.from_json``). Integers are
never read from ``true``/``false``, numbers must be finite, and every value has an upper bound,
so a job cannot ask the sites for 10**9 epochs or a batch of 10**18 records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from medfed.config import MAX_BATCH_SIZE, MAX_LOCAL_EPOCHS, TrainSettings, UpdateBounds
from medfed.data.base import TaskKind
from medfed.errors import ConfigError
from medfed.privacy.config import PrivacyConfig
from medfed.strategies import check_secure_aggregation, make_strategy

__all__ = ["MAX_INPUT_VALUES", "JobConfig", "job_problems"]

MAX_INPUT_VALUES = 1 << 26  # values in one input record (an image of 4096 x 4096 x 4)
_MAX_NAME = 200

Check = Callable[[Any], str | None]  # None when the value is fine, else what it must be


def _integer(lo: int, hi: int) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            return f"must be an integer between {lo} and {hi}"
        return None

    return check


def _number(lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False) -> Check:
    left, right = "(" if open_lo else "[", ")" if open_hi else "]"

    def check(v: Any) -> str | None:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and _finite(v)
        if ok:
            ok = (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)
        return None if ok else f"must be a number in {left}{lo:g}, {hi:g}{right}"

    return check


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer such as 10**400
        return False


def _choice(*options: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(map(repr, options))}"

    return check


def _text(v: Any) -> str | None:
    if not isinstance(v, str) or not 0 < len(v) <= _MAX_NAME or "\x00" in v:
        return f"must be text of 1 to {_MAX_NAME} characters"
    return None


def _shape(v: Any) -> str | None:
    if (
        not isinstance(v, list)
        or not 1 <= len(v) <= 3
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in v)
    ):
        return "must be a list of 1 to 3 positive integers (features, or channels x H x W)"
    if math.prod(v) > MAX_INPUT_VALUES:
        return f"must describe at most {MAX_INPUT_VALUES} values per record"
    return None


def _names(v: Any) -> str | None:
    if not isinstance(v, list) or len(v) > MAX_INPUT_VALUES or any(_text(n) for n in v):
        return "must be a list of feature names"
    return None


def _scalars(v: Any) -> str | None:
    if not isinstance(v, dict) or len(v) > 100:
        return "must be a table of at most 100 settings"
    for k, x in v.items():
        if not isinstance(k, str) or not isinstance(x, bool | int | float | str):
            return "must map names to numbers, text or true/false"
        if isinstance(x, int | float) and not isinstance(x, bool) and not _finite(x):
            return "must hold finite numbers"
    return None


_TOP: dict[str, Check] = {
    "rounds": _integer(1, 100_000),
    "seed": _integer(0, 2**63 - 1),
    "strategy": _text,
    "fraction": _number(0, 1, open_lo=True),
    "min_sites": _integer(1, 10_000),
    "round_timeout": _number(1, 7 * 24 * 3600),
    "evaluate_every": _integer(0, 100_000),
    "strategy_options": _scalars,
}
_TRAIN: dict[str, Check] = {
    "local_epochs": _integer(1, MAX_LOCAL_EPOCHS),
    "batch_size": _integer(1, MAX_BATCH_SIZE),
    "learning_rate": _number(0, 10, open_lo=True),
    "optimizer": _choice("sgd", "adam"),
    "momentum": _number(0, 1, open_hi=True),
    "weight_decay": _number(0, 1),
}
_DATA_SPEC: dict[str, Check] = {
    "kind": _choice(*(k.value for k in TaskKind)),
    "input_shape": _shape,
    "n_classes": _integer(2, 10_000),
    "data": _text,
    "feature_names": _names,
}
_BOUNDS: dict[str, Check] = {
    "norm_factor": _number(0, 1e6),
    "examples_factor": _number(0, 1e6),
    "max_examples": _integer(0, 10**12),
}


def _flag(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


_PRIVACY: dict[str, Check] = {
    "dp": _choice("none", "client", "sample"),
    "clip_norm": _number(0, 1e6, open_lo=True),
    "noise_multiplier": _number(0, 1e6, open_lo=True),
    "target_epsilon": _number(0, 1e4, open_lo=True),
    "delta": _number(0, 1, open_lo=True, open_hi=True),
    "adaptive_clip": _flag,
    "target_quantile": _number(0, 1, open_lo=True, open_hi=True),
    "clip_learning_rate": _number(0, 10, open_lo=True),
    "clip_count_stddev": _number(0, 1e6, open_lo=True),
    "secure_aggregation": _flag,
    "accountant": _choice("rdp", "pld"),
    "secagg_bound": _number(0, 1e6, open_lo=True),
    "secagg_threshold": _number(0.5, 1, open_hi=True),
}
_TABLES = {
    "train": _TRAIN,
    "data_spec": _DATA_SPEC,
    "bounds": _BOUNDS,
    "privacy": _PRIVACY,
}


def _table_problems(where: str, value: Any, checks: Mapping[str, Check]) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where} must be an object (a table)"]
    problems = []
    for key, v in value.items():
        check = checks.get(key) if isinstance(key, str) else None
        if check is None:
            problems.append(f"{where}.{key}: unknown setting (known: {', '.join(checks)})")
        elif (why := check(v)) is not None:
            problems.append(f"{where}.{key} {why}, got {_short(v)}")
    return problems


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def job_problems(raw: Mapping[str, Any]) -> list[str]:
    """Every problem with a job configuration, one line each (empty when it is valid).

    Types and ranges of every key first; the settings that depend on one another (strategy
    options, privacy, bounds) are checked once the values they are made of are valid.
    """
    top = {k: v for k, v in raw.items() if k not in _TABLES}
    problems = [p.removeprefix("job.") for p in _table_problems("job", top, _TOP)]
    for name, checks in _TABLES.items():
        if name in raw:
            problems += _table_problems(name, raw[name], checks)
    spec = raw.get("data_spec")
    if isinstance(spec, dict) and spec and not {"kind", "input_shape"} <= set(spec):
        problems.append("data_spec needs kind and input_shape")
    if problems:
        return problems
    config = _Defaults(raw)
    for check in (config.strategy, config.privacy, config.bounds):
        try:
            check()
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


@dataclass(frozen=True)
class _Defaults:
    """The checks that combine several settings, on a configuration whose values are valid."""

    raw: Mapping[str, Any]

    def get(self, key: str) -> Any:
        return self.raw.get(key, getattr(JobConfig, key, None))

    def strategy(self) -> None:
        strategy = make_strategy(
            self.get("strategy"),
            fraction=self.get("fraction"),
            min_sites=self.get("min_sites"),
            options=self.raw.get("strategy_options", {}),
        )
        if self.raw.get("privacy", {}).get("secure_aggregation"):
            check_secure_aggregation(strategy)

    def privacy(self) -> None:
        values = {"dp": "none", "secure_aggregation": False, **self.raw.get("privacy", {})}
        # dp = "sample" (DP-SGD): each site trains privately and accounts for itself (its
        # node's budget); PrivacyConfig refuses adaptive clipping with it
        config = PrivacyConfig.from_mapping(values)
        if config.adaptive_clip and config.clip_count_stddev is None:
            raise ConfigError(
                "adaptive clipping in a federation needs privacy.clip_count_stddev (the sites "
                "do not know how many take part in a round)"
            )
        if config.secure_aggregation and self.get("min_sites") < 2:
            raise ConfigError("secure aggregation needs min_sites of at least 2")

    def bounds(self) -> None:
        UpdateBounds(**self.raw.get("bounds", {}))


@dataclass(frozen=True)
class JobConfig:
    """What a researcher asks for; validated on submission, stored with the job."""

    rounds: int = 10
    seed: int = 0
    strategy: str = "fedavg"
    fraction: float = 1.0
    min_sites: int = 1
    round_timeout: float = 600.0
    evaluate_every: int = 1
    train: TrainSettings = field(default_factory=TrainSettings)
    data_spec: dict[str, Any] = field(default_factory=dict)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    # the [privacy] table (PrivacyConfig): client-level DP and secure aggregation; none by default
    privacy: dict[str, Any] = field(default_factory=dict)
    # how far one site's update may stand out from its round's (UpdateBounds)
    bounds: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = job_problems(asdict(self))
        if problems:
            raise ConfigError(_sentence(problems))

    def update_bounds(self) -> UpdateBounds:
        """How the coordinator bounds each site's update (the defaults for an empty table)."""
        return UpdateBounds(**self.bounds)

    def privacy_config(self) -> PrivacyConfig:
        """The job's privacy settings; an empty table means no protection at all."""
        return PrivacyConfig.from_mapping(
            {"dp": "none", "secure_aggregation": False, **self.privacy}
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> JobConfig:
        """A job configuration from its JSON; one ConfigError listing every bad key."""
        if not isinstance(raw, Mapping):
            raise ConfigError("a job configuration must be a JSON object")
        known = {f.name for f in fields(JobConfig)}
        problems = [f"{k}: unknown job setting" for k in raw if k not in known]
        problems += job_problems({k: v for k, v in raw.items() if k in known})
        if problems:
            raise ConfigError(_sentence(problems))
        data = dict(raw)
        train = TrainSettings(**{k: _as_float(k, v) for k, v in data.pop("train", {}).items()})
        return JobConfig(train=train, **data)


def _as_float(key: str, value: Any) -> Any:
    """A TOML/JSON integer given for a float setting, as a float."""
    floats = {f.name for f in fields(TrainSettings) if "float" in str(f.type)}
    return float(value) if key in floats and isinstance(value, int) else value


def _sentence(problems: list[str]) -> str:
    head = (
        "the job configuration has 1 problem"
        if len(problems) == 1
        else (f"the job configuration has {len(problems)} problems")
    )
    return f"{head}: " + "; ".join(problems) + " (fix them and submit again)"
