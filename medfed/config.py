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

The same file describes a simulation (``medfed simulate --config``) and a job in a real
federation (``medfed job submit --config``): the modes differ only in where the sites run and
where the rounds are stored. A few settings have a default that depends on the mode, resolved
by :meth:`RunConfig.resolved`: ``round_timeout`` (no limit in a simulation, 600 s in a
federation) and ``[bounds]`` (none for a simulation's own sites, the federation defaults
otherwise). :func:`config_from_dict` reports every bad key of a file at once, and
:func:`run_problems` checks the settings that depend on one another, in one place.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import tomli_w

from medfed.errors import ConfigError
from medfed.messages import MAX_FINETUNE_EPOCHS, PersonalSettings
from medfed.privacy.config import PrivacyConfig

if TYPE_CHECKING:
    from medfed.strategies.base import Strategy

__all__ = [
    "DEFAULT_ROUND_TIMEOUT",
    "HARMONISE_METHODS",
    "BackendConfig",
    "DataConfig",
    "EvaluationConfig",
    "RunConfig",
    "RunMode",
    "StrategyConfig",
    "TrainSettings",
    "UpdateBounds",
    "check_run",
    "config_from_dict",
    "load_config",
    "run_problems",
    "save_config",
]

Scalar = bool | int | float | str
Optimizer = Literal["sgd", "adam"]
BackendKind = Literal["inprocess", "process"]
RunMode = Literal["simulation", "federation"]


MAX_LOCAL_EPOCHS = 1000
MAX_BATCH_SIZE = 1 << 20
MAX_EXAMPLES = 10**12  # the most examples a site may claim in one update
MAX_TEXT = 4096  # characters of one text setting (a name, a path, a task reference)
MAX_OPTIONS = 100  # settings in one options table
MAX_NUMBER = 1e15  # the largest magnitude of any number setting
DEFAULT_ROUND_TIMEOUT = 600.0  # seconds a federation's round waits for its sites
HARMONISE_METHODS = ("none", "standardise", "combat")  # [data] harmonise (see DataConfig)


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
    """Which data each simulated site holds, and how the sites harmonise their features.

    ``harmonise``: ``"none"`` (each data set as its loader prepared it), ``"standardise"``
    (every site standardises with the federation's mean and sd of each feature, learnt by one
    statistics exchange before training, and fills a missing value with the federation's
    mean) or ``"combat"`` (that, then each site's own location and scale per feature removed
    with empirical-Bayes shrinkage); see :mod:`medfed.orchestration.harmonise`.
    """

    name: str = "breast-cancer"
    sites: int | None = None
    dir: str | None = None
    options: dict[str, Scalar] = field(default_factory=dict)
    harmonise: str = "none"

    def __post_init__(self) -> None:
        _check(bool(self.name), "data.name must name a data set (see `medfed data list`)")
        _check(
            self.harmonise in HARMONISE_METHODS,
            f"data.harmonise must be one of {', '.join(HARMONISE_METHODS)}, not {self.harmonise!r}",
        )
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
    """Federated evaluation every ``every`` rounds; optional local-only and pooled baselines;
    ``quality``: a simulation of tabular data first writes the data-quality report across
    sites (``quality.json``, a section of ``summary.md``; see ``medfed data quality``)."""

    every: int = 1
    baselines: bool = False
    quality: bool = True

    def __post_init__(self) -> None:
        _check(self.every >= 0, "evaluation.every must be 0 (final round only) or more")


PERSONALISE_METHODS = ("none", "finetune", "fedper")
DEFAULT_PERSONALISE = "finetune"
"""What ``--personalise`` alone selects (chosen by benchmarks/personalise.py on validation
splits; see benchmarks/RESULTS.md)."""


