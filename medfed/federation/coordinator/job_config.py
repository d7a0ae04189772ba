"""A job's configuration: the run specification, checked whole at submission.

A job is described by the same specification as a simulation (:class:`~medfed.config.RunConfig`,
the same TOML file), resolved for a federation, plus the data spec the researcher's model was
built for. The coordinator refuses a job before anything starts when any value is of the
wrong type or out of range, with one error that lists every bad key (``JobConfig.from_json``);
integers are never read from ``true``/``false``, numbers must be finite, and every value has
an upper bound, so a job cannot ask the sites for 10**9 epochs or a batch of 10**18 records.

Jobs stored before the run specification was shared (flat ``strategy``, ``fraction``,
``min_sites``, ``evaluate_every``, ``strategy_options``) are read in their new shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from medfed.config import RunConfig, check_run, config_from_dict
from medfed.data.base import TaskKind
from medfed.errors import ConfigError
from medfed.privacy.config import PrivacyConfig

__all__ = ["MAX_INPUT_VALUES", "JobConfig", "job_problems"]

MAX_INPUT_VALUES = 1 << 26  # values in one input record (an image of 4096 x 4096 x 4)
_MAX_NAME = 200
# settings of a run that a job does not use: where a simulation writes, and runs its sites
_LOCAL_ONLY = ("out", "backend")

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


def _sha256(v: Any) -> str | None:
    if not isinstance(v, str) or len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        return "must be a sha256 (64 lowercase hex characters)"
    return None


def _shape(v: Any) -> str | None:
    if (
        not isinstance(v, list)
        or not 1 <= len(v) <= 4
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in v)
    ):
        return (
            "must be a list of 1 to 4 positive integers (features, channels x H x W, or "
            "channels x D x H x W)"
        )
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


_DATA_SPEC: dict[str, Check] = {
    "kind": _choice(*(k.value for k in TaskKind)),
    "input_shape": _shape,
    "n_classes": _integer(2, 10_000),
    "data": _text,
    "feature_names": _names,
    # a regression target's consortium-wide center and spread (medfed.data.base.DataSpec)
    "target_center": _number(-1e15, 1e15),
    "target_scale": _number(0, 1e15, open_lo=True),
    # a job on data under a contract: its title and the sha256 every site's copy must have
    "contract": _text,
    "contract_sha256": _sha256,
}


def _spec_problems(spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        return ["data_spec must be an object (a table)"]
    problems = []
    for key, value in spec.items():
        check = _DATA_SPEC.get(key) if isinstance(key, str) else None
        if check is None:
            problems.append(f"data_spec.{key}: unknown setting (known: {', '.join(_DATA_SPEC)})")
        elif (why := check(value)) is not None:
            problems.append(f"data_spec.{key} {why}, got {_short(value)}")
    if spec and not {"kind", "input_shape"} <= set(spec):
        problems.append("data_spec needs kind and input_shape")
    return problems


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


_LEGACY = ("fraction", "min_sites", "strategy_options", "evaluate_every")


def _from_legacy(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A job configuration stored in the flat shape of earlier medfed versions, in today's shape."""
    if not (isinstance(raw.get("strategy"), str) or any(k in raw for k in _LEGACY)):
        return dict(raw)
    out = {k: v for k, v in raw.items() if k not in (*_LEGACY, "strategy")}
    strategy = {
        "name": raw.get("strategy", "fedavg"),
        "fraction": raw.get("fraction", 1.0),
        "min_sites": raw.get("min_sites", 1),
        "options": raw.get("strategy_options", {}),
    }
    out["strategy"] = strategy
    if "evaluate_every" in raw:
        out["evaluation"] = {"every": raw["evaluate_every"]}
    privacy = raw.get("privacy")
    if isinstance(privacy, dict):
        # then, an empty or partial table meant no secure aggregation unless it said so
        if privacy:
            out["privacy"] = {"secure_aggregation": False, **privacy}
        else:
            del out["privacy"]
    if raw.get("bounds") == {}:
        del out["bounds"]
    return out


def job_problems(raw: Mapping[str, Any]) -> list[str]:
    """Every problem with a job configuration, one line each (empty when it is valid)."""
    try:
        JobConfig.from_json(raw)
    except ConfigError as exc:
        return [str(exc)]
    return []


@dataclass(frozen=True)
class JobConfig:
    """What a researcher asks for: the run (resolved for a federation) and its data spec."""

    run: RunConfig = field(default_factory=RunConfig)
    data_spec: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = _spec_problems(self.data_spec)
        shape = self.data_spec.get("input_shape")
        if self.run.data.harmonise != "none" and isinstance(shape, list) and len(shape) != 1:
            problems.append(
                f"data.harmonise is for tables of features; this job's input is {shape} "
                '(images): set it to "none"'
            )
        try:
            run = check_run(self.run, "federation")
        except ConfigError as exc:
            problems.append(str(exc))
        if problems:
            raise ConfigError(_sentence(problems))
        object.__setattr__(self, "run", run)

    @property
    def rounds(self) -> int:
        return self.run.rounds

    @property
    def min_sites(self) -> int:
        return self.run.strategy.min_sites

    def privacy_config(self) -> PrivacyConfig:
        """The job's privacy settings (no protection unless a [privacy] table asked)."""
        return self.run.privacy

    def to_json(self) -> dict[str, Any]:
        """The stored and announced form: the resolved run's settings and the data spec."""
        out = {k: v for k, v in self.run.to_dict().items() if k not in _LOCAL_ONLY}
        return {**out, "data_spec": self.data_spec}

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> JobConfig:
        """A job configuration from its JSON; one ConfigError listing every bad key."""
        if not isinstance(raw, Mapping):
            raise ConfigError("a job configuration must be a JSON object")
        data = _from_legacy(raw)
        spec = data.pop("data_spec", {})
        problems = _spec_problems(spec)
        run = None
        try:
            run = config_from_dict(data)
        except ConfigError as exc:
            problems.append(str(exc))
        if run is None or problems:
            raise ConfigError(_sentence(problems))
        return JobConfig(run=run, data_spec=spec)


def _sentence(problems: list[str]) -> str:
    text = "; ".join(p.removeprefix("the run has ") for p in problems)
    return f"the job configuration is refused: {text} (fix it and submit again)"