@dataclass(frozen=True)
class PersonaliseConfig:
    """Each site's own model, evaluated on its own held-out patients after the last round
    (summary.json's ``personalised_per_site``): ``"finetune"`` — local fine-tuning of the
    federated model, up to ``max_epochs`` epochs, as many as a validation split of
    ``validation_fraction`` of the site's training records favours; ``"fedper"`` — the model's
    last layer stays at each site from round 1 (a shared body, a local head)."""

    method: str = "none"
    max_epochs: int = 5
    validation_fraction: float = 0.2

    def __post_init__(self) -> None:
        _check(
            self.method in PERSONALISE_METHODS,
            f"personalise.method must be one of {', '.join(PERSONALISE_METHODS)}",
        )
        _check(
            0 <= self.max_epochs <= MAX_FINETUNE_EPOCHS,
            f"personalise.max_epochs must be between 0 and {MAX_FINETUNE_EPOCHS}",
        )
        _check(
            0.05 <= self.validation_fraction <= 0.5,
            "personalise.validation_fraction must be between 0.05 and 0.5",
        )

    def settings(self) -> PersonalSettings | None:
        """What the sites are sent (None: no personalisation)."""
        if self.method == "none":
            return None
        if self.method == "fedper":
            return PersonalSettings(layers=("head",), validation_fraction=self.validation_fraction)
        return PersonalSettings(
            finetune_epochs=self.max_epochs, validation_fraction=self.validation_fraction
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run: a simulation, or a job in a real federation."""

    rounds: int = 10
    seed: int = 0
    task: str | None = None
    out: str | None = None
    # seconds a round waits for its sites; None: the mode's default (see resolved())
    round_timeout: float | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    personalise: PersonaliseConfig = field(default_factory=PersonaliseConfig)
    # how far one site's update may stand out; None: the mode's default (see resolved()).
    # A simulation's sites are the user's own: no bounds unless a [bounds] table asks (an
    # empty table gives a federation's defaults, which hold a round's updates in memory)
    bounds: UpdateBounds | None = None
    # no protection unless asked; a [privacy] table in a run file turns secure aggregation on
    privacy: PrivacyConfig = field(default_factory=lambda: PrivacyConfig(secure_aggregation=False))

    def __post_init__(self) -> None:
        _check(1 <= self.rounds <= 100_000, "rounds must be between 1 and 100000")
        _check(0 <= self.seed < 2**63, "seed must be a non-negative integer below 2**63")
        _check(
            self.round_timeout is None or 1 <= self.round_timeout <= 7 * 24 * 3600,
            "round_timeout must be between 1 and 604800 seconds",
        )

    def resolved(self, mode: RunMode) -> RunConfig:
        """This run with the mode's defaults filled in (what a run folder or a job keeps)."""
        federation = mode == "federation"
        bounds = self.bounds
        if bounds is None:
            bounds = UpdateBounds() if federation else UpdateBounds.none()
        timeout = self.round_timeout
        if timeout is None and federation:
            timeout = DEFAULT_ROUND_TIMEOUT
        return replace(self, bounds=bounds, round_timeout=timeout)

    @property
    def update_bounds(self) -> UpdateBounds:
        """The bounds of a resolved run (a simulation's default when unresolved)."""
        return self.bounds if self.bounds is not None else UpdateBounds.none()

    def make_strategy(self) -> Strategy:
        """The strategy this run names, with its options (ConfigError for a bad one)."""
        from medfed.strategies import make_strategy

        s = self.strategy
        return make_strategy(s.name, fraction=s.fraction, min_sites=s.min_sites, options=s.options)

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
            current = getattr(self, section)
            if current is None:  # bounds left to the mode's default
                current = _SECTIONS[section]()
            top[section] = _build(type(current), values, section, current)
        return replace(self, **top)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _drop_none(asdict(self))
        return out


def run_problems(config: RunConfig, mode: RunMode) -> list[str]:
    """The problems of settings that depend on one another (empty when there are none).

    The one place where a run's strategy, privacy and participation are checked together,
    for a simulation and a federation alike; what needs the data (enough sites for
    ``min_sites``) is checked once the data set is known.
    """
    from medfed.strategies import check_privacy, check_secure_aggregation

    problems: list[str] = []
    privacy = config.privacy
    try:
        strategy = config.make_strategy()
        if privacy.secure_aggregation:
            check_secure_aggregation(strategy)
        if privacy.dp != "none":
            check_privacy(strategy)
    except ConfigError as exc:
        problems.append(str(exc))
    if config.data.harmonise != "none" and privacy.dp != "none":
        problems.append(
            "data.harmonise with DP: the federation's means and sds that harmonisation "
            'learns are not covered by the run\'s ε; set data.harmonise = "none" (and '
            "standardise with fixed constants) or drop DP"
        )
    if config.personalise.method == "finetune" and privacy.dp != "none":
        problems.append(
            "personalise.method = 'finetune' with DP: the fine-tuned models are not covered "
            "by the run's ε; use personalise.method = 'fedper' or 'none', or drop DP"
        )
    if mode == "federation":
        if privacy.adaptive_clip and privacy.clip_count_stddev is None:
            problems.append(
                "adaptive clipping in a federation needs privacy.clip_count_stddev (the sites "
                "do not know how many take part in a round)"
            )
        if privacy.secure_aggregation and config.strategy.min_sites < 2:
            problems.append("secure aggregation needs strategy.min_sites of at least 2")
    return problems


def check_run(config: RunConfig, mode: RunMode) -> RunConfig:
    """``config`` resolved for ``mode``; one ConfigError naming every problem otherwise."""
    problems = run_problems(config, mode)
    if problems:
        raise ConfigError(_sentence(problems))
    return config.resolved(mode)


def _sentence(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"the run has {len(problems)} problems: " + "; ".join(problems)


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
    "personalise": PersonaliseConfig,
    "bounds": UpdateBounds,
    "privacy": PrivacyConfig,
}


def _number_ok(value: int | float) -> bool:
    try:
        return math.isfinite(value) and abs(value) <= MAX_NUMBER
    except OverflowError:  # an integer such as 10**400 (JSON has no limit)
        return False


def _coerce(value: Any, annotation: str, where: str) -> Any:
    """Check a TOML or JSON value against a dataclass field's annotation (given as a string).

    Integers are never read from true/false, numbers must be finite and at most 1e15 in
    magnitude, text is at most 4096 characters without NUL, option tables hold at most 100
    plain values: a value from the network cannot make a setting unbounded.
    """
    allowed = annotation.replace(" ", "").split("|")
    if value is None and "None" in allowed:
        return None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and not _number_ok(value) and ("int" in allowed or "float" in allowed):
        raise ConfigError(f"{where} must be a finite number, got {_short(value)}")
    if "int" in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if "float" in allowed and is_number:
        return float(value)
    if "bool" in allowed and isinstance(value, bool):
        return value
    textual = "str" in allowed or annotation in ("Optimizer", "BackendKind")
    if textual and isinstance(value, str):
        if len(value) > MAX_TEXT or "\x00" in value:
            raise ConfigError(f"{where} must be text of at most {MAX_TEXT} characters")
        return value
    if annotation.startswith("dict[") and isinstance(value, dict):
        if len(value) > MAX_OPTIONS:
            raise ConfigError(f"{where} must hold at most {MAX_OPTIONS} settings")
        for k, v in value.items():
            plain = isinstance(v, bool | int | float | str)
            if not isinstance(k, str) or len(k) > 200 or not plain:
                raise ConfigError(f"{where}.{k} must be a number, a string or true/false")
            _coerce(v, "bool | int | float | str", f"{where}.{k}")
        return dict(value)
    expected = " or ".join(a for a in allowed if a != "None")
    raise ConfigError(f"{where} must be {expected}, got {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _build(cls: type[T], values: Mapping[str, Any], where: str, base: T | None = None) -> T:
    """One section from its table; one ConfigError naming every bad key of it."""
    built, problems = _parse(cls, values, where, base)
    if built is None:
        raise ConfigError(_sentence(problems))
    return built


def _parse(
    cls: type[T], values: Mapping[str, Any], where: str, base: T | None = None
) -> tuple[T | None, list[str]]:
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in values.items():
        name = f"{where}.{key}".lstrip(".")
        if key not in known:
            hint = difflib.get_close_matches(str(key), list(known), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems.append(f"unknown setting {name}{suggestion}")
            continue
        try:
            kwargs[key] = _coerce(value, str(known[key].type), name)
        except ConfigError as exc:
            problems.append(str(exc))
    try:  # the values of the right type, also checked against their ranges
        built = replace(base, **kwargs) if base is not None else cls(**kwargs)  # type: ignore[type-var]
    except ConfigError as exc:
        return None, [*problems, str(exc)]
    return (None, problems) if problems else (built, [])


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a parsed TOML (or JSON) document into a :class:`RunConfig`.

    Every bad key of every section is named in one :class:`ConfigError`; within a section,
    the first value out of its range.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("a run configuration must be a table of settings")
    top: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                problems.append(f"[{key}] must be a table")
                continue
            sections[key], found = _parse(_SECTIONS[key], value, key)
            problems += found
        else:
            top[key] = value
    checked, found = _parse(RunConfig, top, "")
    problems = found + problems
    if checked is None or problems:
        raise ConfigError(_sentence(problems))
    return replace(checked, **sections)


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
